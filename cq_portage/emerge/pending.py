"""What this host has asked the build host for, so that nothing is built or waited for twice.

One JSON file per group under the state dir (EPREFIX/var/lib/cq-portage by default), keyed
by the build's dedupe key: the job id the server gave it. A run that finds a key here reuses
the job (still queued, running, or built) instead of submitting it again, which is how a
client that detached, or was off when its builds finished, picks up where it left off. A
lock file keeps two cq-emerge runs for one group on one host from overlapping.

A local group's file is GROUP.json; builds without installs and fleet mode have their own
(state_name), which no group's name can equal. A damaged file is moved aside with one line
and the run goes on as if it were empty: the server merges what is submitted again.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

STATE_DIR = "var/lib/cq-portage"  # under EROOT: pending jobs, their locks, install logs
MAX_JOB_ID = (1 << 63) - 1  # what the server's store can hold
MAX_BYTES = 64 << 20  # far beyond any real file: past it, one is damaged, not read

log = logging.getLogger(__name__)


def state_name(kind: str, groups) -> str:
    """The state of a run that is not one local group's: kind "build" (builds only) or
    "fleet". '@' is not allowed in a group's name, so a group named fleet-web keeps its own
    fleet-web.json and never shares one with fleet mode for the group web."""
    return f"{kind}@" + "+".join(g.name for g in groups)


class Busy(Exception):
    """Another cq-emerge holds the group's lock."""


@dataclass
class Pending:
    path: Path
    jobs: dict[str, int] = field(default_factory=dict)  # dedupe key -> job id
    _lock_fd: int | None = field(default=None, repr=False)

    @classmethod
    def open(cls, state_dir: Path, group: str) -> "Pending":
        """Lock the group's state and load it; raises Busy when another run holds it."""
        state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(state_dir / f"{group}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise Busy(f"another cq-emerge for group {group} is running (pid {holder})") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        pending = cls(state_dir / f"{group}.json", _lock_fd=fd)
        try:
            pending.jobs = _read(pending.path)
        except FileNotFoundError:
            pass
        except Exception as e:  # damaged: it only costs a resubmission, never the run
            pending._move_aside(e)
        return pending

    def _move_aside(self, e: Exception) -> None:
        aside = self.path.with_name(f"{self.path.name}.damaged-{int(time.time())}")
        why = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        try:
            os.replace(self.path, aside)
        except OSError as moving:
            self.close()  # the lock is not kept by a run that cannot go on
            raise RuntimeError(f"damaged pending file {self.path} ({why}) cannot be moved "
                               f"aside: {moving.strerror}") from None
        log.warning("damaged pending file %s (%s) moved aside to %s; its builds are "
                    "submitted again", self.path, why, aside)

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"jobs": self.jobs}, indent=1, sort_keys=True))
        os.replace(tmp, self.path)

    def forget(self, keys) -> None:
        for key in keys:
            self.jobs.pop(key, None)

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> "Pending":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _read(path: Path) -> dict[str, int]:
    """{dedupe key: job id} from `path`; ValueError when it is anything else."""
    with open(path, "rb") as f:  # a directory raises IsADirectoryError here
        data = f.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise ValueError(f"larger than {MAX_BYTES} bytes")
    try:
        doc = json.loads(data)
    except RecursionError:
        raise ValueError("nested too deep") from None
    jobs = doc.get("jobs", {}) if isinstance(doc, dict) else None
    if not isinstance(jobs, dict):
        raise ValueError("no mapping of jobs")
    for key, value in jobs.items():
        if type(value) is not int or not 0 < value <= MAX_JOB_ID:
            raise ValueError(f"job id {str(value)[:40]} for {key[:80]!r} is not a job id")
    return dict(jobs)
