"""A throwaway munged: generated key, socket in a folder of its own."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from .processes import Daemon, stop_process


def _find(binary: str) -> str:
    for folder in (os.environ.get("PATH", ""), "/usr/sbin", "/sbin", "/usr/local/sbin"):
        found = shutil.which(binary, path=folder)
        if found:
            return found
    raise FileNotFoundError(f"{binary} not found: install munge (Debian: apt-get install munge)")


@dataclass
class Munged(Daemon):
    """One munged process. `socket` is what pymunge and cq-server's --munge-socket take."""

    folder: Path
    key: Path | None = None  # share a key to make two daemons one realm
    threads: int = 2
    mode: int = 0o700  # 0o755 lets other users (a test's unprivileged client) reach the socket
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def socket(self) -> str:
        return str(self.folder / "munge.socket")

    def start(self, timeout: float = 10.0) -> "Munged":
        self.folder.mkdir(parents=True, exist_ok=True)
        os.chmod(self.folder, self.mode)
        if self.key is None:
            self.key = self.folder / "munge.key"
            subprocess.run([_find("mungekey"), "--create", "--keyfile", str(self.key)],
                           check=True, capture_output=True)
            os.chmod(self.key, 0o400)
        self.process = subprocess.Popen(
            [_find("munged"), "--foreground", "--force",
             f"--key-file={self.key}", f"--socket={self.socket}",
             f"--pid-file={self.folder / 'munged.pid'}",
             f"--seed-file={self.folder / 'munged.seed'}",
             f"--log-file={self.folder / 'munged.log'}",
             f"--num-threads={self.threads}"],
            stdout=subprocess.DEVNULL, stderr=open(self.folder / "munged.err", "wb"))
        deadline = time.monotonic() + timeout
        while not os.path.exists(self.socket):
            if self.process.poll() is not None or time.monotonic() > deadline:
                err = (self.folder / "munged.err").read_text(errors="replace").strip()
                self.stop()
                raise RuntimeError(f"munged did not start: {err or 'no socket'}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        stop_process(self.process, timeout=5)
        self.process = None
