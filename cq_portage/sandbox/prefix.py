"""Gentoo prefix folders on any Linux machine, run by the real Portage of this Python.

A `Sandbox` holds one generated repository and one PKGDIR shared by all its prefixes (the
build host's and the clients'), like an NFS-shared PKGDIR at a site:

    sandbox = Sandbox(Path("/tmp/sb")).create()
    sandbox.repository.add(Ebuild("app-misc/hello-1.0", iuse=("ssl",)))
    build = sandbox.add_prefix("build")
    web1 = sandbox.add_prefix("web1")
    build.emerge("--buildpkgonly", "--oneshot", "=app-misc/hello-1.0", env={"USE": "ssl"})
    web1.emerge("--usepkgonly", "--oneshot", "--binpkg-respect-use=y", "app-misc/hello",
                env={"USE": "ssl"})
    web1.write_world("app-misc/hello")
    web1.run(sys.executable, "-m", "cq_portage.emerge.cli", "--config", str(config_file),
             "-p", "--group", "web")            # or any command: sh install.sh, portageq
    web1.installed()["app-misc/hello-1.0"].use  # frozenset({"ssl"})

Portage finds a prefix through PORTAGE_OVERRIDE_EPREFIX, which `Prefix.env()` sets (with
NOCOLOR=true, so output parses; pass NOCOLOR="" for colours); nothing here imports portage,
so one process can drive any number of prefixes. `write_vdb_entry` records a package as
installed without merging it, for fixtures too large to merge with emerge.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cq_portage.sandbox.repository import Repository

log = logging.getLogger(__name__)

# What was seen to work for an unprivileged-looking build as root on a non-Gentoo host.
FEATURES = ("-sandbox -usersandbox -userpriv -usersync -userfetch -ipc-sandbox -network-sandbox"
            " -pid-sandbox -mount-sandbox binpkg-multi-instance -news -preserve-libs"
            " -merge-wait -ebuild-locks")

# Inherited variables that would point Portage somewhere else than the prefix.
_PORTAGE_ENV = ("ROOT", "PORTAGE_CONFIGROOT", "SYSROOT", "EPREFIX", "PORTAGE_OVERRIDE_EPREFIX",
                "PKGDIR", "PORTDIR", "DISTDIR", "PORTAGE_TMPDIR", "USE", "ABI_X86", "FEATURES",
                "EMERGE_DEFAULT_OPTS", "PORTAGE_BINHOST", "MAKEOPTS")


def portage_config_dir() -> Path:
    """Portage's own config folder (make.globals, sets) of the Portage this Python runs."""
    for candidate in (Path(sys.prefix) / "share/portage/config",
                      Path("/usr/share/portage/config")):
        if (candidate / "make.globals").is_file():
            return candidate
    raise FileNotFoundError("Portage's config (share/portage/config/make.globals) not found: "
                            "pip install portage")


def tool(name: str) -> str:
    """A Portage program (emerge, ebuild) next to this Python, else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    found = shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} not found: pip install portage")
    return found


@dataclass(frozen=True)
class InstalledPackage:
    """One package of a prefix's var/db/pkg; `use` is its enabled USE within IUSE."""

    cpv: str
    slot: str
    use: frozenset[str]
    build_id: str = ""
    rdepend: str = ""  # as recorded: built slot-operator deps read "cat/pkg:SLOT/SUB="


