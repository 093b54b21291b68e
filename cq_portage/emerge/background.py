"""A cq-emerge run for some groups, started in the background (its own session, output
appended to a log file): what --detach and the postsync hook hand their work to."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path


def start_update(config_path: Path, groups: Iterable[str], log_file: Path, why: str) -> None:
    groups = list(groups)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "cq_portage.emerge.cli", "--config", str(config_path),
            "--quiet", *[a for g in groups for a in ("--group", g)]]
    with open(log_file, "ab") as out:
        out.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {why}: cq-emerge for "
                  f"{', '.join(groups)}\n".encode())
        out.flush()
        subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                         start_new_session=True)
