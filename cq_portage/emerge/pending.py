"""What this host has asked the build host for, so that nothing is built or waited for twice.

One JSON file per group under the state dir (EPREFIX/var/lib/cq-portage by default), keyed
by the build's dedupe key: the job id the server gave it. A run that finds a key here reuses
the job (still queued, running, or built) instead of submitting it again, which is how a
client that detached, or was off when its builds finished, picks up where it left off. A
lock file keeps two cq-emerge runs for one group on one host from overlapping.
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

STATE_DIR = "var/lib/cq-portage"  # under EROOT: pending jobs, their locks, install logs


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
            pending.jobs = {str(k): int(v) for k, v in
                            json.loads(pending.path.read_text()).get("jobs", {}).items()}
        except FileNotFoundError:
            pass
        except (ValueError, AttributeError):  # a damaged file only costs a resubmission
            pending.jobs = {}
        return pending

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
