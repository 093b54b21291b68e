"""Random and mutated frames at a running server: every one is answered, none runs what it
should not, and the server still runs a normal job afterwards."""

from __future__ import annotations

import json
import os
import sqlite3

import pymunge
import pytest
import zmq
from hypothesis import HealthCheck, given, settings, strategies as st

from cq_portage.cq import cq_pb2 as pb
from cq_portage.cq.wire import Op, build_request, parse_reply

BASE = build_request(Op.SUBMIT, ["/bin/echo", "fuzz"], ["A=1"])
FUZZ = settings(max_examples=1500, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))


def mutated(data: bytes):
    """data with bytes replaced, inserted or cut off."""
    return st.one_of(
        st.lists(st.tuples(st.integers(0, len(data) - 1), st.integers(0, 255)), min_size=1,
                 max_size=8).map(lambda edits: _replace(data, edits)),
        st.integers(0, len(data)).map(lambda n: data[:n]),
        st.tuples(st.integers(0, len(data)), st.binary(min_size=1, max_size=64)).map(
            lambda t: data[:t[0]] + t[1] + data[t[0]:]),
    )


def _replace(data: bytes, edits) -> bytes:
    out = bytearray(data)
    for index, value in edits:
        out[index] = value
    return bytes(out)


payloads = st.one_of(
    st.binary(max_size=512), mutated(BASE),
    st.builds(lambda c, a, e: pb.cq_req(command=c, args=a, env=e).SerializeToString(),
              st.text(max_size=20), st.lists(st.text(max_size=20), max_size=5),
              st.lists(st.text(max_size=30), max_size=5)))


class Sender:
    def __init__(self, port: int, munge_socket: str):
        self.endpoint = f"tcp://127.0.0.1:{port}"
        self.munge = pymunge.MungeContext()
        self.munge.socket = munge_socket
        self.sock = None
        self.accepted: list[bytes] = []

    def credential(self, payload: bytes) -> bytes:
        return self.munge.encode(payload) + b"\0"

    def send(self, frame: bytes):
        if self.sock is None:
            self.sock = zmq.Context.instance().socket(zmq.REQ)
            self.sock.setsockopt(zmq.LINGER, 0)
            self.sock.connect(self.endpoint)
        self.sock.send(frame)
        assert self.sock.poll(10000), f"no answer to frame {frame[:60]!r}"
        return parse_reply(self.sock.recv())

    def close(self):
        if self.sock is not None:
            self.sock.close()


def jobs_in_store(server) -> list[tuple]:
    db = sqlite3.connect(server.state_dir / "cq.db")
    try:
        return db.execute("SELECT command, argv, env FROM jobs").fetchall()
    finally:
        db.close()


@pytest.fixture
def no_path_env():
    # Commands resolved through PATH cannot run: a fuzzed command name cannot hit a program.
    return dict(os.environ, PATH="/nonexistent")


def test_unauthorized_frames_never_run_anything(make_server, no_path_env, tmp_path):
    server = make_server({"allow": {"users": [4242]}}, env=no_path_env)
    sender = Sender(server.port, server.munge_socket)
    valid = sender.credential(BASE)

    @FUZZ
    @given(st.one_of(
        st.binary(max_size=2048),
        st.binary(max_size=512).map(lambda b: b"MUNGE:" + b),
        mutated(valid),
        payloads.map(sender.credential),  # well-formed, but root is not allowed here
    ))
    def check(frame):
        assert sender.send(frame).internal_status < 0

    try:
        check()
    finally:
        sender.close()
    assert jobs_in_store(server) == []
    assert "refused request" in server.log.read_text()


def test_authorized_fuzzed_payloads_are_answered_and_server_keeps_working(
        make_server, no_path_env, tmp_path):
    server = make_server(env=no_path_env)
    sender = Sender(server.port, server.munge_socket)
    sent: list[bytes] = []

    @FUZZ
    @given(payloads)
    def check(payload):
        rep = sender.send(sender.credential(payload))
        if rep.HasField("protocol") and rep.internal_status < 0:
            assert rep.error  # every refusal says why
        else:  # accepted; a legacy request's answer is its job's end, in the original's words
            sent.append(payload)

    try:
        check()
    finally:
        sender.close()
    # Every stored job is one that a frame we sent asked for, as we sent it.
    asked = set()
    for payload in sent:
        msg = pb.cq_req()
        msg.ParseFromString(payload)
        args = list(msg.args)[:-1] if list(msg.args)[-1:] == [""] else list(msg.args)
        asked.add(json.dumps(args or [msg.command]))
    stored = jobs_in_store(server)
    assert len(stored) <= len(sent)
    assert {argv for _, argv, _ in stored} <= asked
    with server.client() as client:
        outcome = client.run(["/bin/sh", "-c", "exit 0"])
        assert outcome.ok, outcome
