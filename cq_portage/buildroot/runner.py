"""Runs one command in a root: signals forwarded, the shell's exit statuses.

No new session or process group: cq-server stops a job by signalling the job's process
group, and that must reach the command (and all it started) directly, not only through us."""

from __future__ import annotations

import signal
import subprocess
import sys

from .roots import EXIT_FAILED, BuildRootError

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
EXIT_NOT_FOUND = 127
EXIT_NOT_EXECUTABLE = 126


class Stopped(Exception):
    """A forwarded signal arrived before the command started: stop as it would have."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.status = 128 + signum


class Forwarder:
    """Until the command is being started, a forwarded signal stops us (Stopped); while
    Popen runs it is kept (raising there would orphan the child); once the command runs,
    it goes to the command, whose end ends us."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.starting = False
        self.pending: list[int] = []
        self._previous: dict = {}

    def __enter__(self) -> "Forwarder":
        self._previous = {sig: signal.signal(sig, self._handle) for sig in FORWARDED}
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self._previous.items():
            signal.signal(sig, old)

    def _handle(self, signum: int, _frame) -> None:
        if self.proc is not None:
            _send(self.proc, signum)
        elif self.starting:
            self.pending.append(signum)
        else:
            raise Stopped(signum)

    def started(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        for signum in self.pending:  # they reached us only, while Popen ran
            _send(proc, signum)


def _send(proc: subprocess.Popen, signum: int) -> None:
    try:
        proc.send_signal(signum)
    except ProcessLookupError:
        pass


def run(argv: list[str], popen_args: dict, entry, lock_fd: int, forwarder: Forwarder) -> int:
    """Start `argv` as the entry says, wait, return its exit status (killed by N: 128+N).
    The lock's fd goes to the command too, so the root stays locked while it lives."""
    forwarder.starting = True
    try:
        proc = subprocess.Popen(argv, pass_fds=(lock_fd,), **popen_args)
    except FileNotFoundError:
        _report_entry(entry)
        print(f"cq-build-root: {argv[0]}: command not found in the build root",
              file=sys.stderr)
        return EXIT_NOT_FOUND
    except PermissionError:
        _report_entry(entry)
        print(f"cq-build-root: {argv[0]}: permission denied", file=sys.stderr)
        return EXIT_NOT_EXECUTABLE
    except subprocess.SubprocessError as e:  # preexec_fn failed: entering the root did
        why = entry.why_not_started() or str(e)
        raise BuildRootError(f"cannot enter the build root: {why}", EXIT_FAILED)
    except OSError as e:  # exec failed (ELOOP, ENOEXEC, ...): the shell says 126
        _report_entry(entry)
        print(f"cq-build-root: cannot run {argv[0]} in the build root: "
              f"{e.strerror or e}", file=sys.stderr)
        return EXIT_NOT_EXECUTABLE
    entry.why_not_started()  # closes the error pipe: the command runs
    forwarder.started(proc)
    returncode = proc.wait()
    return 128 - returncode if returncode < 0 else returncode


def _report_entry(entry) -> None:
    """Entering may have failed before exec did: say so first."""
    why = entry.why_not_started()
    if why:
        raise BuildRootError(f"cannot enter the build root: {why}", EXIT_FAILED)
