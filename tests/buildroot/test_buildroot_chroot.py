"""Entering a chroot root for real: a busybox-static chroot seeded from a folder, entered in
a private mount namespace with the host's trees bound in. What a Gentoo build host runs,
but for the stage3."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
from buildroot_helpers import leftover_mounts, one_line, wait_for

from cq_portage.buildroot.enter import GENTOO_PATH

STOP_BOUND = 5.0  # seconds from a signal to the wrapper's exit
MOUNTS_GONE_BOUND = 2.0  # seconds from the end of a run until no namespace holds its mounts


@pytest.fixture(scope="module")
def chroot(host, busybox_seed):
    done = host.cli("create", "cbox", "--kind", "chroot", "--seed", str(busybox_seed))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["cbox", "chroot", str(host.roots / "cbox")]
    return host.roots / "cbox"


def run_sh(host, script: str, group: str = "cbox", env: dict | None = None, timeout=60):
    return host.cli("run", group, "--", "sh", "-c", script, env=env, timeout=timeout)


def test_the_hosts_trees_are_inside_at_their_own_paths(host, chroot):
    repo, pkgdir, distdir = host.sandbox.repository.path, host.sandbox.pkgdir, host.distdir
    distdir.mkdir(parents=True, exist_ok=True)
    (distdir / "src-1.tar").write_text("distfile\n")
    (pkgdir / "from-chroot").unlink(missing_ok=True)
    script = (f"cat {repo}/profiles/repo_name && cat {distdir}/src-1.tar"
              f" && echo built > {pkgdir}/from-chroot"
              f" && if touch {repo}/x 2>/dev/null; then echo repo-writable; fi"
              " && cat /etc/os-release && test ! -e /work && test ! -e /etc/debian_version"
              " && grep -q '^Name:' /proc/self/status && echo proc-ok"
              " && echo x > /dev/null && test -c /dev/zero && test -e /dev/pts/ptmx"
              " && head -c 4 /dev/zero | wc -c")
    done = run_sh(host, script)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["cqtest", "distfile", "ID=busybox-test", "proc-ok", "4"]
    assert (pkgdir / "from-chroot").read_text() == "built\n"  # PKGDIR is shared, writable
    assert not (repo / "x").exists()  # the repository is bound read-only


def test_the_jobs_variables_arrive_and_path_is_the_roots(host, chroot):
    env = {"USE": "foo -bar", "CQ_JOB_ID": "42", "ABI_X86": "64 32",
           "PYTHON_TARGETS": "python3_12", "LD_PRELOAD": "", "TMPDIR": "/host/tmp",
           "CQ_PACKAGE_USE": "dev-libs/brlib foo\napp-misc/brapp -foo"}
    script = ('echo "USE=$USE" "JOB=$CQ_JOB_ID" "ABI=$ABI_X86" "PATH=$PATH" "HOME=$HOME"'
              ' "EPREFIX=${PORTAGE_OVERRIDE_EPREFIX-unset}" "PYTHONPATH=${PYTHONPATH-unset}"'
              ' "PINS=${CQ_PACKAGE_USE-unset}" "PT=$PYTHON_TARGETS"'
              ' "LD=${LD_PRELOAD-unset}" "TMPDIR=${TMPDIR-unset}";'
              ' cat /etc/portage/package.use/zz-cq-portage')
    done = run_sh(host, script, env=env)
    assert done.returncode == 0, done.stderr
    first, *pins = done.stdout.splitlines()
    assert first == (f"USE=foo -bar JOB=42 ABI=64 32 PATH={GENTOO_PATH} HOME=/root "
                     "EPREFIX=unset PYTHONPATH=unset PINS=unset PT=python3_12 LD=unset "
                     "TMPDIR=unset")
    assert pins == ["dev-libs/brlib foo", "app-misc/brapp -foo"]
    # Without the variable the pins of the last job are gone.
    done = run_sh(host, "wc -c < /etc/portage/package.use/zz-cq-portage")
    assert done.stdout.strip() == "0"


@pytest.mark.parametrize("script, status", [
    ("exit 0", 0), ("exit 3", 3), ("no-such-command", 127),
    ("kill -USR1 $$", 128 + signal.SIGUSR1), ("kill -KILL $$", 128 + signal.SIGKILL)])
def test_exit_status_is_the_commands(host, chroot, script, status):
    done = run_sh(host, script)
    assert done.returncode == status, done.stderr


def test_a_command_missing_from_the_root_is_127_in_one_line(host, chroot):
    done = host.cli("run", "cbox", "--", "python3", "-c", "pass")  # the host has it
    assert done.returncode == 127
    assert one_line(done.stderr) == ("cq-build-root: python3: command not found in the "
                                     "build root")


def start_sleeper(host, group: str = "cbox", **kw) -> subprocess.Popen:
    """A run whose command says 'in' when it is inside, then sleeps; as cq-server starts a
    job: in a session and process group of its own."""
    proc = host.popen("run", group, "--", "sh", "-c", "echo in; exec sleep 60",
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                      **kw)
    assert proc.stdout.readline() == "in\n"
    return proc


def test_sigterm_to_the_jobs_process_group_ends_it_promptly(host, chroot):
    proc = start_sleeper(host)
    assert leftover_mounts(chroot), "the run's namespace should hold its mounts now"
    sent = time.monotonic()
    os.killpg(proc.pid, signal.SIGTERM)  # what cq-server does to cancel a job
    assert proc.wait(STOP_BOUND) == 128 + signal.SIGTERM
    assert time.monotonic() - sent < STOP_BOUND
    wait_for(lambda: not leftover_mounts(chroot), MOUNTS_GONE_BOUND, "mounts after SIGTERM")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_signal_to_the_wrapper_alone_is_forwarded(host, chroot, sig):
    proc = start_sleeper(host)
    sent = time.monotonic()
    proc.send_signal(sig)
    assert proc.wait(STOP_BOUND) == 128 + sig
    assert time.monotonic() - sent < STOP_BOUND


def test_kill_9_of_the_process_group_leaves_no_mount(host, chroot):
    proc = start_sleeper(host)
    held = leftover_mounts(chroot)
    points = {p.removeprefix(str(chroot)) for ps in held.values() for p in ps}
    assert {"/proc", "/dev", "/dev/pts", "/sys", str(host.sandbox.pkgdir),
            str(host.sandbox.repository.path), str(host.distdir)} <= points
    os.killpg(proc.pid, signal.SIGKILL)
    assert proc.wait(STOP_BOUND) == -signal.SIGKILL
    took = wait_for(lambda: not leftover_mounts(chroot), MOUNTS_GONE_BOUND,
                    "mounts after kill -9")
    assert took < MOUNTS_GONE_BOUND
    # The root is usable again at once: the lock died with the processes.
    assert run_sh(host, "exit 0", timeout=STOP_BOUND * 4).returncode == 0


def test_a_normal_end_leaves_no_mount(host, chroot):
    assert run_sh(host, "test -d /proc/self").returncode == 0
    assert not leftover_mounts(chroot)


def read_spans(path) -> list[tuple[str, float, float]]:
    """`NAME start end` lines written by span_script, as floats of /proc/uptime."""
    spans = []
    for line in path.read_text().splitlines():
        name, start, end = line.split()
        spans.append((name, float(start), float(end)))
    return sorted(spans, key=lambda s: s[1])


def span_script(name: str, log, seconds: float) -> str:
    # /proc/uptime inside the root is the host's clock: comparable across roots.
    return (f"read s _ < /proc/uptime; sleep {seconds}; read e _ < /proc/uptime; "
            f"echo {name} $s $e >> {log}")


def test_two_runs_of_one_group_never_overlap_two_groups_do(host, chroot, busybox_seed,
                                                              tmp_path):
    assert host.cli("create", "cbox2", "--kind", "chroot", "--seed",
                    str(busybox_seed)).returncode == 0
    log = host.sandbox.pkgdir / "spans"  # a path every root sees
    log.unlink(missing_ok=True)
    same = [host.popen("run", "cbox", "--", "sh", "-c", span_script(f"a{i}", log, 1.0),
                       stderr=subprocess.PIPE) for i in range(2)]
    time.sleep(0.3)
    other = host.popen("run", "cbox2", "--", "sh", "-c", span_script("b", log, 1.0),
                       stderr=subprocess.PIPE)
    errors = []
    for proc in [*same, other]:
        assert proc.wait(30) == 0
        errors.append(proc.stderr.read())
    spans = {name: (start, end) for name, start, end in read_spans(log)}
    (first, second) = sorted([spans["a0"], spans["a1"]])
    assert first[1] <= second[0], f"one group's runs overlapped: {spans}"
    # The second run of cbox said, once, that it waited.
    waits = [e for e in errors[:2] if e.strip()]
    assert [one_line(e) for e in waits] == ["cq-build-root: waiting for the build root of cbox"]
    # cbox2 ran while cbox was busy: its span overlaps one of cbox's.
    b = spans["b"]
    assert any(b[0] < a[1] and a[0] < b[1] for a in (first, second)), spans
    assert not errors[2].strip()
