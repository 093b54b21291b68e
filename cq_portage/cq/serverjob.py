"""The server's job: what it stores, runs and changes as the job goes through its life cycle."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from .job import JobInfo, JobState, Result, RunAs


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

    def info(self, position: int | None = None) -> JobInfo:
        r = self.result  # None until it ends: no statuses yet
        return JobInfo(id=self.id, state=self.state, args=self.argv,
                       requester_uid=self.requester_uid, requester_gid=self.requester_gid,
                       submitted=self.submitted, started=self.started, finished=self.finished,
                       internal_status=r and r.internal_status, exit_status=r and r.exit_status,
                       error=r and r.error or None, position=position, waiters=self.waiters,
                       log_path=self.log_path, dedupe_key=self.dedupe_key,
                       run_as=str(self.run_as), host=self.host, labels=self.labels,
                       attempts=self.attempts, after=self.after)
