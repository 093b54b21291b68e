"""The overlay in ebuild/: ebuilds that parse, install files that exist, and depend on what
setup.py asks for."""

from __future__ import annotations

import ast
import re
import subprocess
import xml.etree.ElementTree as ET

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from packaging_helpers import (OVERLAY, PYTHON_USEDEP, REPO, WORKDIR, ebuilds, parse_atoms,
                               setup_py, source_ebuild, tarball_name)

# PyPI name in setup.py -> the package that provides it on Gentoo.
GENTOO_ATOM = {
    "pyzmq": "dev-python/pyzmq",
    "protobuf": "dev-python/protobuf",
    "pymunge": "dev-python/pymunge",
    "pyyaml": "dev-python/pyyaml",
    "python-daemon": "dev-python/python-daemon",
    "paramiko": "dev-python/paramiko",
    "portage": "sys-apps/portage",
}
# setup.py specifier operator -> atom operator with the same meaning.
ATOM_OPERATOR = {">=": ">=", ">": ">", "<": "<", "<=": "<=", "==": "="}
EBUILDS = ebuilds()
MAIN_PACKAGE = OVERLAY / "app-admin" / "cq-portage"


def _id(path) -> str:
    return path.name


@pytest.fixture(scope="module", params=EBUILDS, ids=_id)
def ebuild(request):
    return source_ebuild(request.param)


def test_overlay_has_the_expected_ebuilds():
    names = {p.relative_to(OVERLAY).as_posix() for p in EBUILDS}
    version = setup_py()["version"]
    assert {"app-admin/cq-portage/cq-portage-9999.ebuild",
            f"app-admin/cq-portage/cq-portage-{version}.ebuild",
            "dev-python/pymunge/pymunge-0.1.3.ebuild"} <= names, (
        f"the overlay needs a live ebuild and one for setup.py's version {version}")


def test_overlay_is_a_repository():
    assert (OVERLAY / "profiles" / "repo_name").read_text().strip() == "cq-portage"
    layout = dict(re.findall(r"^\s*([\w-]+)\s*=\s*(.*?)\s*$",
                             (OVERLAY / "metadata" / "layout.conf").read_text(), re.M))
    assert layout.get("masters", "").split() == ["gentoo"]


@pytest.mark.parametrize("path", EBUILDS, ids=_id)
def test_ebuild_is_valid_bash(path):
    done = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_ebuild_sources_cleanly(ebuild):
    """Sourced against stub eclasses, it runs to the end and calls nothing unknown."""
    assert ebuild.problems == []
    assert ebuild.eapi == "8"
    assert ebuild.variables["DESCRIPTION"] and len(ebuild.variables["DESCRIPTION"]) <= 80
    assert ebuild.variables["LICENSE"] and ebuild.variables["SLOT"] == "0"
    assert "distutils-r1" in ebuild.inherited
    assert ebuild.variables["DISTUTILS_USE_PEP517"] == "setuptools"
    assert ebuild.text.startswith("# Copyright ")
    assert "Distributed under the terms of the GNU General Public License v2" in ebuild.text


def test_live_and_release_ebuilds(ebuild):
    if ebuild.pv == "9999":
        assert "git-r3" in ebuild.inherited
        assert ebuild.variables["EGIT_REPO_URI"].startswith("https://")
        assert not ebuild.variables["KEYWORDS"], "a live ebuild has no KEYWORDS"
    else:
        assert "git-r3" not in ebuild.inherited
        assert ebuild.variables["KEYWORDS"].split(), "a release ebuild is keyworded"
        assert ebuild.variables["SRC_URI"] or "pypi" in ebuild.inherited


def test_live_and_release_cq_portage_ebuilds_are_the_same_file():
    """One body for both, switched on ${PV}: a change made to one is made to both."""
    texts = {p.name: p.read_text() for p in MAIN_PACKAGE.glob("*.ebuild")}
    assert len(texts) >= 2
    assert len(set(texts.values())) == 1, f"{sorted(texts)} differ"


