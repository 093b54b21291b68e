"""The state dir is not trusted blindly: checked at start as sshd's StrictModes checks a home,
created tight (dirs 0750, files 0640), and entered without following symbolic links, so that
a link planted in it is refused instead of followed to a file outside it."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
from pathlib import Path

DIR_MODE = 0o750
FILE_MODE = 0o640
NOFOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafeStateDir(OSError):
    """One line: which path, what is wrong with it, what to do."""

    def __init__(self, message: str):
        super().__init__(message)
        self.strerror = message


class DamagedStore(Exception):
    """cq.db cannot be read as an SQLite database (one line, with what to do)."""


def disk_failing(e: BaseException) -> bool:
    """SQLite's "database or disk is full" or "disk I/O error": the state dir's file system,
    not the request, is at fault."""
    return isinstance(e, sqlite3.Error) and (getattr(e, "sqlite_errorcode", 0) & 0xFF) in (
        sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR)


def check_dir(path: Path, what: str) -> None:
    """Refuse a dir that another user owns or may write to (mode 0777, 1777, 0770...)."""
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        st = os.stat(path)  # the admin may point /var/lib/cq elsewhere; the target is checked
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeStateDir(f"{what} {path} is not a directory")
    if st.st_uid != os.geteuid():
        raise UnsafeStateDir(f"{what} {path} is owned by uid {st.st_uid}, not by the server's "
                             f"uid {os.geteuid()}: chown it")
    if st.st_mode & 0o022:
        raise UnsafeStateDir(f"{what} {path} may be written by other users (mode "
                             f"{stat.S_IMODE(st.st_mode):04o}): chmod {DIR_MODE:04o} {path}")


def prepare(state_dir: Path) -> None:
    """Create the state dir and its logs dir if missing (0750), then check both, and that
    the store and the running file, if there, are plain files rather than links."""
    for path, what in ((state_dir, "state dir"), (state_dir / "logs", "log dir")):
        if not os.path.lexists(path):
            path.mkdir(mode=DIR_MODE, parents=True)
        check_dir(path, what)
    for name in ("cq.db", "cq.db-wal", "cq.db-shm", "running"):
        path = state_dir / name
        if os.path.lexists(path) and not stat.S_ISREG(os.lstat(path).st_mode):
            raise UnsafeStateDir(f"{path} is not a plain file (a symbolic link?): refused; "
                                 "remove it")


def create_store(path: Path) -> None:
    """An empty store file with mode 0640 (SQLite gives its -wal and -shm the same mode)."""
    os.close(os.open(path, os.O_RDWR | os.O_CREAT | NOFOLLOW, FILE_MODE))


def check_store(path: Path) -> None:
    """Raise DamagedStore, naming the file and what to do, if cq.db is not a sound database."""
    if not path.exists():
        return
    try:
        with contextlib.closing(sqlite3.connect(path)) as db:
            result = db.execute("PRAGMA quick_check").fetchone()[0]
    except sqlite3.DatabaseError as e:
        result = str(e)
    if result != "ok":
        raise DamagedStore(
            f"job store {path} is damaged ({result.splitlines()[0]}): move it aside (with its "
            f"-wal and -shm files) and start again with an empty queue; the job logs in "
            f"{path.parent / 'logs'} stay")


def open_under(root: Path, path: str | Path, flags: int, mode: int = FILE_MODE,
               mkdir: bool = False) -> int:
    """os.open() `path`, which lies under the trusted `root`, following no symbolic link on
    the way (a planted one raises ELOOP or ENOTDIR); with `mkdir`, missing dirs are made."""
    parts = Path(path).relative_to(root).parts
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts[:-1]:
            if mkdir:
                with contextlib.suppress(FileExistsError):  # a link there: refused below
                    os.mkdir(part, DIR_MODE, dir_fd=fd)
            sub = os.open(part, os.O_RDONLY | os.O_DIRECTORY | NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = sub
        return os.open(parts[-1], flags | NOFOLLOW, mode, dir_fd=fd)
    finally:
        os.close(fd)
