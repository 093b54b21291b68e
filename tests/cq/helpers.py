"""Running the real command-line tools from tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def cq_client(server, *args: str, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    argv = [str(BIN / "cq-client"), "-h", "127.0.0.1", "-p", str(server.port),
            "--munge-socket", server.munge_socket, *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
