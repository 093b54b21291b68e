"""What the cq tests share: running the real command-line tools, polling, an old schema."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent
# The columns of cq.db's jobs table as version 0.1 made it: later versions add to them at start.
JOBS_V01 = """id INTEGER PRIMARY KEY AUTOINCREMENT, state TEXT NOT NULL,
    command TEXT NOT NULL, argv TEXT NOT NULL, env TEXT NOT NULL, run_uid INTEGER,
    run_gid INTEGER, requester_uid INTEGER NOT NULL, requester_gid INTEGER NOT NULL,
    key TEXT NOT NULL, dedupe_key TEXT, submitted REAL NOT NULL, started REAL,
    finished REAL, internal_status INTEGER, exit_status INTEGER, error TEXT,
    log_path TEXT, waiters INTEGER NOT NULL DEFAULT 1"""


def wait_for(check, timeout: float = 20.0, what: str = "condition"):
    """Poll check() until it is true; returns what it returned."""
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, f"{what}: not within {timeout:g}s"
        time.sleep(0.05)
    return result


def cq_client(server, *args: str, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    argv = [str(BIN / "cq-client"), "-h", "127.0.0.1", "-p", str(server.port),
            "--munge-socket", server.munge_socket, *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)


def original_client_request(munged_socket: str, args: list[str], env: list[str]) -> bytes:
    """The frame the C client sends: cq_req with "" end markers, munged, NUL-terminated."""
    import pymunge

    from cq_portage.cq import cq_pb2 as pb

    payload = pb.cq_req(command=args[0], args=[*args, ""], env=[*env, ""]).SerializeToString()
    ctx = pymunge.MungeContext()
    ctx.socket = munged_socket
    return ctx.encode(payload) + b"\0"


def raw_exchange(port: int, frame: bytes, timeout: float = 10.0):
    """Send one frame with a REQ socket, as the original client does; return the cq_rep."""
    import zmq

    from cq_portage.cq.wire import parse_reply

    sock = zmq.Context.instance().socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(f"tcp://127.0.0.1:{port}")
    try:
        sock.send(frame)
        assert sock.poll(int(timeout * 1000)), "the server did not answer"
        return parse_reply(sock.recv())
    finally:
        sock.close()
