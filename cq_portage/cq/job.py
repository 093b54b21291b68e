"""A job and its life cycle: queued -> running -> done | failed | cancelled | interrupted."""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import dataclass, field

from . import cq_pb2 as pb
from .wire import Status


class JobState(enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"  # the command ran; exit_status tells how it went
    FAILED = "failed"  # it could not be started
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"  # the server stopped while it ran; never re-run silently

    @property
    def ended(self) -> bool:
        return self not in (JobState.QUEUED, JobState.RUNNING)

    @property
    def wire(self) -> int:
        return pb.JobState.Value(self.name)


@dataclass(frozen=True)
class Result:
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


@dataclass(frozen=True)
class RunAs:
    """Whom a job runs as; None fields mean: as the server runs."""

    uid: int | None = None
    gid: int | None = None

    def __str__(self) -> str:
        return "server" if self.uid is None else f"{self.uid}:{self.gid}"


@dataclass
class Job:
    command: str
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = field(repr=False)  # may hold secrets
    requester_uid: int
    requester_gid: int
    run_as: RunAs = RunAs()
    dedupe_key: str | None = None
    id: int | None = None
    state: JobState = JobState.QUEUED
    submitted: float = 0.0
    started: float | None = None
    finished: float | None = None
    result: Result | None = None
    waiters: int = 1
    log_path: str | None = None
    labels: tuple[str, ...] = ()  # a build host must have all of them to run it
    host: str | None = None  # the build host that runs or ran it
    attempts: int = 0  # times started: a job whose host went down is requeued once
    after: tuple[int, ...] = ()  # jobs that must end DONE with exit status 0 before it starts
    unmet: int = 0  # how many of them have not ended yet: it waits while > 0

    @property
    def key(self) -> str:
        """What makes two submissions the same work: command line, environment, user."""
        what = [self.command, self.argv, sorted(dict(self.env).items()), self.run_as.uid,
                self.run_as.gid]
        if self.labels:  # another architecture is other work (no labels: keys as before)
            what.append(self.labels)
        blob = json.dumps(what)
        return hashlib.sha256(blob.encode()).hexdigest()

    def info(self, position: int | None = None) -> pb.job_info:
        msg = pb.job_info(id=self.id, state=self.state.wire, args=self.argv,
                          requester_uid=self.requester_uid, requester_gid=self.requester_gid,
                          submitted=self.submitted, waiters=self.waiters,
                          run_as=str(self.run_as), labels=self.labels,
                          attempts=self.attempts, after=self.after)
        for name in ("started", "finished", "log_path", "dedupe_key", "host"):
            if getattr(self, name) is not None:
                setattr(msg, name, getattr(self, name))
        if self.result:
            msg.internal_status = self.result.internal_status
            msg.exit_status = self.result.exit_status
            if self.result.error:
                msg.error = self.result.error
        if position is not None:
            msg.position = position
        return msg
