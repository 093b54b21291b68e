"""How a command enters a root: the only part that differs between the two kinds.

Each kind says where the root sees its own EPREFIX, prepares what entering needs (mount
points), and turns the command's environment into Popen arguments. Nothing else here."""

from __future__ import annotations

import os
import re
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from . import mounts
from .host import HostPortage
from .roots import EXIT_FAILED, BuildRootError

# Gentoo's root PATH (env.d/50baselayout plus /opt/bin).
GENTOO_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/opt/bin"
# Variables that describe the host's processes or name host paths; a chroot's command gets
# the job's other variables (USE, ABI_X86, CQ_JOB_ID, ...).
HOST_VARIABLES = frozenset({
    "PATH", "HOME", "PWD", "OLDPWD", "SHELL", "MAIL", "TMPDIR", "TMP", "TEMP", "VIRTUAL_ENV",
    "PORTAGE_OVERRIDE_EPREFIX", "EPREFIX", "ROOT", "SYSROOT", "PORTAGE_CONFIGROOT",
    "_", "INVOCATION_ID", "JOURNAL_STREAM", "NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID"})
HOST_VARIABLE_PREFIXES = ("LD_", "XDG_", "DBUS_", "SSH_")
# The interpreter's own (PYTHONPATH, PYTHONHOME, ...), not Portage's PYTHON_TARGETS.
_PYTHON_VARIABLE = re.compile(r"PYTHON[A-Z]+")


class PrefixEntry:
    """A prefix is entered by pointing Portage at it; nothing else differs."""

    kind: ClassVar[str] = "prefix"

    def __init__(self, root: Path, host: HostPortage) -> None:
        self.root = root

    @property
    def inside(self) -> str:
        return str(self.root)

    def prepare(self) -> None:
        """Nothing: a prefix shares the host's filesystem."""

    def popen_args(self, env: dict[str, str]) -> dict[str, Any]:
        return {"env": {**env, "PORTAGE_OVERRIDE_EPREFIX": str(self.root)}}

    def why_not_started(self) -> str | None:
        return None


@dataclass
class ChrootEntry:
    """A chroot is entered in a private mount namespace made in the child before exec:
    the host's repositories (read-only), DISTDIR and PKGDIR bound at their own paths, /proc,
    /sys and /dev (with /dev/pts). The mounts vanish with the namespace's last process, so
    a kill -9 or a cancel leaves none behind."""

    kind: ClassVar[str] = "chroot"
    root: Path
    host: HostPortage
    _errors: tuple[int, int] | None = None  # the child's account of a failed entry

    @property
    def inside(self) -> str:
        return ""

    def mounts(self) -> list[mounts.Mount]:
        shared = [mounts.Mount("proc", self._target("/proc"), "proc",
                               flags=mounts.MS_NOSUID | mounts.MS_NODEV | mounts.MS_NOEXEC),
                  mounts.Mount("/sys", self._target("/sys"), recursive=True),
                  mounts.Mount("/dev", self._target("/dev"), recursive=True)]
        binds = {str(p): True for p in self.host.repositories().values()}
        binds.update({str(self.host.distdir): False, str(self.host.pkgdir): False})
        # Outer folders first, so a PKGDIR inside a repository lands on top of it.
        shared += [mounts.Mount(path, self._target(path), read_only=read_only)
                   for path, read_only in sorted(binds.items(), key=lambda b: b[0].count("/"))]
        return shared

    def _target(self, path: str) -> str:
        return str(self.root / path.lstrip("/"))

    def prepare(self) -> None:
        for path in (self.host.distdir, self.host.pkgdir):
            path.mkdir(parents=True, exist_ok=True)
        for mount in self.mounts():
            target = Path(mount.target)
            target.mkdir(parents=True, exist_ok=True)
            # A symlink in the root's tree (/var/run -> /run) would put the mount outside.
            if not Path(os.path.realpath(target)).is_relative_to(os.path.realpath(self.root)):
                raise BuildRootError(f"{target} leads out of the root (a symlink): the root's "
                                     "tree is broken", EXIT_FAILED)
        if os.path.isfile("/etc/resolv.conf"):  # fetching sources needs DNS
            (self.root / "etc").mkdir(exist_ok=True)
            resolv = self.root / "etc/resolv.conf"
            resolv.unlink(missing_ok=True)
            shutil.copyfile("/etc/resolv.conf", resolv)

    def popen_args(self, env: dict[str, str]) -> dict[str, Any]:
        clean = {k: v for k, v in env.items()
                 if k not in HOST_VARIABLES and not k.startswith(HOST_VARIABLE_PREFIXES)
                 and not _PYTHON_VARIABLE.fullmatch(k)}
        clean.update(PATH=GENTOO_PATH, HOME="/root")
        plan, root = self.mounts(), str(self.root)
        self._errors = errors_r, errors_w = os.pipe()  # close-on-exec: empty when it worked

        def enter() -> None:  # in the child, between fork and exec: no Python threads here
            try:
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                    signal.signal(sig, signal.SIG_DFL)
                mounts.unshare_mounts()
                for mount in plan:
                    mount.apply()
                os.chroot(root)
                os.chdir("/")
            except OSError as e:
                os.write(errors_w, str(e).encode())
                raise

        return {"env": clean, "preexec_fn": enter}

    def why_not_started(self) -> str | None:
        """After Popen (either way): what the child said when entering failed."""
        if self._errors is None:
            return None
        errors_r, errors_w = self._errors
        self._errors = None
        os.close(errors_w)
        with os.fdopen(errors_r, "rb") as pipe:
            text = pipe.read().decode(errors="replace").strip()
        return text or None


Entry = PrefixEntry | ChrootEntry
ENTRIES: dict[str, type[Entry]] = {"prefix": PrefixEntry, "chroot": ChrootEntry}


def entry_for(kind: str, root: Path, host: HostPortage) -> Entry:
    return ENTRIES[kind](root, host)
