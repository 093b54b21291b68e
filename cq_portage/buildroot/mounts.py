"""The few mount(2)-family calls a chroot entry needs (through ctypes: Python 3.11 has no
os.unshare), and reading /proc/*/mountinfo to see what is mounted where."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
from dataclasses import dataclass
from pathlib import Path

CLONE_NEWNS = 0x00020000
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_void_p)
_libc.unshare.argtypes = (ctypes.c_int,)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def unshare_mounts() -> None:
    """A private mount namespace for this process: what it mounts vanishes with the last
    process in it, and / made rprivate keeps every mount from propagating to the host."""
    _check(_libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    mount(None, "/", None, MS_REC | MS_PRIVATE)


def mount(source: str | None, target: str, fstype: str | None, flags: int) -> None:
    _check(_libc.mount(source.encode() if source else None, target.encode(),
                       fstype.encode() if fstype else None, flags, None),
           f"mount {source or ''} on {target}")


@dataclass(frozen=True)
class Mount:
    """One mount of a chroot entry: a fresh filesystem (fstype) or a bind of a host path."""

    source: str
    target: str  # absolute, on the host (ROOT + the path inside)
    fstype: str | None = None  # None: a bind mount
    recursive: bool = False
    read_only: bool = False
    flags: int = 0

    def apply(self) -> None:
        if self.fstype:
            mount(self.source, self.target, self.fstype, self.flags)
            return
        mount(self.source, self.target, None, MS_BIND | (MS_REC if self.recursive else 0))
        if self.read_only:  # a bind takes no flags on the first call: remount it read-only
            mount(None, self.target, None, MS_BIND | MS_REMOUNT | MS_RDONLY)


_ESCAPE = re.compile(r"\\([0-7]{3})")


def mount_points(pid: str = "self") -> list[str]:
    """The mount points that process `pid` sees (its mount namespace's)."""
    try:
        text = Path(f"/proc/{pid}/mountinfo").read_text()
    except OSError:  # gone, or not ours to read
        return []
    return [_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), line.split()[4])
            for line in text.splitlines() if len(line.split()) > 4]


def below(points: list[str], path: Path) -> list[str]:
    """Those of `points` at or below `path`."""
    top = str(path).rstrip("/") + "/"
    return [p for p in points if p == top.rstrip("/") or p.startswith(top)]


def mounted_anywhere(path: Path) -> dict[int, list[str]]:
    """pid -> mount points at or below `path` in that process's mount namespace, over
    every process: what a job's namespace still holds. A chrooted process's mountinfo names
    mount points from its own root, so they are put back under it."""
    found: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            root = os.readlink(entry / "root")
        except OSError:  # gone meanwhile, or a kernel thread
            continue
        points = [p if root == "/" else root.rstrip("/") + p
                  for p in mount_points(entry.name)]
        hits = below(points, path)
        if hits:
            found[int(entry.name)] = hits
    return found
