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


def stored_state(server, job_id: int) -> str:
    """What the job store holds, read as another process would."""
    import sqlite3

    db = sqlite3.connect(f"file:{server.state_dir / 'cq.db'}?mode=ro", uri=True, timeout=10)
    try:
        return db.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()[0]
    finally:
        db.close()


def wait_poll(client, job_id: int):
    """One WAIT long poll of 1 s: the job's reply, ended or not."""
    from cq_portage.cq.wire import Op, build_request

    return client._call(build_request(Op.WAIT, job_id=job_id, wait_seconds=1), 10)


def running_and_queued(client, go) -> tuple[int, int]:
    """A job that runs until the file `go` exists (prints before/after, exits 3), and one
    queued behind it: the ids."""
    from cq_portage.sandbox.server import wait_running

    job = client.submit(["sh", "-c", f"echo before; while [ ! -e {go} ]; do sleep 0.05; "
                                     "done; echo after; exit 3"]).job_id
    wait_running(client, job)
    return job, client.submit(["true", "queued"]).job_id
