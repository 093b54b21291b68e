"""create, update, remove and list: seeds (tarballs, folders), the config a root gets from
the host, where roots live, the refusals, and every user error as one line."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from buildroot_helpers import CLI, one_line

from cq_portage.buildroot import remove, seed
from cq_portage.buildroot.roots import MARKER, BuildRootError
from cq_portage.sandbox.prefix import write_vdb_entry
from cq_portage.sandbox.repository import Ebuild

REPO_ROOT = Path(__file__).resolve().parents[2]
STOP_BOUND = 5.0  # seconds from SIGTERM to the exit of a run that waits for the lock


@pytest.fixture
def owned_seed(busybox_seed, tmp_path) -> Path:
    """The busybox seed plus files whose owner and mode a seed must keep."""
    folder = tmp_path / "owned"
    shutil.copytree(busybox_seed, folder, symlinks=True)
    (folder / "data").mkdir(mode=0o750)
    (folder / "data/secret").write_text("s\n")
    os.chmod(folder / "data/secret", 0o640)
    os.chown(folder / "data/secret", 1234, 5678)
    os.chown(folder / "data", 1234, 5678)
    os.setxattr(folder / "data/secret", "user.cq-test", b"kept")  # as stage3 file caps are
    return folder


@pytest.mark.parametrize("suffix", ["tar.xz", "tar.gz", "tar.bz2", "tar.zst"])
def test_create_from_a_stage3_style_tarball(host, owned_seed, tmp_path, suffix):
    tarball = tmp_path / f"stage3.{suffix}"
    subprocess.run(["tar", "--create", "--auto-compress", "--xattrs", "--xattrs-include=*",
                    f"--file={tarball}", f"--directory={owned_seed}", "."], check=True)
    group = "tar-" + suffix.replace(".", "-")
    done = host.cli("create", group, "--kind", "chroot", "--seed", str(tarball))
    assert done.returncode == 0, done.stderr
    root = host.roots / group
    info = (root / "data/secret").stat()
    assert (info.st_uid, info.st_gid, info.st_mode & 0o7777) == (1234, 5678, 0o640)
    assert (root / "data").stat().st_mode & 0o7777 == 0o750
    assert os.getxattr(root / "data/secret", "user.cq-test") == b"kept"
    assert json.loads((root / ".cq-build-root").read_text())["seed"] == str(tarball)
    run = host.cli("run", group, "--", "sh", "-c", "cat /data/secret")
    assert (run.returncode, run.stdout) == (0, "s\n")
    assert host.cli("remove", group).returncode == 0
    assert not root.exists()


def test_create_from_a_folder_keeps_owners_modes_and_xattrs(host, owned_seed):
    done = host.cli("create", "fromfolder", "--kind", "chroot", "--seed", str(owned_seed))
    assert done.returncode == 0, done.stderr
    secret = host.roots / "fromfolder/data/secret"
    info = secret.stat()
    assert (info.st_uid, info.st_gid, info.st_mode & 0o7777) == (1234, 5678, 0o640)
    assert os.getxattr(secret, "user.cq-test") == b"kept"
    assert (host.roots / "fromfolder/bin/sh").readlink() == Path("busybox")
    assert host.cli("remove", "fromfolder").returncode == 0


def test_a_folder_seed_never_copies_the_shared_trees_or_the_roots(host):
    # The sandbox folder holds the repository, PKGDIR, the build prefix's DISTDIR and the
    # roots dir itself: a root seeded from it must not copy any of them (nor itself).
    (host.sandbox.pkgdir / "marker").write_text("pkgdir\n")
    done = host.cli("create", "fromdir", "--kind", "chroot", "--seed", str(host.sandbox.root))
    assert done.returncode == 0, done.stderr
    root = host.roots / "fromdir"
    inner = root / host.build.path.relative_to(host.sandbox.root)
    assert (inner / "etc/portage/make.conf").is_file()  # the rest is copied
    for shared in (host.sandbox.repository.path, host.sandbox.pkgdir, host.distdir,
                   host.roots):
        copy = root / shared.relative_to(host.sandbox.root)
        assert copy.is_dir() and not any(copy.iterdir()), copy
    assert host.cli("remove", "fromdir").returncode == 0


def test_the_hosts_slash_is_copied_without_what_is_not_the_system(host):
    skipped = seed.excluded(Path("/"), [host.roots, Path("/var/cache/binpkgs")])
    assert {Path(p) for p in ("proc", "sys", "dev", "run", "tmp", "var/tmp", "home",
                              "root", "var/cache/binpkgs")} <= set(skipped)
    assert host.roots.relative_to("/") in skipped
    # A folder seed leaves what is outside it alone, and never excludes itself.
    assert seed.excluded(host.build.path, [host.sandbox.pkgdir, host.build.path]) == []


def test_a_broken_seed_leaves_no_root(host, tmp_path):
    bad = tmp_path / "stage3.tar.xz"
    bad.write_bytes(os.urandom(4096))
    done = host.cli("create", "badseed", "--kind", "chroot", "--seed", str(bad))
    assert done.returncode == 1
    assert one_line(done.stderr).startswith(f"cq-build-root: extracting {bad} failed: ")
    assert not (host.roots / "badseed").exists()
    assert "badseed" not in host.cli("list").stdout


@pytest.mark.parametrize("args, status, message", [
    ([], 2, "cq-build-root: error: the following arguments are required: COMMAND"),
    (["create", "no/such"], 2, "cq-build-root: invalid group name 'no/such'"),
    (["create", "x", "--kind", "jail"], 2, "cq-build-root create: error: argument --kind"),
    (["create", "x", "--kind", "chroot"], 2, "cq-build-root: a chroot build root needs a "
     "seed: cq-build-root create x --seed STAGE3.tar.xz"),
    (["create", "x", "--seed", "/no/such.tar.xz"], 2,
     "cq-build-root: seed /no/such.tar.xz does not exist"),
    (["run", "x"], 2, "cq-build-root: no command: cq-build-root run GROUP -- COMMAND"),
    (["update", "nosuch"], 2, "cq-build-root: no build root for group nosuch in "),
    (["remove", "nosuch"], 2, "cq-build-root: no build root for group nosuch in "),
    (["frobnicate"], 2, "cq-build-root: error: argument COMMAND: invalid choice"),
])
def test_user_errors_are_one_line(host, args, status, message):
    done = host.cli(*args)
    assert done.returncode == status
    assert one_line(done.stderr).startswith(message)


def test_create_twice_is_refused(host):
    assert host.cli("create", "twice").returncode == 0
    done = host.cli("create", "twice")
    assert done.returncode == 2
    assert one_line(done.stderr) == (
        f"cq-build-root: the build root of twice exists ({host.roots / 'twice'}): "
        "`cq-build-root update twice` rewrites its config, `remove twice` deletes it")


def test_a_missing_chroot_root_says_how_to_create_it(host, tmp_path):
    # EPREFIX "" is a real Gentoo host: its roots are chroots, made from a stage3.
    done = host.cli("--roots", str(tmp_path), "run", "web", "--", "true",
                    env={"PORTAGE_OVERRIDE_EPREFIX": ""})
    assert done.returncode == 2
    assert one_line(done.stderr) == (
        f"cq-build-root: no build root for group web in {tmp_path}: create it with "
        "`cq-build-root create web --seed STAGE3.tar.xz`")
    assert not (tmp_path / "web").exists()


@pytest.mark.parametrize("layout", ["file", "folder"])
def test_update_rewrites_the_config_from_the_host_and_keeps_the_vdb(host, layout):
    group = f"upd-{layout}"
    assert host.cli("create", group).returncode == 0
    root = host.root_prefix(group)
    write_vdb_entry(root, Ebuild("dev-libs/brlib-1", iuse=("foo",)), ["foo"], counter=1)
    root.write_world("dev-libs/brlib")
    host_use = host.build.config_dir / "package.use"
    try:
        host.build.write_make_conf(CFLAGS="-O3 -pipe")
        if layout == "file":
            host_use.write_text("dev-libs/brlib foo\n")
        else:
            host_use.mkdir()
            (host_use / "site").write_text("dev-libs/brlib foo\n")
        done = host.cli("update", group)
        assert done.returncode == 0, done.stderr
    finally:
        host.build.make_conf.pop("CFLAGS")
        host.build.write_make_conf()
        shutil.rmtree(host_use) if host_use.is_dir() else host_use.unlink()
    conf = root.config_dir / "make.conf"
    assert 'CFLAGS="-O3 -pipe"' in conf.read_text()
    copied = root.config_dir / "package.use" / ("00-build-host" if layout == "file" else "site")
    assert copied.read_text() == "dev-libs/brlib foo\n"
    assert (root.config_dir / "package.use/zz-cq-portage").read_text() == ""
    assert set(root.installed()) == {"dev-libs/brlib-1"}
    assert (root.path / "var/lib/portage/world").read_text() == "dev-libs/brlib\n"
    # The host's config changed back: a run takes the host's config as it is now.
    assert host.cli("run", group, "--", "true").returncode == 0
    assert "CFLAGS" not in conf.read_text()
    assert not (root.config_dir / "package.use/00-build-host").exists()


def test_list_and_where_roots_live(host, tmp_path):
    assert host.cli("create", "listed").returncode == 0
    lines = host.cli("list").stdout.splitlines()
    assert f"listed prefix {host.roots / 'listed'}" in lines
    entries = {e["group"]: e for e in json.loads(host.cli("list", "--json").stdout)}
    assert entries["listed"]["kind"] == "prefix" and entries["listed"]["seed"] is None
    # $CQ_PORTAGE_ROOTS moves them; --roots beats it.
    env_dir, option_dir = tmp_path / "env", tmp_path / "option"
    assert host.cli("create", "moved", env={"CQ_PORTAGE_ROOTS": str(env_dir)}).returncode == 0
    assert (env_dir / "moved/.cq-build-root").is_file()
    done = host.cli("--roots", str(option_dir), "list", env={"CQ_PORTAGE_ROOTS": str(env_dir)})
    assert (done.returncode, done.stdout) == (0, "")
    done = host.cli("list", env={"CQ_PORTAGE_ROOTS": str(env_dir)})
    assert done.stdout == f"moved prefix {env_dir / 'moved'}\n"


def test_the_source_checkout_launcher(host):
    done = subprocess.run([sys.executable, str(REPO_ROOT / "bin/cq-build-root"), "list"],
                          env=host.env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == subprocess.run([*CLI, "list"], env=host.env(), capture_output=True,
                                         text=True, timeout=60).stdout


def test_remove_refuses_while_something_is_mounted_below(host):
    assert host.cli("create", "mounted").returncode == 0
    root = host.roots / "mounted"
    (root / "mnt").mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "cq-test", str(root / "mnt")], check=True)
    try:
        (root / "mnt/keep").write_text("not the root's\n")
        done = host.cli("remove", "mounted")
        assert done.returncode == 1
        assert one_line(done.stderr) == (f"cq-build-root: {root}/mnt is mounted below the "
                                         f"build root {root}: unmount it first")
        assert (root / "mnt/keep").read_text() == "not the root's\n"
        # The second guard: deleting never crosses into another filesystem.
        with pytest.raises(BuildRootError, match="is another filesystem"):
            remove.remove_tree(root, last=(MARKER,))
        assert (root / "mnt/keep").read_text() == "not the root's\n"
        assert (root / MARKER).is_file()  # still a root: `remove` can finish the job
    finally:
        subprocess.run(["umount", str(root / "mnt")], check=True)
    assert host.cli("remove", "mounted").returncode == 0
    assert not root.exists()
    assert "mounted" not in host.cli("list").stdout


def test_remove_waits_for_a_running_command(host):
    assert host.cli("create", "busy").returncode == 0
    running = host.popen("run", "busy", "--", "sh", "-c", "echo in; sleep 1",
                         stdout=subprocess.PIPE)
    assert running.stdout.readline() == "in\n"
    done = host.cli("remove", "busy", timeout=30)
    assert running.wait(5) == 0  # it ran to its end: remove waited for it
    assert done.returncode == 0, done.stderr
    assert one_line(done.stderr) == "cq-build-root: waiting for the build root of busy"
    assert not (host.roots / "busy").exists()


def test_a_run_stopped_while_it_waits_never_starts(host):
    assert host.cli("create", "queued").returncode == 0
    ran = host.roots / "queued" / "ran"
    first = host.popen("run", "queued", "--", "sh", "-c", "echo in; sleep 2",
                       stdout=subprocess.PIPE)
    assert first.stdout.readline() == "in\n"
    second = host.popen("run", "queued", "--", "touch", str(ran), stderr=subprocess.PIPE,
                        start_new_session=True)
    assert second.stderr.readline() == "cq-build-root: waiting for the build root of queued\n"
    os.killpg(second.pid, signal.SIGTERM)
    assert second.wait(STOP_BOUND) == 128 + signal.SIGTERM
    assert second.stderr.read() == ("cq-build-root: stopped by SIGTERM before the command "
                                    "started\n")
    assert first.wait(10) == 0
    assert not ran.exists()


def test_a_folder_that_is_not_a_root_is_never_deleted(host, tmp_path):
    # --roots pointed at a folder with other things in it: `portage` is not a root.
    (tmp_path / "portage").mkdir()
    (tmp_path / "portage/world").write_text("app-misc/precious\n")
    for args in (["remove", "portage"], ["create", "portage"], ["run", "portage", "--", "true"]):
        done = host.cli("--roots", str(tmp_path), *args)
        assert done.returncode == 2, args
        assert one_line(done.stderr) == (
            f"cq-build-root: {tmp_path / 'portage'} exists and is not a build root (no "
            ".cq-build-root): move it away, or choose another --roots")
    assert (tmp_path / "portage/world").read_text() == "app-misc/precious\n"


def test_what_a_create_that_died_left_is_made_again(host):
    leftover = host.roots / "died"
    leftover.mkdir(parents=True)
    (leftover / ".cq-build-root.creating").write_text("")
    (leftover / "half-extracted").write_text("")
    done = host.cli("run", "died", "--", "true")  # a prefix root is made on the fly
    assert done.returncode == 0, done.stderr
    assert not (leftover / "half-extracted").exists()
    assert (leftover / ".cq-build-root").is_file()
    assert not (leftover / ".cq-build-root.creating").exists()


def test_a_command_that_outlives_its_killed_wrapper_keeps_the_root_locked(host):
    assert host.cli("create", "orphan").returncode == 0
    first = host.popen("run", "orphan", "--", "sh", "-c", "echo in; sleep 1.5; echo out",
                       stdout=subprocess.PIPE, start_new_session=True)
    assert first.stdout.readline() == "in\n"
    first.kill()  # the wrapper alone, with -9: its sh goes on in the root
    first.wait()
    started = time.monotonic()
    done = host.cli("run", "orphan", "--", "true", timeout=30)
    assert done.returncode == 0
    assert one_line(done.stderr) == "cq-build-root: waiting for the build root of orphan"
    assert first.stdout.read() == "out\n"  # the orphan ended before the second run began
    assert time.monotonic() - started >= 1.0
