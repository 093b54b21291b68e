"""Process checks for tests, benchmarks and the demo."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Self


def running(pid: int) -> bool:
    """Running, as opposed to gone or a zombie waiting for a reaper (containers whose init
    does not reap leave those behind)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return pid > 0 and f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_listening(process: subprocess.Popen, port: int, log: Path, what: str,
                   timeout: float, on_timeout: Callable[[], None] = lambda: None) -> None:
    """Until `process` accepts connections on 127.0.0.1:`port`; its log's tail if it dies."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited: {log.read_text()[-2000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        if time.monotonic() > deadline:
            on_timeout()
            raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port}")
        time.sleep(0.02)


def stop_process(process: subprocess.Popen | None, sig: int = signal.SIGTERM,
                 timeout: float = 10.0) -> None:
    """Send `sig` and wait; kill -9 what has not exited after `timeout`."""
    if process and process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Daemon:
    """A throwaway server process: `with Daemon(...) as d:` starts it and stops it after."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> object:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
