"""Runners: one per build host, each running one job at a time, each result stored before it
is announced. Jobs block in a worker thread per host; the store is only touched from the
event loop. A host that goes down gets its running job requeued once, then failed."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .execution import HostDown, JobExecutor
from .hosts import BuildHost
from .job import HostInfo, JobState, Result, Status
from .serverjob import Job
from .store import Store

log = logging.getLogger(__name__)

STORE_RETRY_SECONDS = 1.0  # a full disk: how often to try recording a job's end again
MAX_ATTEMPTS = 2  # a job whose host went down is requeued once, then reported failed


@dataclass
class Runner:
    host: BuildHost
    store: Store
    executor: JobExecutor
    log_dir: Path
    on_end: Callable[[Job], None]  # told of every job that ended, after it is stored
    on_change: Callable[[], None]  # a job started or went back: other hosts may take one
    retry_seconds: float = 60.0
    running: Job | None = None
    down: str | None = None  # why the host is down; None: it is up
    since: float = field(default_factory=time.time)
    _wake: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    _stopping: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    _pool: ThreadPoolExecutor = field(init=False)

    def __post_init__(self) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=f"job-{self.host.name}")

    def wake(self) -> None:
        """Something was queued."""
        self._wake.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        if self.host.ssh is not None:
            await self._until_up(first=True)
        ended = None
        failing: str | None = None  # why the store refuses to record (a full disk)
        while not self._stopping.is_set():
            try:
                job = self.store.finish_and_start(ended, self.log_dir, self.host.name,
                                                  self.host.labels)  # one commit for both
            except sqlite3.Error as e:
                # The result stays here (the job shows as running) and is recorded once
                # the disk has room again; nothing new starts meanwhile.
                if failing is None:
                    log.error("%s: cannot record %s (%s); retrying every %gs", self.host.name,
                              f"the end of job {ended.id}" if ended else "the next job", e,
                              STORE_RETRY_SECONDS)
                failing = str(e)
                await self._pause(STORE_RETRY_SECONDS)
                continue
            if failing is not None:
                log.warning("%s: the job store records again", self.host.name)
                failing = None
            if ended is not None:
                self.running = None
                self.on_end(ended)
                ended = None
            if job is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            self.running = job
            self.on_change()
            try:
                job.result = await loop.run_in_executor(self._pool, self.executor.run, job)
            except HostDown as e:
                self.running = None
                self._host_down(job, e)
                await self._until_up()
                continue
            except Exception as e:  # a bug or an unforeseen fault: this job fails, not all
                log.error("job %d: internal error while running it: %s: %s", job.id,
                          type(e).__name__, e, exc_info=e)
                self.executor.stop("shutdown", grace=1)
                job.result = Result(JobState.FAILED, Status.SERVER_ERROR, 0,
                                    f"internal error in cq-server while running it "
                                    f"({type(e).__name__}: {e})")
            ended = job
        if ended is not None:  # stopping: record it, leave the queue as it is
            try:
                self.store.finish(ended)
            except sqlite3.Error as e:
                log.error("job %d ended (%s) but cannot be recorded (%s): the next start "
                          "reports it as interrupted", ended.id, ended.result.state.value, e)
            self.running = None
            self.on_end(ended)

    async def _pause(self, seconds: float) -> None:
        """`seconds`, or less if the server stops."""
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    def _host_down(self, job: Job, e: HostDown) -> None:
        self._mark_down(str(e))
        if not e.ran:
            job.attempts -= 1  # it never started there: this try does not count
        if job.attempts < MAX_ATTEMPTS:
            _note(job, f"build host {self.host.name} went down ({e}); the job goes back "
                       "into the queue")
            log.warning("job %d goes back into the queue: build host %s is down", job.id,
                        self.host.name)
            self.store.requeue(job)
            self.on_change()
            return
        reason = (f"its build host went down while it ran, {job.attempts} times (last: "
                  f"{self.host.name}: {e})")
        _note(job, reason)
        job.result = Result(JobState.FAILED, Status.HOST_LOST, 0, reason)
        self.store.finish(job)
        self.on_end(job)

    def _mark_down(self, reason: str) -> None:
        if self.down is None:
            log.warning("build host %s is down: %s", self.host.name, reason)
            self.since = time.time()
        self.down = reason

    async def _until_up(self, first: bool = False) -> None:
        """Try the host until it answers (now if `first`, else after retry_seconds)."""
        loop = asyncio.get_running_loop()
        if not first:
            await self._pause(self.retry_seconds)
        while not self._stopping.is_set():
            try:
                await loop.run_in_executor(self._pool, self.executor.check)
            except HostDown as e:
                self._mark_down(str(e))
                await self._pause(self.retry_seconds)
                continue
            if self.down is not None:
                log.warning("build host %s is up again", self.host.name)
                self.down, self.since = None, time.time()
            return

    async def stop(self, grace: float) -> None:
        """Start nothing more; let the running job finish within `grace` seconds, then
        interrupt it (it is recorded as interrupted, never re-run)."""
        self._stopping.set()
        self._wake.set()
        job = self.running
        if job is not None:
            log.info("waiting up to %gs for job %d to finish on %s", grace, job.id,
                     self.host.name)
            deadline = time.monotonic() + grace
            while self.running is job and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if self.running is job:
                self.executor.stop("shutdown", grace=5)
            deadline = time.monotonic() + 10  # bounded even if run() has died
            while self.running is job and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        self.executor.close()
        self._pool.shutdown()

    def info(self) -> HostInfo:
        return HostInfo(self.host.name, self.host.url, tuple(sorted(self.host.labels)),
                        up=not self.down, since=self.since, error=self.down or None,
                        job_id=self.running.id if self.running is not None else None)


def _note(job: Job, text: str) -> None:
    """A line in the job's log, where its output stops: why it did."""
    try:
        fd = os.open(job.log_path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC)
        with open(fd, "ab") as f:
            f.write(f"\ncq: {text}\n".encode())
    except OSError as e:
        log.warning("job %d: cannot write to its log: %s", job.id, e)


@dataclass
class Runners:
    """The build hosts' runners, as one."""

    runners: list[Runner]

    def wake(self) -> None:
        for runner in self.runners:
            runner.wake()

    def running(self, job_id: int) -> Runner | None:
        return next((r for r in self.runners if r.running and r.running.id == job_id), None)

    def accepts(self, labels: tuple[str, ...]) -> bool:
        return any(r.host.accepts(labels) for r in self.runners)

    def describe(self) -> str:
        return ", ".join(f"{r.host.name} [{' '.join(sorted(r.host.labels))}]"
                         for r in self.runners)

    async def run(self) -> None:
        await asyncio.gather(*(r.run() for r in self.runners))

    async def stop(self, grace: float) -> None:
        await asyncio.gather(*(r.stop(grace) for r in self.runners))

    def infos(self) -> list[HostInfo]:
        return [r.info() for r in self.runners]
