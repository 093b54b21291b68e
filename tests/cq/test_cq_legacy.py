"""Compatibility with the original C cq, in both directions."""

from __future__ import annotations

import subprocess
import threading
import time

import pymunge
import pytest
import zmq

from cq_portage.cq import cq_pb2 as pb
from cq_portage.sandbox.server import free_port

from helpers import cq_client, original_client_request


def test_original_client_is_answered_when_its_job_ends(server, tmp_path):
    out = tmp_path / "out"
    frame = original_client_request(server.munge_socket,
                                    ["sh", "-c", f'sleep 0.5; echo "$MSG" > {out}; exit 9'],
                                    ["MSG=hello"])
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(f"tcp://127.0.0.1:{server.port}")
    start = time.monotonic()
    sock.send(frame)
    assert sock.poll(20000), "no reply"
    reply = sock.recv()
    elapsed = time.monotonic() - start
    sock.close()
    rep = pb.cq_rep()
    rep.ParseFromString(reply)
    assert (rep.internal_status, rep.exit_status) == (0, 9)
    assert elapsed >= 0.5  # not before the job ended
    assert out.read_text() == "hello\n"
    # exact in what we send to an original client: only the fields it knows
    assert rep.ListFields() == [(pb.cq_rep.DESCRIPTOR.fields_by_name["internal_status"], 0),
                                (pb.cq_rep.DESCRIPTOR.fields_by_name["exit_status"], 9)]


class OriginalServer:
    """Behaves as DESIGN.md says the C cq_server does: drops the last element of args and
    env unconditionally, runs the command with only those variables, replies cq_rep only,
    when the job has ended. It also records what it received."""

    def __init__(self, munge_socket: str):
        self.port = free_port()
        self.munge_socket = munge_socket
        self.received: list[pb.cq_req] = []
        self.sock = zmq.Context.instance().socket(zmq.ROUTER)
        self.sock.bind(f"tcp://127.0.0.1:{self.port}")
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.running = True
        self.thread.start()

    def serve(self):
        ctx = pymunge.MungeContext()
        ctx.socket = self.munge_socket
        while self.running:
            if not self.sock.poll(100):
                continue
            identity, empty, frame = self.sock.recv_multipart()
            payload, _, _ = ctx.decode(frame.rstrip(b"\0"))
            req = pb.cq_req()
            req.ParseFromString(payload)
            self.received.append(req)
            args, env = list(req.args)[:-1], list(req.env)[:-1]
            rc = subprocess.run(args, executable=req.command,
                                env=dict(e.split("=", 1) for e in env)).returncode
            rep = pb.cq_rep(internal_status=0, exit_status=rc)
            self.sock.send_multipart([identity, empty, rep.SerializeToString()])

    def close(self):
        self.running = False
        self.thread.join()
        self.sock.close(0)


@pytest.fixture
def original_server(munged):
    server = OriginalServer(munged.socket)
    yield server
    server.close()


def test_cq_client_against_original_server(original_server, tmp_path):
    post = tmp_path / "post.sh"
    post.write_text(f'#!/bin/sh\necho "$1 $2" > {tmp_path}/post.out\n')
    post.chmod(0o755)
    out = tmp_path / "out"
    result = cq_client(original_server, "-E", "MSG=hi", "-P", str(post), "--",
                       "/bin/sh", "-c", f'echo "$MSG" > {out}; exit 6')
    assert result.returncode == 6, result.stderr
    assert out.read_text() == "hi\n"  # the original drops the last element: our markers
    assert (tmp_path / "post.out").read_text() == "0 6\n"
    req = original_server.received[0]
    assert list(req.args) == ["/bin/sh", "-c", f'echo "$MSG" > {out}; exit 6', ""]
    assert list(req.env) == ["MSG=hi", ""] and req.command == "/bin/sh"


def test_cq_client_long_job_on_original_server_needs_legacy(original_server, tmp_path):
    quick = cq_client(original_server, "--timeout", "1", "--", "/bin/sleep", "2")
    assert quick.returncode == 255
    assert "use --legacy" in quick.stderr and len(quick.stderr.splitlines()) == 1
    ok = cq_client(original_server, "--timeout", "1", "--legacy", "--", "/bin/sh", "-c",
                   "sleep 2; exit 3")
    assert ok.returncode == 3, ok.stderr
