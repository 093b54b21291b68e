"""The serial runner: one job at a time, in arrival order, each result stored before it is
announced. Jobs block in a worker thread; the store is only touched from the event loop."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .executor import Executor
from .job import Job
from .store import Store

log = logging.getLogger(__name__)


@dataclass
class Runner:
    store: Store
    executor: Executor
    log_dir: Path
    on_end: Callable[[Job], None]  # told of every job that ended, after it is stored
    running: Job | None = None
    _wake: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    _stopping: bool = field(default=False, init=False)
    _pool: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="job"), init=False)

    def wake(self) -> None:
        """Something was queued."""
        self._wake.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        ended = None
        while True:
            job = self.store.finish_and_start(ended, self.log_dir)  # one commit for both
            if ended is not None:
                self.running = None
                self.on_end(ended)
                ended = None
            if job is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            self.running = job
            job.result = await loop.run_in_executor(self._pool, self.executor.run, job)
            ended = job
            if self._stopping:  # leave the queue as it is
                self.store.finish(job)
                self.running = None
                self.on_end(job)
                return

    async def stop(self, grace: float) -> None:
        """Start nothing more; let the running job finish within `grace` seconds, then
        interrupt it (it is recorded as interrupted, never re-run)."""
        self._stopping = True
        job = self.running
        if job is not None:
            log.info("waiting up to %gs for job %d to finish", grace, job.id)
            deadline = time.monotonic() + grace
            while self.running is job and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if self.running is job:
                self.executor.stop("shutdown", grace=5)
            while self.running is job:
                await asyncio.sleep(0.05)
        self._pool.shutdown()
