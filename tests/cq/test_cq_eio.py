"""A state dir whose disk fails with EIO, not just a full one: the server goes on answering.

The failing disk is real: ext4 on a loop device whose backing file is a memfd. Sealing the
memfd against writes (F_SEAL_WRITE) makes every write the loop driver passes on fail
(EPERM), which the block layer reports as an I/O error: ext4 sees EIO on writeback, fsync
returns EIO, and SQLite (synchronous=FULL) reports "disk I/O error". A loop file on a full
tmpfs is no such disk: the loop driver reports ENOSPC ("critical space allocation error"),
so fsync gives ENOSPC, the full-disk case test_cq_faults.py already covers."""

from __future__ import annotations

import errno
import fcntl
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cq_portage.cq.client import Refused
from cq_portage.cq.job import JobState
from cq_portage.cq.wire import job_state
from cq_portage.sandbox.server import CqServer

from helpers import cq_client, running_and_queued, stored_state, wait_for, wait_poll

FAILING = "or its file system fails (disk I/O error)"  # server.py _internal_error


@dataclass
class FailingDisk:
    """A CqServer (not started) whose state dir is an ext4 that fails with EIO on fail()."""

    server: CqServer
    backing: int  # the memfd behind the loop device

    def fail(self) -> None:
        fcntl.fcntl(self.backing, fcntl.F_ADD_SEALS, fcntl.F_SEAL_WRITE)
        probe = os.open(self.server.state_dir / "probe", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.write(probe, b"x" * 8192)
            with pytest.raises(OSError) as failed:
                os.fsync(probe)
            assert failed.value.errno == errno.EIO  # the disk fails, it is not full
        finally:
            os.close(probe)


def run(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout.strip()


def users(folder: Path) -> list[int]:
    """The processes with a file open, or their cwd, under `folder`."""
    found = []
    for pid in set(filter(str.isdigit, os.listdir("/proc"))) - {str(os.getpid())}:  # not us
        try:
            fds = [f"/proc/{pid}/fd/{fd}" for fd in os.listdir(f"/proc/{pid}/fd")]
            paths = [os.readlink(link) for link in [*fds, f"/proc/{pid}/cwd"]]
        except OSError:  # it ended meanwhile
            continue
        if any(Path(path).is_relative_to(folder) for path in paths):
            found.append(int(pid))
    return found


def kill_users(folder: Path) -> None:
    """kill -9 the jobs a killed server left running with their logs open under `folder`,
    until none is left, so that it can be unmounted."""
    def gone() -> bool:
        for pid in users(folder):
            os.kill(pid, signal.SIGKILL)
        return not users(folder)
    wait_for(gone, 10, f"the processes using {folder} ended")


@pytest.fixture
def eio_server(make_server) -> Iterator[FailingDisk]:
    """The loop device and the mount go away afterwards, whatever the test did."""
    server = make_server(folder="s")
    server.kill()
    shutil.rmtree(server.state_dir)
    server.state_dir.mkdir(mode=0o750)
    backing = os.memfd_create("cq-eio-state", os.MFD_ALLOW_SEALING)
    loop = None
    try:
        os.ftruncate(backing, 64 << 20)
        image = f"/proc/{os.getpid()}/fd/{backing}"
        run("mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", image)
        loop = run("losetup", "--find", "--show", image)
        run("mount", "-t", "ext4", loop, str(server.state_dir))
        server.state_dir.chmod(0o750)
        yield FailingDisk(server, backing)
    finally:
        server.kill()
        if os.path.ismount(server.state_dir):
            kill_users(server.state_dir)
            # ext4 cannot write its dirty pages back: umount drops them and ends
            subprocess.run(["umount", str(server.state_dir)], check=True)
        if loop and subprocess.run(["losetup", loop], capture_output=True).returncode == 0:
            subprocess.run(["losetup", "--detach", loop], check=True)
        os.close(backing)


def test_eio_keeps_answering_refuses_submissions_in_one_line_and_stops_within_grace(
        eio_server, tmp_path):
    """Once the state dir's disk fails with EIO: STATUS, LIST and WAIT answer within 5 s; 20
    submissions, a cancel and cq-client each get one line, no traceback; a job that ends
    then is told to its waiters and its record retried; SIGTERM ends the server within
    stop_grace_seconds (2) + 8 s; its log (its stderr too) has one line per refused request
    and no traceback."""
    server = eio_server.server
    server.config = {"stop_grace_seconds": 2}
    server.start()
    go = tmp_path / "go"
    with server.client(timeout=10) as client:
        job, queued = running_and_queued(client, go)
        eio_server.fail()

        # Failing: reads answer at once, each write gets one line, 20 submissions in a row.
        started = time.monotonic()
        assert client.status(job).state == JobState.RUNNING
        assert [j.id for j in client.list()] == [job, queued]
        assert job_state(wait_poll(client, job).state) == JobState.RUNNING
        for i in range(20):
            with pytest.raises(Refused, match=re.escape(FAILING)) as refused:
                client.submit(["true", str(i)])
            assert "\n" not in str(refused.value)
        with pytest.raises(Refused, match=re.escape(FAILING)):
            client.cancel(queued)
        assert client.status(queued).state == JobState.QUEUED
        assert time.monotonic() - started < 5
        done = cq_client(server, "--timeout", "5", "--", "true")
        assert done.returncode == 255 and done.stderr.count("\n") == 1
        assert FAILING in done.stderr and "Traceback" not in done.stderr

        # The job ends while nothing can be recorded: waiters hear how it ended; the runner
        # says once that it cannot record it, and retries.
        go.touch()
        wait_for(lambda: "cannot record the end of job" in server.log.read_text(), 10,
                 "the failed record")
        outcome = client.wait(job)
        assert (outcome.state, outcome.exit_status) == ("done", 3)
        time.sleep(3)  # 3 retries of the runner (every 1 s), 12 of the checkpointer
        assert stored_state(server, job) == "running"  # no failed commit shows
        assert client.status(queued).state == JobState.QUEUED  # nothing new starts
    assert server.process.poll() is None

    # SIGTERM: stop_grace_seconds (2) + 8 s at most, exit status 0.
    started = time.monotonic()
    assert server.stop(timeout=10) == 0
    assert time.monotonic() - started < 2 + 8
    log = server.log.read_text()
    assert "Traceback" not in log
    # One line per refused request (20 submissions, a cancel, cq-client's one); the runner
    # and the checkpointer each say once that they fail, however often they retry.
    assert log.count(f"{FAILING}: submission not stored") == 21
    assert log.count(f"{FAILING}: not done") == 1
    assert log.count("cannot record the end of job") == 1
    assert log.count("cq.db failed (disk I/O error); retrying") == 1  # the checkpointer
    assert log.count("cannot be recorded") == 1  # at the stop
    assert len(log.splitlines()) < 22 + 15, log