@dataclass
class Prefix:
    """One Gentoo prefix: etc/portage, var/db/pkg, its own tmp, the sandbox's PKGDIR."""

    name: str
    path: Path
    repository: Repository
    pkgdir: Path
    make_conf: dict[str, str] = field(default_factory=dict)

    @property
    def config_dir(self) -> Path:
        return self.path / "etc/portage"

    def create(self) -> "Prefix":
        config = portage_config_dir()
        for share in ("share/portage/config", "usr/share/portage/config"):
            target = self.path / share
            if not target.exists():
                shutil.copytree(config, target)
            # Portage's default repos.conf names ::gentoo; this prefix has only ours.
            (target / "repos.conf").write_text(self._repos_conf())
        for folder in ("etc/portage/repos.conf", "var/db/pkg", "var/lib/portage", "var/tmp",
                       "var/cache/distfiles", "var/log", "tmp"):
            (self.path / folder).mkdir(parents=True, exist_ok=True)
        (self.config_dir / "repos.conf" / "sandbox.conf").write_text(self._repos_conf())
        profile = self.config_dir / "make.profile"
        if profile.is_symlink() or profile.exists():
            profile.unlink()
        profile.symlink_to(self.repository.profile_path)
        world = self.path / "var/lib/portage/world"
        if not world.exists():
            world.write_text("")
        self.write_make_conf()
        return self

    def _repos_conf(self) -> str:
        return (f"[DEFAULT]\nmain-repo = {self.repository.name}\n\n"
                f"[{self.repository.name}]\nlocation = {self.repository.path}\n"
                "auto-sync = no\n")

    def write_make_conf(self, **extra: str) -> None:
        """(Re)write make.conf: the sandbox's fixed settings plus `make_conf` and `extra`."""
        self.make_conf.update(extra)
        values = {
            "FEATURES": FEATURES,
            "PKGDIR": str(self.pkgdir),
            "PORTAGE_TMPDIR": str(self.path / "var/tmp"),
            "DISTDIR": str(self.path / "var/cache/distfiles"),
            "PORT_LOGDIR": str(self.path / "var/log"),
            "ACCEPT_LICENSE": "*",
            "BINPKG_FORMAT": "gpkg",
            "BINPKG_COMPRESS": "zstd" if shutil.which("zstd") else "bzip2",
            "PORTAGE_USERNAME": "root",
            "PORTAGE_GRPNAME": "root",
            "CLEAN_DELAY": "0",
            "EMERGE_WARNING_DELAY": "0",
            **self.make_conf,
        }
        (self.config_dir / "make.conf").write_text(
            "# Generated by cq_portage.sandbox.prefix\n"
            + "".join(f'{k}="{v}"\n' for k, v in values.items()))

    def write_world(self, *atoms: str) -> None:
        (self.path / "var/lib/portage/world").write_text("".join(f"{a}\n" for a in atoms))

    def env(self, **extra: str) -> dict[str, str]:
        """The environment that points Portage (emerge, portageq, cq-emerge) at this prefix."""
        env = {k: v for k, v in os.environ.items() if k not in _PORTAGE_ENV}
        env["PORTAGE_OVERRIDE_EPREFIX"] = str(self.path)
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent),
                                       env.get("PATH", "/usr/bin:/bin")])
        env["NOCOLOR"] = "true"
        # `python -m cq_portage.emerge.cli` must find this cq_portage even when not installed.
        source = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (source, env.get("PYTHONPATH")) if p)
        env.update(extra)
        return env

    def emerge(self, *args: str, env: dict[str, str] | None = None, check: bool = True,
               timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """Run real emerge in this prefix; `env` adds variables (USE=..., ABI_X86=...)."""
        log.debug("%s: emerge %s", self.name, " ".join(args))
        return self.run(tool("emerge"), "--color=n", "--nospinner", *args, env=env,
                        check=check, timeout=timeout)

    def run(self, *argv: str, env: dict[str, str] | None = None, check: bool = True,
            timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """Any command (cq-emerge, an install script, portageq) against this prefix."""
        done = subprocess.run(argv, env=self.env(**(env or {})), cwd=self.path, text=True,
                              capture_output=True, timeout=timeout)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed in prefix {self.name} "
                               f"(exit {done.returncode}):\n{done.stdout}\n{done.stderr}")
        return done

    def installed(self) -> dict[str, InstalledPackage]:
        """var/db/pkg read as plain files, cpv -> package."""
        found: dict[str, InstalledPackage] = {}
        vdb = self.path / "var/db/pkg"
        for folder in sorted(vdb.glob("*/*")):
            if not (folder / "SLOT").is_file():
                continue
            cpv = f"{folder.parent.name}/{folder.name}"
            found[cpv] = InstalledPackage(
                cpv=cpv, slot=_read(folder / "SLOT").split("/")[0],
                use=enabled_use(_read(folder / "USE"), _read(folder / "IUSE")),
                build_id=_read(folder / "BUILD_ID"), rdepend=_read(folder / "RDEPEND"))
        return found

    def built_against(self, cpv: str) -> dict[str, str]:
        """What an installed sandbox package saw when it was built (Ebuild.records):
        "-d ATOM" (DEPEND, in the sysroot) and "-b ATOM" (BDEPEND) -> cpv, or "none"."""
        text = (self.path / "usr/share/cqtest" / cpv.split("/", 1)[1]).read_text()
        return {" ".join(line.split()[:2]): line.split()[2]
                for line in text.splitlines()[1:] if line.startswith("-")}


def enabled_use(use: str, iuse: str) -> frozenset[str]:
    """Enabled flags of a USE string, limited to IUSE (defaults "+x" stripped)."""
    names = {flag.lstrip("+-") for flag in iuse.split()}
    return frozenset(flag for flag in use.split() if flag in names)


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return ""


@dataclass
class Sandbox:
    """A folder with one repository, one shared PKGDIR and any number of prefixes."""

    root: Path
    repo_name: str = "cqtest"
    prefixes: dict[str, Prefix] = field(default_factory=dict)
    repository: Repository = field(init=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root).resolve()
        self.repository = Repository(self.root / "repo", name=self.repo_name)

    @property
    def pkgdir(self) -> Path:
        return self.root / "packages"

    def create(self) -> "Sandbox":
        self.root.mkdir(parents=True, exist_ok=True)
        self.pkgdir.mkdir(exist_ok=True)
        self.repository.create()
        return self

    def add_prefix(self, name: str, pkgdir: Path | None = None, **make_conf: str) -> Prefix:
        """A prefix sharing the sandbox's PKGDIR (NFS-like), or with a `pkgdir` of its own
        (a client of an HTTP binhost, see binhost.py)."""
        if pkgdir is not None:
            Path(pkgdir).mkdir(parents=True, exist_ok=True)
        prefix = Prefix(name=name, path=self.root / "prefixes" / name,
                        repository=self.repository, pkgdir=Path(pkgdir or self.pkgdir),
                        make_conf=dict(make_conf)).create()
        self.prefixes[name] = prefix
        return prefix

    def binary_instances(self) -> list[InstalledPackage]:
        """Every binary package instance in the shared PKGDIR, read from Portage's index."""
        index = self.pkgdir / "Packages"
        if not index.is_file():
            return []
        instances = []
        for stanza in index.read_text().split("\n\n")[1:]:
            fields = dict(line.split(": ", 1) for line in stanza.splitlines() if ": " in line)
            if "CPV" in fields:
                instances.append(InstalledPackage(
                    cpv=fields["CPV"], slot=fields.get("SLOT", "0").split("/")[0],
                    use=enabled_use(fields.get("USE", ""), fields.get("IUSE", "")),
                    build_id=fields.get("BUILD_ID", ""), rdepend=fields.get("RDEPEND", "")))
        return instances


def write_vdb_entry(prefix: Prefix, ebuild, use: Iterable[str], counter: int) -> None:
    """Record `ebuild` as installed in var/db/pkg without merging files, the way a merge
    records it (metadata files, empty CONTENTS). For large fixtures such as the benchmark,
    where merging hundreds of packages with real emerge would take most of the run; Portage
    reads these entries exactly as it reads merged ones."""
    folder = prefix.path / "var/db/pkg" / ebuild.category / ebuild.pf
    folder.mkdir(parents=True, exist_ok=True)
    values = {
        "CATEGORY": ebuild.category, "PF": ebuild.pf, "SLOT": ebuild.slot, "EAPI": ebuild.eapi,
        "IUSE": " ".join(ebuild.iuse), "USE": " ".join(sorted(use)),
        "KEYWORDS": ebuild.keywords, "LICENSE": "MIT", "DEFINED_PHASES": "install",
        "DEPEND": ebuild.depend, "RDEPEND": ebuild.rdepend, "repository": prefix.repository.name,
        "COUNTER": str(counter), "CHOST": "x86_64-pc-linux-gnu", "BUILD_TIME": "1700000000",
        "SIZE": "0", "CONTENTS": "",
    }
    for name, value in values.items():
        (folder / name).write_text(value + "\n" if value else "")
    (folder / f"{ebuild.pf}.ebuild").write_text(ebuild.text())
