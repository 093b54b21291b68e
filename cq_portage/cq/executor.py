"""Runs one job: its environment, its user and groups, its log file, its exit status."""

from __future__ import annotations

import errno
import logging
import os
import signal
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

from .auth import groups_of
from .environment import EnvPolicy
from .execution import JOB_ID_VAR, stopped
from .job import JobState, Result, Status
from .serverjob import Job
from .statedir import NOFOLLOW, open_under

log = logging.getLogger(__name__)


def kill_orphan(running_file: Path, job_id: int) -> bool:
    """Kill the process group of job `job_id` left running by a dead server, if it is still
    there. `running_file` names its pid; the process's own environment must name the job
    too, so that a reused pid is left alone."""
    try:
        recorded_job, pid = running_file.read_text().split()[:2]
        with open(f"/proc/{int(pid)}/environ", "rb") as f:
            environ = f.read().split(b"\0")
    except (OSError, ValueError):
        return False
    if int(recorded_job) != job_id or f"{JOB_ID_VAR}={job_id}".encode() not in environ:
        return False
    try:
        os.killpg(int(pid), signal.SIGKILL)
    except ProcessLookupError:
        return False
    return True


def _is_ours(uid: int, gid: int, groups: list[int]) -> bool:
    """The server runs as this user, group and groups already (e.g. run_as: requester and
    root's own jobs). Then no ids are passed to Popen: asking for any makes it fork() instead
    of vfork(), and fork() copies the server's page tables, ~20 ms a job at 150 MB."""
    return (os.getuid() == os.geteuid() == uid and os.getgid() == os.getegid() == gid
            and set(groups) | {gid} == set(os.getgroups()) | {gid})


def exit_status(returncode: int) -> int:
    """The shell's convention: killed by signal N is 128+N (the original cq said 0)."""
    return 128 - returncode if returncode < 0 else returncode


@dataclass
class Executor:
    policy: EnvPolicy = EnvPolicy()
    server_env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    workdir: str = "/"
    running_file: Path | None = None  # which process runs which job, for after a crash
    log_root: Path | None = None  # job logs lie under it, reached without following links
    base_env: dict[str, str] = field(init=False, repr=False)
    _current: subprocess.Popen | None = field(default=None, init=False, repr=False)
    _stopping: str | None = field(default=None, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        self.set_policy(self.policy)
        self._running_fd = None
        if self.running_file:
            self._running_fd = os.open(self.running_file, os.O_RDWR | os.O_CREAT | NOFOLLOW,
                                       0o640)

    def set_policy(self, policy: EnvPolicy) -> None:
        """Takes effect from the next job (a reload does not touch the running one)."""
        self.policy = policy
        self.base_env = policy.filter(self.server_env)

    def run(self, job: Job) -> Result:
        """Run `job` to its end (blocking; the server calls it in a worker thread)."""
        env = self.policy.effective(self.base_env, job.env)
        env[JOB_ID_VAR] = str(job.id)
        ids = {}
        if job.run_as.uid is not None:
            groups = groups_of(job.run_as.uid, job.run_as.gid)
            if not _is_ours(job.run_as.uid, job.run_as.gid, groups):
                ids = dict(user=job.run_as.uid, group=job.run_as.gid, extra_groups=groups)
        try:
            fd = self._open_log(job)
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS):
                msg = f"cannot open its log {job.log_path}: {e.strerror} (refused)"
                return Result(JobState.FAILED, Status.EXEC_FAILED, 127, msg)
            # A failing disk must not stop the build: it runs, its output is lost.
            log.warning("job %d: cannot open its log %s (%s); it runs without one", job.id,
                        job.log_path, e.strerror)
            fd = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
        with open(fd, "wb") as out:
            try:
                with self._lock:
                    self._stopping = None
                    proc = subprocess.Popen(
                        job.argv, executable=job.command, env=env, cwd=self.workdir,
                        stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                        start_new_session=True, **ids)
                    self._current = proc
            except (OSError, ValueError, subprocess.SubprocessError) as e:
                reason = getattr(e, "strerror", None) or str(e)
                msg = f"cannot execute {job.command!r}: {reason}"
                out.write(f"cq: {msg}\n".encode())
                return Result(JobState.FAILED, Status.EXEC_FAILED, 127, msg)
        if self._running_fd is not None:
            # Overwritten in place, not fsync'd: it only serves after a crash of the server.
            try:
                os.pwrite(self._running_fd, f"{job.id} {proc.pid}\n".ljust(40).encode(), 0)
            except OSError as e:  # a full disk: only a crash's clean-up would miss it
                log.warning("job %d: cannot note its pid in %s: %s", job.id, self.running_file,
                            e.strerror)
        returncode = proc.wait()
        with self._lock:
            self._current, stopping = None, self._stopping
        if stopping:
            return stopped(stopping, exit_status(returncode))
        return Result(JobState.DONE, Status.RAN, exit_status(returncode))

    def _open_log(self, job: Job) -> int:
        """Appended to: a job requeued from a build host that went down keeps what it wrote
        there. No symbolic link is followed on the way (one planted in the state dir)."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
        if self.log_root is None:
            return os.open(job.log_path, flags | NOFOLLOW, 0o640)
        return open_under(self.log_root, job.log_path, flags, mkdir=True)

    def check(self) -> None:
        """This machine is always there (a remote executor raises HostDown when not)."""

    def close(self) -> None:
        pass

    def stop(self, why: str, grace: float) -> bool:
        """Stop the running job (why: 'cancel' or 'shutdown'): SIGTERM, then SIGKILL."""
        with self._lock:
            proc = self._current
            if proc is None:
                return False
            self._stopping = why
        _signal_group(proc, signal.SIGTERM)
        threading.Thread(target=_kill_later, args=(proc, grace), daemon=True).start()
        return True


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def _kill_later(proc: subprocess.Popen, grace: float) -> None:
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        _signal_group(proc, signal.SIGKILL)