def test_python_compat_within_setup_py(ebuild):
    required = setup_py()["python_requires"]
    assert ebuild.python_compat, "PYTHON_COMPAT is empty"
    for impl in ebuild.python_compat:
        m = re.fullmatch(r"python(\d+)_(\d+)", impl)
        assert m, f"unexpected implementation {impl}"
        assert f"{m[1]}.{m[2]}" in SpecifierSet(required), (
            f"{impl} is outside setup.py's python_requires {required}")


def test_every_installed_file_exists_in_the_tree(ebuild):
    assert ebuild.missing == [], f"{ebuild.path.name} installs files the tree lacks"
    for item in ebuild.installed:
        assert (REPO / item.src).is_file()
        assert item.dest.startswith("/")


def test_cq_portage_installs_every_file_under_etc():
    """Everything in etc/ is meant for the admin's /etc: the ebuilds must ship all of it
    (the init script, unit, logrotate, example configs, cron file, postsync hook...)."""
    in_tree = {p.relative_to(REPO).as_posix() for p in (REPO / "etc").rglob("*")
               if p.is_file()}
    for path in MAIN_PACKAGE.glob("*.ebuild"):
        installed = {i.src for i in source_ebuild(path).installed}
        assert in_tree - installed == set(), (
            f"{path.name} does not install {sorted(in_tree - installed)}: add them to "
            "python_install_all in both app-admin/cq-portage ebuilds")


def test_cq_portage_install_layout():
    ebuild = source_ebuild(MAIN_PACKAGE / "cq-portage-9999.ebuild")
    dest = {i.dest: i for i in ebuild.installed}
    assert dest["/etc/init.d/cq-server"].src == "etc/init.d/cq-server"
    assert dest["/etc/conf.d/cq-server"].src == "etc/conf.d/cq-server"
    assert dest["/usr/lib/systemd/system/cq-server.service"].src == \
        "etc/systemd/cq-server.service"
    assert dest["/etc/logrotate.d/cq-server"].src == "etc/logrotate.d/cq-server"
    assert dest["/etc/cq/cq-server.yaml"].src == "etc/cq/cq-server.yaml"
    assert dest["/etc/cq-portage/cq-portage.yaml"].src == "etc/cq-portage/cq-portage.yaml"
    assert dest["/etc/cron.d/cq-portage"].src == "etc/cron.d/cq-portage"
    hook = dest["/etc/portage/postsync.d/cq-portage"]
    assert hook.executable, "Portage runs only executable postsync hooks"
    assert {"/var/lib/cq", "/var/log/cq"} <= set(ebuild.dirs)


def cron_lines() -> list[str]:
    return (REPO / "etc" / "cron.d" / "cq-portage").read_text().splitlines()


def test_cron_jobs_are_shipped_off_and_one_uncommenting_turns_one_on():
    """Installing the package starts nothing: the job lines are commented out, and removing
    a '#' is the one step that enables one (a deleted CONFIG_PROTECTed file would come back
    on the next merge): the clients' update, or the build host's early sync."""
    ebuild = source_ebuild(MAIN_PACKAGE / "cq-portage-9999.ebuild")
    executables = {i.dest for i in ebuild.installed if i.executable}
    lines = cron_lines()
    active = [line for line in lines if line.strip() and not line.startswith("#") and
              not re.match(r"^\w+=", line)]
    assert active == [], f"the cron file runs something as installed: {active}"
    jobs = [line[1:].split() for line in lines if re.match(r"^#[\d*]", line)]
    assert len(jobs) == 2, "one commented-out job line for the clients, one for the build host"
    for fields in jobs:  # minute hour day month weekday user command...
        assert len(fields) >= 7 and fields[5] == "root", fields
        assert fields[6] in executables, f"{fields[6]} is not installed by the ebuild"
    client, build = sorted(jobs, key=len)
    assert build[7:] == ["--sync-only"] and client[7:] == []
    minutes = [int(job[1]) * 60 + int(job[0]) for job in (build, client)]
    assert minutes[1] - minutes[0] >= 30, "the build host syncs half an hour before clients"


