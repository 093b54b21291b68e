"""A throwaway cq-server process on 127.0.0.1, for tests, benchmarks and the demo."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..cq.client import Client, JobState
from .processes import Daemon, stop_process, wait_listening


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class CqServer(Daemon):
    folder: Path
    munge_socket: str
    config: dict = field(default_factory=dict)
    env: dict[str, str] | None = None  # the server's environment (default: ours)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.state_dir = self.folder / "state"
        self.log = self.folder / "server.log"

    def client(self, timeout: float = 10.0, munge_socket: str | None = None) -> Client:
        return Client("127.0.0.1", self.port, munge_socket or self.munge_socket, timeout)

    def argv(self) -> list[str]:
        self.folder.mkdir(parents=True, exist_ok=True)
        config = self.folder / "cq-server.yaml"
        config.write_text(yaml.safe_dump(self.config))
        return [sys.executable, "-m", "cq_portage.cq.server_cli", "-h", "127.0.0.1",
                "-p", str(self.port), "--state-dir", str(self.state_dir),
                "--munge-socket", self.munge_socket, "--config", str(config)]

    def start(self, timeout: float = 15.0) -> "CqServer":
        self.process = subprocess.Popen(self.argv(), env=self.env, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL,
                                        stderr=open(self.log, "ab"))
        wait_listening(self.process, self.port, self.log, "cq-server", timeout)
        return self

    def kill(self) -> None:
        """kill -9: what a crash looks like."""
        stop_process(self.process, signal.SIGKILL)

    def stop(self, timeout: float = 30.0) -> int | None:
        stop_process(self.process, timeout=timeout)
        return self.process.returncode if self.process else None


def wait_running(client: Client, job_id: int, timeout: float = 30.0) -> None:
    """Until the server runs `job_id`."""
    deadline = time.monotonic() + timeout
    while client.status(job_id).state != JobState.RUNNING:
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} did not start within {timeout:g}s")
        time.sleep(0.01)


def hold_queue(client: Client, seconds: float) -> int:
    """Occupy the runner for `seconds`, so that what is submitted next stays queued."""
    job_id = client.submit(["sleep", str(seconds)]).job_id
    wait_running(client, job_id)
    return job_id
