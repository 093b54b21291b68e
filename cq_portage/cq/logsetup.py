"""Where cq-server's own log goes: stderr, a file (reopened after logrotate moves it), or
syslog. Jobs' output never goes here: each job has its own log file in the state dir."""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
from pathlib import Path

from ..ssh import quiet_paramiko

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup(level: int, log_file: Path | None = None, syslog: bool = False) -> logging.Handler:
    if syslog:
        address = "/dev/log" if os.path.exists("/dev/log") else ("localhost", 514)
        handler: logging.Handler = logging.handlers.SysLogHandler(
            address, facility=logging.handlers.SysLogHandler.LOG_DAEMON)
    elif log_file:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.WatchedFileHandler(log_file)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("cq-server[%(process)d]: %(message)s" if syslog
                                           else FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    quiet_paramiko(verbose=level <= logging.DEBUG)
    return handler
