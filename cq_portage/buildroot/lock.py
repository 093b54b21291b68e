"""One writer per root: an exclusive flock on ROOTS/GROUP.lock for a whole command."""

from __future__ import annotations

import fcntl
import os
import sys
from pathlib import Path


def acquire(path: Path, group: str) -> int:
    """Open and lock `path`, saying so once if another command holds it; returns the fd.

    The lock lives as long as the open file: the runner hands the fd to the command too,
    so a command that outlives a killed cq-build-root still keeps the root to itself."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"cq-build-root: waiting for the build root of {group}", file=sys.stderr,
              flush=True)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
    return fd
