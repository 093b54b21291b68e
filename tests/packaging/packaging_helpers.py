"""Read the overlay's ebuilds the way Portage would see them, without a Gentoo system.

An ebuild is sourced by bash with the eclass functions replaced by stubs that report what
they were asked to do: which files python_install_all installs (and from where), and what
RDEPEND, PYTHON_COMPAT, KEYWORDS... come to once the variables are expanded. A helper the
stubs do not know makes the run fail instead of being skipped over.
"""

from __future__ import annotations

import ast
import configparser
import importlib.util
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
OVERLAY = REPO / "ebuild"
# What ${PYTHON_USEDEP} expands to once distutils-r1 is inherited (two targets is enough to
# give a realistic USE dependency).
PYTHON_USEDEP = "python_targets_python3_12(-)?,python_targets_python3_13(-)?"
SYSTEMD_UNITDIR = "/usr/lib/systemd/system"
WORKDIR = "/var/tmp/portage/work"  # where Portage unpacks the distfiles (${WORKDIR})

_STUBS = r"""
set -f
command_not_found_handle() { echo "UNKNOWN $1"; return 127; }
inherit() { for e; do INHERITED+=" $e"; done
	case " $* " in *" distutils-r1 "*|*" python-r1 "*) PYTHON_USEDEP="$STUB_USEDEP";; esac; }
die() { echo "DIE $*"; exit 1; }
use() { return 1; }
has_version() { return 1; }
elog() { :; }; einfo() { :; }; ewarn() { :; }; eerror() { :; }
optfeature() { :; }
distutils-r1_python_install_all() { :; }
distutils_enable_tests() { echo "ENABLE_TESTS $*"; }
_src() { [[ -f $1 ]] || echo "MISSING $1"; }
_put() { echo "FILE $1 $2 $3"; }
insinto() { _insdir=$1; }
exeinto() { _exedir=$1; }
insopts() { :; }; exeopts() { :; }; diropts() { :; }
doins() { local f; for f; do _src "$f"; _put ins "$_insdir/${f##*/}" "$f"; done; }
newins() { _src "$1"; _put ins "$_insdir/$2" "$1"; }
doexe() { local f; for f; do _src "$f"; _put exe "$_exedir/${f##*/}" "$f"; done; }
newexe() { _src "$1"; _put exe "$_exedir/$2" "$1"; }
doinitd() { local f; for f; do _src "$f"; _put exe "/etc/init.d/${f##*/}" "$f"; done; }
newinitd() { _src "$1"; _put exe "/etc/init.d/$2" "$1"; }
doconfd() { local f; for f; do _src "$f"; _put ins "/etc/conf.d/${f##*/}" "$f"; done; }
newconfd() { _src "$1"; _put ins "/etc/conf.d/$2" "$1"; }
systemd_dounit() { local f; for f; do _src "$f"; _put ins "$STUB_UNITDIR/${f##*/}" "$f"; done; }
systemd_newunit() { _src "$1"; _put ins "$STUB_UNITDIR/$2" "$1"; }
dotmpfiles() { local f; for f; do _src "$f"; _put ins "/usr/lib/tmpfiles.d/${f##*/}" "$f"; done; }
newtmpfiles() { _src "$1"; _put ins "/usr/lib/tmpfiles.d/$2" "$1"; }
dodoc() { local f; for f; do _src "$f"; _put ins "/usr/share/doc/$PF/${f##*/}" "$f"; done; }
keepdir() { local d; for d; do echo "DIR $d"; done; }
dodir() { local d; for d; do echo "DIR $d"; done; }
fperms() { local mode=$1; shift; local p; for p; do echo "PERMS $p $mode"; done; }
fowners() { :; }

source "$STUB_EBUILD" || die "sourcing failed"
echo "EAPI $EAPI"
echo "INHERITED $INHERITED"
for v in DESCRIPTION HOMEPAGE LICENSE SLOT KEYWORDS RESTRICT SRC_URI EGIT_REPO_URI \
		DISTUTILS_USE_PEP517 PYTHON_REQ_USE S; do
	printf 'VAR %s %s\n' "$v" "$(printf '%s' "${!v}" | tr '\n\t' '  ')"
done
printf 'PYTHON_COMPAT %s\n' "${PYTHON_COMPAT[@]}"
printf 'RDEPEND %s\n' $RDEPEND
printf 'TEST %s\n' "${CQ_PORTAGE_TESTS[@]}"
if declare -F python_install_all >/dev/null; then
	python_install_all
fi
echo "END"
"""


@dataclass
class Installed:
    dest: str
    src: str
    executable: bool


@dataclass
class Ebuild:
    path: Path
    category: str
    pn: str
    pv: str
    eapi: str = ""
    inherited: list[str] = field(default_factory=list)
    variables: dict[str, str] = field(default_factory=dict)
    python_compat: list[str] = field(default_factory=list)
    rdepend: list[str] = field(default_factory=list)
    tests: list[str] = field(default_factory=list)  # what python_test runs (epytest paths)
    enable_tests: list[str] = field(default_factory=list)  # distutils_enable_tests' args
    installed: list[Installed] = field(default_factory=list)
    dirs: list[str] = field(default_factory=list)
    perms: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return self.path.read_text(encoding="utf-8")


def ebuilds() -> list[Path]:
    return sorted(OVERLAY.glob("*/*/*.ebuild"))


