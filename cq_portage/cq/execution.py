"""What runs a build host's jobs, as its runner sees it: executor.py here, remote.py over
SSH, and the names both keep to."""

from __future__ import annotations

from typing import Protocol

from .job import JobState, Result, Status
from .serverjob import Job

JOB_ID_VAR = "CQ_JOB_ID"  # in every job's environment: the job knows its id, and so do we
STOP_REASONS = {"cancel": "cancelled while running",
                "shutdown": "the server shut down while the job ran; it was not re-run"}


def stopped(why: str, exit_status: int) -> Result:
    """The end of a job stopped on request (why: a key of STOP_REASONS)."""
    if why == "cancel":
        return Result(JobState.CANCELLED, Status.CANCELLED, exit_status, STOP_REASONS[why])
    return Result(JobState.INTERRUPTED, Status.INTERRUPTED, exit_status, STOP_REASONS[why])


class HostDown(Exception):
    """The build host failed us; `ran`: the job may have started there (else it surely
    did not, and requeueing it costs it nothing)."""

    def __init__(self, message: str, ran: bool):
        super().__init__(message)
        self.ran = ran


class JobExecutor(Protocol):
    def run(self, job: Job) -> Result: ...  # may raise HostDown
    def stop(self, why: str, grace: float) -> bool: ...  # why: a key of STOP_REASONS
    def check(self) -> None: ...  # raises HostDown when the host does not answer
    def close(self) -> None: ...