def test_release_ebuilds_have_a_manifest_line_for_every_distfile():
    """With thin manifests a release ebuild still needs a DIST line per distfile, or emerge
    stops at the digest check (`make manifest` writes it)."""
    checked = 0
    for path in EBUILDS:
        ebuild = source_ebuild(path)
        if ebuild.pv == "9999":
            continue
        words = ebuild.variables["SRC_URI"].split()
        # "URI -> NAME" renames the distfile; otherwise it is the URI's last part.
        distfiles = [words[i + 2] if words[i + 1:i + 2] == ["->"] else w.rsplit("/", 1)[-1]
                     for i, w in enumerate(words) if "://" in w]
        if not words and "pypi" in ebuild.inherited:  # pypi.eclass: the PyPI sdist
            distfiles = [f"{ebuild.pn.lower().replace('-', '_')}-{ebuild.pv}.tar.gz"]
        assert distfiles, f"{path.name} is a release ebuild without distfiles"
        manifest = path.parent / "Manifest"
        assert manifest.is_file(), f"{path.parent.name} has no Manifest"
        lines = manifest.read_text().splitlines()
        for name in distfiles:
            assert any(re.fullmatch(rf"DIST {re.escape(name)} \d+ BLAKE2B [0-9a-f]{{128}} "
                                    r"SHA512 [0-9a-f]{128}", line) for line in lines), (
                f"{manifest.relative_to(REPO)} has no DIST line for {name}")
            checked += 1
    assert checked >= 2, "cq-portage's and pymunge's release distfiles"


def test_release_ebuild_unpacks_where_the_tarball_puts_its_files():
    ebuild = source_ebuild(MAIN_PACKAGE / f"cq-portage-{setup_py()['version']}.ebuild")
    assert ebuild.variables["SRC_URI"].endswith(f"/{tarball_name()}")
    assert ebuild.variables["S"] == f"{WORKDIR}/{tarball_name().removesuffix('.tar.gz')}"


def test_python_has_sqlite():
    """cq-server's job store imports sqlite3, which dev-lang/python can be built without."""
    assert re.search(r"^import sqlite3$", (REPO / "cq_portage/cq/store.py").read_text(), re.M)
    for path in MAIN_PACKAGE.glob("*.ebuild"):
        assert "sqlite" in source_ebuild(path).variables["PYTHON_REQ_USE"].split(",")


# What starts munged, sshd, cq-server or a Portage prefix (tests/conftest.py's fixtures,
# cq_portage.sandbox): none of that works in the ebuild's build sandbox.
SANDBOX_FIXTURES = {"munged", "public_munged", "make_server", "server", "world", "site",
                    "sshd", "sshds", "own_sshd", "fleet"}
SANDBOX_CALLS = {"Munged", "CqServer", "Sandbox", "Prefix", "Sshd", "make_site"}


def sandbox_needs(path) -> set[str]:
    """The sandbox fixtures a test module's tests ask for (through its own fixtures too)
    and the sandbox parts it starts itself."""
    tree = ast.parse(path.read_text())
    functions = {node.name: {a.arg for a in node.args.args}
                 for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}
    needs = {name for node in ast.walk(tree) if isinstance(node, ast.Call)
             for name in [getattr(node.func, "id", getattr(node.func, "attr", None))]
             if name in SANDBOX_CALLS}
    seen: set[str] = set()
    todo = [f for f in functions if f.startswith("test_")]
    while todo:
        name = todo.pop()
        for arg in functions.get(name, set()) - seen:
            seen.add(arg)
            if arg in SANDBOX_FIXTURES:
                needs.add(arg)
            todo.append(arg)
    return needs


def test_ebuild_runs_the_tests_that_need_no_munged_sshd_or_prefix():
    ebuild = source_ebuild(MAIN_PACKAGE / "cq-portage-9999.ebuild")
    assert ebuild.enable_tests == ["pytest"]
    assert "test" not in ebuild.variables["RESTRICT"].split()
    assert len(ebuild.tests) >= 5
    for test in ebuild.tests:
        path = REPO / test
        assert path.is_file(), f"the ebuild runs {test}, which does not exist"
        used = sandbox_needs(path)
        assert not used, f"{test} uses {sorted(used)}: not for the build sandbox"
    setup_requires = setup_py()["extras_require"]["test"]
    deps = " ".join(parse_atom.cp for parse_atom in parse_atoms(
        [w for w in ebuild_test_deps(ebuild) if "/" in w]))
    for requirement in setup_requires:
        name = Requirement(requirement).name
        if name != "pytest":  # distutils_enable_tests pytest brings it
            assert f"dev-python/{name}" in deps, f"test? ( dev-python/{name} ) is missing"


