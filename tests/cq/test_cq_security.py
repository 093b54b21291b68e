"""Credentials are checked, submitters are authorized, bad frames are answered, nothing runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pymunge
import pytest

from cq_portage.cq.job import Status
from cq_portage.cq.wire import Op, build_request
from cq_portage.sandbox.munge import Munged

from helpers import raw_exchange

NOBODY = 65534


def credential(socket: str, payload: bytes, ttl: int | None = None) -> bytes:
    ctx = pymunge.MungeContext()
    ctx.socket = socket
    if ttl is not None:
        ctx.ttl = ttl
    return ctx.encode(payload) + b"\0"


def marker_job(path: Path) -> bytes:
    return build_request(Op.SUBMIT, ["sh", "-c", f"echo ran >> {path}"])


def assert_refused(rep, reason: str):
    assert rep.internal_status == Status.REFUSED and not rep.HasField("job_id")
    assert reason in rep.error


def test_replayed_credential_is_refused_and_logged(server, tmp_path):
    marker = tmp_path / "ran"
    frame = credential(server.munge_socket, marker_job(marker))
    first = raw_exchange(server.port, frame)
    assert first.internal_status == 0 and first.job_id
    assert_refused(raw_exchange(server.port, frame), "credential replayed")
    with server.client() as client:
        assert client.wait(first.job_id).ok
    assert marker.read_text() == "ran\n"  # once
    assert "refused request from 127.0.0.1: credential replayed" in server.log.read_text()


def test_expired_credential_is_refused(server, tmp_path):
    frame = credential(server.munge_socket, marker_job(tmp_path / "ran"), ttl=1)
    time.sleep(2.2)
    assert_refused(raw_exchange(server.port, frame), "credential expired")
    assert not (tmp_path / "ran").exists()


def test_tampered_and_garbage_credentials_are_refused(server, tmp_path):
    frame = bytearray(credential(server.munge_socket, marker_job(tmp_path / "ran")))
    middle = len(frame) // 2
    frame[middle] = ord("A") if frame[middle] != ord("A") else ord("B")
    rep = raw_exchange(server.port, bytes(frame))
    assert rep.internal_status == Status.REFUSED and "credential" in rep.error
    assert_refused(raw_exchange(server.port, b"hello\0"), "not a MUNGE credential")
    assert not (tmp_path / "ran").exists()


def test_credential_from_another_key_is_refused(server, tmp_path):
    with Munged(tmp_path / "other-realm") as other:
        frame = credential(other.socket, marker_job(tmp_path / "ran"))
    assert_refused(raw_exchange(server.port, frame), "credential invalid")
    assert not (tmp_path / "ran").exists()


@pytest.fixture
def public_munged():
    """A munged whose socket another user can reach, for a real unprivileged client."""
    folder = Path(tempfile.mkdtemp(prefix="cq-munge-"))
    os.chmod(folder, 0o755)
    with Munged(folder / "m", mode=0o755) as daemon:
        yield daemon
    shutil.rmtree(folder, ignore_errors=True)


def nobody_credential(socket: str, payload: bytes) -> bytes:
    """Made by MUNGE's own `munge` command running as nobody."""
    out = subprocess.run(["munge", f"--socket={socket}"], input=payload, check=True,
                         capture_output=True, user=NOBODY, group=NOBODY, extra_groups=[],
                         cwd="/")
    return out.stdout.strip() + b"\0"


def test_unauthorized_user_is_refused_then_allowed_by_group_and_run_as_requester(
        make_server, public_munged, open_dir):
    out = open_dir
    job = build_request(Op.SUBMIT, ["sh", "-c", f"id -u > {out}/uid"])
    strict = make_server(folder="strict", munge_socket=public_munged.socket)
    rep = raw_exchange(strict.port, nobody_credential(public_munged.socket, job))
    assert_refused(rep, f"uid {NOBODY} (gid {NOBODY}) is not allowed")
    assert not (out / "uid").exists()

    group = subprocess.run(["getent", "group", str(NOBODY)], capture_output=True,
                           text=True).stdout.split(":")[0]
    open_server = make_server({"allow": {"users": ["root"], "groups": [group]},
                               "run_as": "requester"},
                              folder="open", munge_socket=public_munged.socket)
    rep = raw_exchange(open_server.port, nobody_credential(public_munged.socket, job))
    assert rep.internal_status == 0 and rep.job_id
    with open_server.client(munge_socket=public_munged.socket) as client:
        assert client.wait(rep.job_id).ok
        assert client.status(rep.job_id).requester_uid == NOBODY
    assert (out / "uid").read_text() == f"{NOBODY}\n"  # ran as the requester


@pytest.mark.parametrize("payload, reason", [
    (b"\x0a\x05abc", "malformed request"),
    (b"\x12\x01x", "required field 'command' missing"),
    (b"\x0a\x01x\x12\x02\xff\xfe", "not valid UTF-8"),
    (build_request(Op.SUBMIT, []), "empty command"),
    (build_request(Op.SUBMIT, ["x" * (200 << 10)]), "longer than"),
    (build_request(Op.SUBMIT, ["x"] * 5000), "more than 4096 arguments"),
])
def test_bad_payloads_get_an_error_reply_and_server_keeps_serving(server, payload, reason,
                                                                   tmp_path):
    assert_refused(raw_exchange(server.port, credential(server.munge_socket, payload)), reason)
    with server.client() as client:
        assert client.run(["true"]).ok


def test_size_limits_from_config(make_server):
    server = make_server({"limits": {"max_request_bytes": 4096}})
    big = build_request(Op.SUBMIT, ["echo", "x" * 5000])
    assert_refused(raw_exchange(server.port, credential(server.munge_socket, big)),
                   "exceeds 4096")
    assert_refused(raw_exchange(server.port, b"MUNGE:" + b"A" * 65536 + b"\0"), "too large")
    with server.client() as client:
        assert client.run(["true"]).ok
