"""Where cq-server's own log goes: stderr, a file (reopened after logrotate moves it), or
syslog. Jobs' output never goes here: each job has its own log file in the state dir."""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
import threading
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup(level: int, log_file: Path | None = None, syslog: bool = False) -> logging.Handler:
    if syslog:
        address = "/dev/log" if os.path.exists("/dev/log") else ("localhost", 514)
        handler: logging.Handler = logging.handlers.SysLogHandler(
            address, facility=logging.handlers.SysLogHandler.LOG_DAEMON)
        handler.setFormatter(logging.Formatter("cq-server[%(process)d]: %(message)s"))
    elif log_file:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.WatchedFileHandler(log_file)
        handler.setFormatter(logging.Formatter(FORMAT))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    quiet_paramiko(verbose=level <= logging.DEBUG)
    return handler


def quiet_paramiko(verbose: bool) -> None:
    """paramiko logs every connection at INFO and the tracebacks of its transport thread
    at ERROR (a host that does not answer); cq.ssh raises one-line errors for all that
    matters. -v shows paramiko's INFO (its DEBUG is packet-level noise, even then)."""
    logging.getLogger("paramiko").setLevel(logging.INFO if verbose else logging.CRITICAL)
    if not verbose and threading.excepthook is not _paramiko_thread_errors:
        threading.excepthook = _paramiko_thread_errors


def _paramiko_thread_errors(args: threading.ExceptHookArgs,
                            default=threading.excepthook) -> None:
    """An exception that ends one of paramiko's own threads (a channel closing on a host
    that went away: EOFError) goes to paramiko's log, not to stderr as a traceback; the
    connection's owner already says what happened in one line. Others print as usual."""
    tb = args.exc_traceback
    while tb is not None:
        if tb.tb_frame.f_globals.get("__name__", "").startswith("paramiko."):
            logging.getLogger("paramiko").debug("thread %s ended: %r",
                                                args.thread.name if args.thread else "?",
                                                args.exc_value)
            return
        tb = tb.tb_next
    default(args)