def ebuild_test_deps(ebuild) -> list[str]:
    text = ebuild.text
    block = re.search(r'BDEPEND="\s*test\? \((.*?)\)\s*"', text, re.S)
    assert block, "the ebuild has no BDEPEND=\"test? ( ... )\""
    return [w.replace("[${PYTHON_USEDEP}]", f"[{PYTHON_USEDEP}]") for w in block[1].split()]


def test_dependencies_match_setup_py():
    requirements = [Requirement(r) for r in setup_py()["install_requires"]]
    unknown = [r.name for r in requirements if r.name.lower() not in GENTOO_ATOM]
    assert not unknown, f"add the Gentoo package for {unknown} to GENTOO_ATOM and the ebuilds"
    for path in MAIN_PACKAGE.glob("*.ebuild"):
        atoms = parse_atoms(source_ebuild(path).rdepend)
        expected: dict[str, set] = {}
        for req in requirements:
            bounds = expected.setdefault(GENTOO_ATOM[req.name.lower()], set())
            for spec in req.specifier:
                assert spec.operator in ATOM_OPERATOR, f"no atom for {spec} of {req.name}"
                bounds.add((ATOM_OPERATOR[spec.operator], spec.version))
        python_atoms = [a for a in atoms if a.use == tuple(PYTHON_USEDEP.split(","))]
        found: dict[str, set] = {}
        for atom in python_atoms:
            found.setdefault(atom.cp, set())
            if atom.operator:
                found[atom.cp].add((atom.operator, atom.version))
        assert found == expected, f"{path.name}: RDEPEND {found} != setup.py {expected}"
        for atom in atoms:
            if atom.cp.startswith("dev-python/") or atom.cp in GENTOO_ATOM.values():
                assert atom in python_atoms, f"{atom.text} lacks [${{PYTHON_USEDEP}}]"
        assert "sys-auth/munge" in {a.cp for a in atoms}, "munged must be installed"


def test_overlay_provides_a_pymunge_that_setup_py_accepts():
    wanted = next(Requirement(r) for r in setup_py()["install_requires"]
                  if r.startswith("pymunge"))
    versions = [p.name[len("pymunge-"):-len(".ebuild")]
                for p in (OVERLAY / "dev-python" / "pymunge").glob("pymunge-*.ebuild")]
    assert any(v in wanted.specifier for v in versions), (versions, str(wanted))


def test_pymunge_needs_libmunge_and_has_its_distfile():
    path = OVERLAY / "dev-python" / "pymunge" / "pymunge-0.1.3.ebuild"
    ebuild = source_ebuild(path)
    assert "pypi" in ebuild.inherited
    assert [a.cp for a in parse_atoms(ebuild.rdepend)] == ["sys-auth/munge"]
    manifest = (path.parent / "Manifest").read_text()
    assert re.search(r"^DIST pymunge-0\.1\.3\.tar\.gz \d+ BLAKE2B [0-9a-f]{128} "
                     r"SHA512 [0-9a-f]{128}$", manifest, re.M)


@pytest.mark.parametrize("package", sorted({p.parent for p in EBUILDS}), ids=_id)
def test_metadata_xml(package):
    path = package / "metadata.xml"
    text = path.read_text(encoding="utf-8")
    assert '<!DOCTYPE pkgmetadata SYSTEM "https://www.gentoo.org/dtd/metadata.dtd">' in text
    root = ET.parse(path).getroot()
    assert root.tag == "pkgmetadata"
    maintainers = root.findall("maintainer")
    assert maintainers or "maintainer-needed" in text, "no maintainer and no comment"
    for m in maintainers:
        assert m.get("type") in ("person", "project")
        assert (m.findtext("email") or "").count("@") == 1
    assert (root.findtext("longdescription") or "").strip()
    remote_ids = [(r.get("type"), r.text) for r in root.iterfind("upstream/remote-id")]
    assert any(kind == "github" and text and text.count("/") == 1
               for kind, text in remote_ids), remote_ids
