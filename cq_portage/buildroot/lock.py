"""One writer per root: an exclusive flock on ROOTS/GROUP.lock for a whole command."""

from __future__ import annotations

import fcntl
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def locked(path: Path, group: str) -> Iterator[int]:
    """Open and lock `path`, saying so once if another command holds it; yields the fd.

    The lock lives as long as the open file: the runner hands the fd to the command too,
    so a command that outlives a killed cq-build-root still keeps the root to itself."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"cq-build-root: waiting for the build root of {group}", file=sys.stderr,
                  flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)