def split_pv(path: Path) -> tuple[str, str]:
    """cq-portage-0.1.0.ebuild -> ("cq-portage", "0.1.0"), by the package folder's name."""
    pn = path.parent.name
    stem = path.name[: -len(".ebuild")]
    if not stem.startswith(pn + "-"):
        raise ValueError(f"{path}: file name does not start with {pn}-")
    return pn, stem[len(pn) + 1:]


def source_ebuild(path: Path) -> Ebuild:
    """Run the ebuild in bash against the stubs, from the top of the source tree (${S})."""
    pn, pv = split_pv(path)
    ebuild = Ebuild(path, path.parent.parent.name, pn, pv)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C",
           "STUB_EBUILD": str(path), "STUB_USEDEP": PYTHON_USEDEP,
           "STUB_UNITDIR": SYSTEMD_UNITDIR, "CATEGORY": ebuild.category,
           "PN": pn, "PV": pv, "P": f"{pn}-{pv}", "PF": f"{pn}-{pv}", "WORKDIR": WORKDIR}
    done = subprocess.run(["bash", "-c", _STUBS], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=60)
    lines = done.stdout.splitlines()
    if done.returncode != 0 or "END" not in lines:
        ebuild.problems.append(f"exit {done.returncode}: {done.stderr.strip()}")
    if done.stderr.strip():
        ebuild.problems.append(f"stderr: {done.stderr.strip()}")
    for line in lines:
        word, _, rest = line.partition(" ")
        if word == "EAPI":
            ebuild.eapi = rest
        elif word == "INHERITED":
            ebuild.inherited = rest.split()
        elif word == "VAR":
            name, _, value = rest.partition(" ")
            ebuild.variables[name] = " ".join(value.split())
        elif word == "PYTHON_COMPAT" and rest:
            ebuild.python_compat.append(rest)
        elif word == "RDEPEND" and rest:
            ebuild.rdepend.append(rest)
        elif word == "TEST" and rest:
            ebuild.tests.append(rest)
        elif word == "ENABLE_TESTS":
            ebuild.enable_tests = rest.split()
        elif word == "FILE":
            kind, dest, src = rest.split(" ", 2)
            ebuild.installed.append(Installed(dest, src, kind == "exe"))
        elif word == "DIR":
            ebuild.dirs.append(rest)
        elif word == "PERMS":
            target, _, mode = rest.rpartition(" ")
            ebuild.perms[target] = mode
        elif word == "MISSING":
            ebuild.missing.append(rest)
        elif word in ("UNKNOWN", "DIE"):
            ebuild.problems.append(line)
    return ebuild


@dataclass(frozen=True)
class ParsedAtom:
    text: str
    cp: str
    operator: str | None
    version: str | None
    use: tuple[str, ...]


def parse_atoms(atoms: list[str]) -> list[ParsedAtom]:
    """Parse EAPI 8 atoms with Portage itself, in a child process so that this test process
    never imports Portage (the emerge tests need to control when and how it is loaded)."""
    code = (
        "import json, sys\n"
        "from portage.dep import Atom\n"
        "out = []\n"
        "for text in json.load(sys.stdin):\n"
        "    a = Atom(text, eapi='8')\n"
        "    out.append([text, a.cp, a.operator, a.version, list(a.use.tokens if a.use else [])])\n"
        "json.dump(out, sys.stdout)\n")
    # Atom parsing reads no configuration; an empty prefix keeps the host's out of it.
    env = dict(os.environ, PORTAGE_OVERRIDE_EPREFIX="/nonexistent/cq-portage-tests")
    done = subprocess.run([sys.executable, "-c", code], input=json.dumps(atoms), env=env,
                          capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise AssertionError(f"Portage refused an atom: {done.stderr.strip().splitlines()[-1:]}")
    return [ParsedAtom(t, cp, op, ver, tuple(use)) for t, cp, op, ver, use in
            json.loads(done.stdout)]


def setup_py() -> dict:
    """The keyword arguments of setup() in setup.py that are plain literals."""
    tree = ast.parse((REPO / "setup.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "setup":
            values = {}
            for kw in node.keywords:
                try:
                    values[kw.arg] = ast.literal_eval(kw.value)
                except ValueError:
                    pass  # computed (long_description=open(...)): not needed here
            return values
    raise AssertionError("setup.py has no setup(...) call")


def dist_tool():
    """tools/dist.py (make dist, make manifest) as a module."""
    spec = importlib.util.spec_from_file_location("cq_portage_dist", REPO / "tools" / "dist.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def systemd_unit(path: Path) -> configparser.ConfigParser:
    # strict=False: systemd allows a key more than once; no interpolation ($MAINPID, %i).
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str
    cp.read_string(path.read_text())
    return cp


def span(value: str) -> float:
    """A systemd time span as seconds ("30min", "1h", "90s", "600")."""
    assert re.fullmatch(r"(\s*\d+\s*[a-z]*)+\s*", value), f"unexpected time span {value!r}"
    units = {"": 1, "s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600, "hour": 3600}
    parts = re.findall(r"(\d+)\s*([a-z]*)", value)
    unknown = [unit for _, unit in parts if unit not in units]
    assert not unknown, f"time span {value!r}: unit {unknown[0]!r} unknown here (known: " \
                        f"{', '.join(u for u in units if u)})"
    return float(sum(int(n) * units[unit] for n, unit in parts))


def tarball_name() -> str:
    """The release tarball's file name, as `make dist` names it."""
    return dist_tool().tarball_name()
