"""Runs one job: its environment, its user and groups, its log file, its exit status."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

from .auth import groups_of
from .environment import EnvPolicy
from .job import Job, JobState, Result
from .wire import Status

log = logging.getLogger(__name__)


def process_start(pid: int) -> str | None:
    """The kernel's start time of `pid`: with the pid, it names one process, not a reused pid."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def kill_orphan(running_file: Path, job_id: int) -> bool:
    """Kill the process group of job `job_id` left running by a dead server, if it is still
    there: `running_file` names the pid and its start time, so a reused pid is left alone."""
    try:
        recorded_job, pid, start = running_file.read_text().split()
    except (OSError, ValueError):
        return False
    if int(recorded_job) != job_id or process_start(int(pid)) != start:
        return False
    try:
        os.killpg(int(pid), signal.SIGKILL)
    except ProcessLookupError:
        return False
    return True


def exit_status(returncode: int) -> int:
    """The shell's convention: killed by signal N is 128+N (the original cq said 0)."""
    return 128 - returncode if returncode < 0 else returncode


@dataclass
class Executor:
    policy: EnvPolicy = EnvPolicy()
    server_env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    workdir: str = "/"
    running_file: Path | None = None  # which process runs which job, for after a crash
    base_env: dict[str, str] = field(init=False, repr=False)
    _current: subprocess.Popen | None = field(default=None, init=False, repr=False)
    _stopping: str | None = field(default=None, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        self.set_policy(self.policy)

    def set_policy(self, policy: EnvPolicy) -> None:
        """Takes effect from the next job (a reload does not touch the running one)."""
        self.policy = policy
        self.base_env = policy.filter(self.server_env)

    def run(self, job: Job) -> Result:
        """Run `job` to its end (blocking; the server calls it in a worker thread)."""
        env = self.policy.effective(self.base_env, job.env)
        log_path = Path(job.log_path)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        ids = {}
        if job.run_as.uid is not None:
            ids = dict(user=job.run_as.uid, group=job.run_as.gid,
                       extra_groups=groups_of(job.run_as.uid, job.run_as.gid))
        with open(log_path, "wb") as out:
            os.chmod(log_path, 0o640)
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
        if self.running_file:
            # Not fsync'd: it only serves to clean up after a crash of the server.
            self.running_file.write_text(f"{job.id} {proc.pid} {process_start(proc.pid)}\n")
        returncode = proc.wait()
        with self._lock:
            self._current, stopping = None, self._stopping
        if stopping:
            return Result(JobState.CANCELLED if stopping == "cancel" else JobState.INTERRUPTED,
                          Status.CANCELLED if stopping == "cancel" else Status.INTERRUPTED,
                          exit_status(returncode), _stop_reasons[stopping])
        return Result(JobState.DONE, Status.RAN, exit_status(returncode))

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


_stop_reasons = {"cancel": "cancelled while running",
                 "shutdown": "the server shut down while the job ran; it was not re-run"}


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
