"""A cq-emerge run for some groups, started in the background (its own session, output
appended to a log file): what --detach and the postsync hook hand their work to.

The postsync hook's run gets two more things. A clean environment: Portage runs hooks
with its whole configuration exported, and exported USE_EXPAND variables (PYTHON_TARGETS,
L10N, CPU_FLAGS_*...) beat package.use, so planning in that environment could undo what
the nightly or an interactive run installed. And a wait: `emaint sync` moves packages
(package moves over the vdb and PKGDIR) after the hooks, so the run starts only once the
syncing process has exited. `python -m cq_portage.emerge.background` is that waiter.
"""

from __future__ import annotations

import argparse
import os
import select
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

# What a hook-started run keeps of its environment; everything else is Portage's.
KEEP_ENV = ("PATH", "HOME", "LANG", "TERM", "PORTAGE_OVERRIDE_EPREFIX")
KEEP_ENV_PREFIXES = ("LC_", "CQ_PORTAGE_")
# Kept only when they point somewhere else than the default ("" or "/").
KEEP_ENV_UNLESS_ROOT = ("ROOT", "PORTAGE_CONFIGROOT", "SYSROOT")
POLL_SECONDS = 0.5  # how often a process without a pidfd is looked at


def clean_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The whitelisted part of `environ`, for a run that must plan like cron does."""
    env = {k: v for k, v in environ.items()
           if k in KEEP_ENV or k.startswith(KEEP_ENV_PREFIXES)}
    env.update({k: environ[k] for k in KEEP_ENV_UNLESS_ROOT
                if environ.get(k, "").strip().rstrip("/")})
    return env


def start_update(config_path: Path, groups: Iterable[str], log_file: Path, why: str, *,
                 environ: Mapping[str, str] | None = None, after_pid: int | None = None
                 ) -> None:
    """Start cq-emerge for `groups` in the background; `environ` replaces the inherited
    environment, and with `after_pid` it plans only once that process has exited."""
    groups = list(groups)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "cq_portage.emerge.cli", "--config", str(config_path),
            "--quiet", *[a for g in groups for a in ("--group", g)]]
    pass_fds: tuple[int, ...] = ()
    if after_pid is not None:
        pidfd = _pidfd(after_pid)
        pass_fds = () if pidfd is None else (pidfd,)
        argv = [sys.executable, "-m", "cq_portage.emerge.background", "--after-pid",
                str(after_pid), *(["--pidfd", str(pidfd)] if pidfd is not None else []),
                "--", *argv]
    with open(log_file, "ab") as out:
        out.write(f"--- {_now()} {why}: cq-emerge for {', '.join(groups)}\n".encode())
        out.flush()
        subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                         start_new_session=True, env=None if environ is None else dict(environ),
                         pass_fds=pass_fds)
    for fd in pass_fds:
        os.close(fd)


def _pidfd(pid: int) -> int | None:
    """A pidfd for `pid` (Linux 5.3+): it cannot be confused with a later process that is
    given the same pid. None when there is none (old kernel, or it has exited already)."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def wait_for_exit(pid: int, pidfd: int | None) -> None:
    if pidfd is not None:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)  # readable once the process has exited
        while not poller.poll():
            pass
        os.close(pidfd)
        return
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        except PermissionError:
            pass  # alive, another user's
        time.sleep(POLL_SECONDS)


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cq_portage.emerge.background",
        description="Wait until process PID has exited, then run COMMAND (in its place).")
    parser.add_argument("--after-pid", type=int, required=True, metavar="PID")
    parser.add_argument("--pidfd", type=int, metavar="FD", help="a pidfd of PID, inherited")
    parser.add_argument("command", nargs="+", metavar="COMMAND")
    args = parser.parse_args(argv)
    print(f"--- {_now()} waiting for the syncing process (pid {args.after_pid}) to exit",
          flush=True)
    wait_for_exit(args.after_pid, args.pidfd)
    print(f"--- {_now()} the syncing process (pid {args.after_pid}) has exited: planning",
          flush=True)
    try:
        os.execvp(args.command[0], args.command)
    except OSError as error:
        print(f"cq-emerge: cannot run {args.command[0]}: {error.strerror}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
