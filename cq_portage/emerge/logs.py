"""cq-emerge's own logs (STATE_DIR/logs: install logs, detached and fleet runs) pruned by
age, as cq-server forgets finished jobs after keep_finished_days: every run appends new
files there, and nothing else ever removes them."""

from __future__ import annotations

import logging
import time
from pathlib import Path

log = logging.getLogger(__name__)
DAY = 86400.0


def prune_logs(log_dir: Path, keep_days: float, now: float | None = None) -> int:
    """Remove files under `log_dir` last written more than `keep_days` ago, and the folders
    (a fleet host's) that this empties or that stood empty as long; returns how many files
    went. A file that cannot be removed is one warning, never a failed run."""
    cutoff = (time.time() if now is None else now) - keep_days * DAY
    removed = 0
    emptied: set[Path] = set()
    try:
        paths = sorted(log_dir.rglob("*"), key=lambda p: len(p.parts), reverse=True)
    except OSError:
        return 0  # no log dir yet
    for path in paths:  # deepest first, so that a folder is looked at after its files
        try:
            if path.is_dir() and not path.is_symlink():
                if (path in emptied or path.lstat().st_mtime < cutoff) \
                        and not any(path.iterdir()):
                    path.rmdir()
                    emptied.add(path.parent)
            elif path.lstat().st_mtime < cutoff:
                path.unlink()
                removed += 1
                emptied.add(path.parent)
        except FileNotFoundError:
            continue  # another run pruned it first
        except OSError as error:
            log.warning("cannot prune old log %s: %s", path, error.strerror)
    return removed
