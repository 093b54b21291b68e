"""Deleting a root: never while something is mounted below it, never across a filesystem."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from . import mounts
from .roots import EXIT_FAILED, BuildRootError


def check_unmounted(path: Path) -> None:
    """Refuse while this namespace has a mount at or below `path` (a bind the admin made,
    a chroot set up by hand): deleting would reach into what it shows."""
    found = [p for p in mounts.below(mounts.mount_points(), path) if p != str(path)]
    if found:
        more = f" and {len(found) - 1} more" if len(found) > 1 else ""
        raise BuildRootError(f"{found[0]}{more} is mounted below the build root {path}: "
                             "unmount it first", EXIT_FAILED)


def remove_tree(path: Path, last: tuple[str, ...] = ()) -> None:
    """rm -rf that stays on the filesystem of `path` (a mount that appeared after the check
    is left alone, and reported); symlinks are removed, never followed. The top-level
    entries named in `last` (the root's markers) go only once all else is gone, so a
    removal that stopped half-way leaves a folder still known as a root."""
    device = os.lstat(path).st_dev
    skipped: list[str] = []
    _remove_below(path, device, skipped, keep=set(last))
    if skipped:
        raise BuildRootError(f"{skipped[0]} is another filesystem: left in place, with the "
                             f"root's folders above it", EXIT_FAILED)
    for name in last:
        (path / name).unlink(missing_ok=True)
    os.rmdir(path)


def _remove_below(folder: Path, device: int, skipped: list[str],
                  keep: set[str] = frozenset()) -> None:
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name in keep:
                continue
            info = entry.stat(follow_symlinks=False)
            if stat.S_ISDIR(info.st_mode):
                if info.st_dev != device:
                    skipped.append(entry.path)
                    continue
                _remove_below(Path(entry.path), device, skipped)
                if not any(s.startswith(entry.path + "/") for s in skipped):
                    os.rmdir(entry.path)
            else:
                os.unlink(entry.path)
