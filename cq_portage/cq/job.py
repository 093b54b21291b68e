"""A job's life cycle: queued -> running -> done | failed | cancelled | interrupted, and the
records the client reads of jobs and build hosts.

cq-client imports this: NamedTuples, not dataclasses (see wire.Limits), and no protobuf
(wire.py converts at the edge).
"""

from __future__ import annotations

import enum
from typing import NamedTuple


class JobState(enum.StrEnum):  # a str: outcome.state == "done" holds
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"  # the command ran; exit_status tells how it went
    FAILED = "failed"  # it could not be started
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"  # the server stopped while it ran; never re-run silently

    @property
    def ended(self) -> bool:
        return self not in (JobState.QUEUED, JobState.RUNNING)


class Status(enum.IntEnum):
    """internal_status values. 0 means the command ran; negative ones say why it did not."""

    RAN = 0
    REFUSED = -1  # bad request, bad credential, not authorized, rejected by the hook
    EXEC_FAILED = -2  # the command could not be started
    INTERRUPTED = -3  # the server stopped while the job ran
    CANCELLED = -4
    NOT_FOUND = -5  # no such job
    SERVER_ERROR = -6  # e.g. munged unreachable on the server
    HOST_LOST = -7  # its build host went down while it ran, and again after a requeue
    DEPENDENCY_FAILED = -8  # a job in its `after` did not end DONE with exit status 0


class Result(NamedTuple):
    """How a job ended. exit_status is 128+N for a job killed by signal N."""

    state: JobState
    internal_status: int = Status.RAN
    exit_status: int = 0
    error: str | None = None

    @property
    def ok(self) -> bool:
        """What a job that runs after this one needs."""
        return (self.state == JobState.DONE and self.internal_status == Status.RAN
                and self.exit_status == 0)

    @property
    def how(self) -> str:
        """How it ended, in a few words: 'exit status 1', 'cancelled', ..."""
        if self.state == JobState.DONE:
            return f"exit status {self.exit_status}"
        return self.state.value


class RunAs(NamedTuple):
    """Whom a job runs as; None fields mean: as the server runs."""

    uid: int | None = None
    gid: int | None = None

    def __str__(self) -> str:
        return "server" if self.uid is None else f"{self.uid}:{self.gid}"


class JobInfo(NamedTuple):
    """A job as the server tells of it. None: the server did not say (not yet started,
    not ended, no place in the queue, ...)."""

    id: int
    state: JobState
    args: tuple[str, ...] = ()
    requester_uid: int = 0
    requester_gid: int = 0
    submitted: float = 0.0  # seconds since the epoch
    started: float | None = None
    finished: float | None = None
    internal_status: int | None = None  # once ended
    exit_status: int | None = None
    error: str | None = None
    position: int | None = None  # 1 = next to run; queued jobs that wait for no other
    waiters: int = 1  # submissions merged into it
    log_path: str | None = None
    dedupe_key: str | None = None
    run_as: str = "server"  # str(RunAs)
    host: str | None = None  # the build host that runs or ran it
    labels: tuple[str, ...] = ()  # what a build host must have to run it
    attempts: int = 0  # times started (> 1: requeued after a host went down)
    after: tuple[int, ...] = ()  # the jobs it waits for


class HostInfo(NamedTuple):
    """A build host as the server tells of it."""

    name: str
    url: str  # "local" or ssh://user@host:port
    labels: tuple[str, ...] = ()
    up: bool = True  # else probed until it answers again
    since: float = 0.0  # when it last went down or came back up
    error: str | None = None  # why it is down
    job_id: int | None = None  # the job it runs now
