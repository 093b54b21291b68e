"""The release tarball (`make dist`) and its Manifest line (`make manifest`): the tarball the
release ebuild fetches holds everything that ebuild installs and tests, the same commit
always makes the same bytes, and the DIST line written for it verifies."""

from __future__ import annotations

import hashlib
import re
import subprocess
import tarfile

import pytest

from packaging_helpers import REPO, dist_tool, setup_py, source_ebuild

MAIN_PACKAGE = REPO / "ebuild" / "app-admin" / "cq-portage"


@pytest.fixture(scope="module")
def tarball(tmp_path_factory):
    return dist_tool().sdist(tmp_path_factory.mktemp("dist"))


def members(tarball) -> set[str]:
    with tarfile.open(tarball) as tar:
        return {m.name for m in tar.getmembers() if m.isfile()}


def tracked(*patterns: str) -> set[str]:
    done = subprocess.run(["git", "ls-files", *patterns], cwd=REPO, capture_output=True,
                          text=True, check=True)
    return set(done.stdout.split())


def test_tarball_is_named_and_rooted_as_the_release_ebuild_expects(tarball):
    version = setup_py()["version"]
    ebuild = source_ebuild(MAIN_PACKAGE / f"cq-portage-{version}.ebuild")
    assert tarball.name == f"cq_portage-{version}.tar.gz"
    assert ebuild.variables["SRC_URI"].rsplit("/", 1)[-1] == tarball.name
    top = ebuild.variables["S"].rsplit("/", 1)[-1]
    assert {name.split("/", 1)[0] for name in members(tarball)} == {top}


def test_tarball_holds_every_file_the_ebuild_installs_and_tests(tarball):
    version = setup_py()["version"]
    ebuild = source_ebuild(MAIN_PACKAGE / f"cq-portage-{version}.ebuild")
    inside = {name.split("/", 1)[1] for name in members(tarball)}
    wanted = {item.src for item in ebuild.installed}  # etc/...: python_install_all
    wanted |= set(ebuild.tests)  # python_test's suites, their conftests and helpers
    wanted |= tracked("tests/conftest.py", "tests/*/conftest.py", "tests/*/*helpers.py",
                      "pytest.ini")
    wanted |= tracked("cq_portage/*.py", "cq_portage/**/*.py", "cq_portage/**/*.proto",
                      "cq_portage/**/*.pyi")
    wanted |= {"setup.py", "README.md", "ARCHITECTURE.md", "COPYING",  # test_layering reads it
               "ebuild/metadata/layout.conf"}
    assert len(wanted) > 60
    assert wanted - inside == set(), f"not in {tarball.name}: {sorted(wanted - inside)}"
    assert not [n for n in inside if "__pycache__" in n or n.endswith(".pyc")]
    # The Manifest holds the tarball's hashes: inside, it would change what it describes.
    assert "ebuild/app-admin/cq-portage/Manifest" not in inside


def test_the_same_tree_makes_the_same_bytes(tarball, tmp_path):
    again = dist_tool().sdist(tmp_path)
    assert hashlib.sha512(again.read_bytes()).digest() == \
        hashlib.sha512(tarball.read_bytes()).digest()
    with tarfile.open(tarball) as tar:
        for member in tar.getmembers():
            assert (member.uid, member.gid, member.uname, member.gname) == (0, 0, "", "")
            assert member.mode in (0o644, 0o755), (member.name, oct(member.mode))
    executables = {m.name.split("/", 1)[1] for m in tarfile.open(tarball).getmembers()
                   if m.isfile() and m.mode == 0o755}
    assert {"etc/init.d/cq-server", "etc/libexec/cq-portage-nightly",
            "etc/portage/postsync.d/cq-portage"} <= executables


def test_manifest_line_verifies_and_replaces_only_its_own(tarball, tmp_path):
    manifest = tmp_path / "Manifest"
    other = "DIST other-1.0.tar.gz 3 BLAKE2B " + "a" * 128 + " SHA512 " + "b" * 128
    stale = f"DIST {tarball.name} 1 BLAKE2B " + "0" * 128 + " SHA512 " + "0" * 128
    manifest.write_text(f"{stale}\n{other}\n")
    line = dist_tool().write_manifest(tarball, manifest)
    data = tarball.read_bytes()
    assert line == (f"DIST {tarball.name} {len(data)} BLAKE2B "
                    f"{hashlib.blake2b(data).hexdigest()} SHA512 "
                    f"{hashlib.sha512(data).hexdigest()}")
    assert manifest.read_text().splitlines() == sorted([line, other])


def test_make_manifest_refuses_a_missing_tarball_in_one_line(tmp_path):
    done = subprocess.run(["python3", str(REPO / "tools" / "dist.py"), "manifest",
                           str(tmp_path / "nope.tar.gz"), "--manifest", str(tmp_path / "M")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and not (tmp_path / "M").exists()
    assert re.fullmatch(r"tools/dist\.py: \S+nope\.tar\.gz does not exist: run `make dist` "
                        r"first\n", done.stderr)
