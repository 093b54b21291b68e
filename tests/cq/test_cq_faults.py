"""The server never goes deaf: what breaks one request is answered, and the others go on."""

from __future__ import annotations

import sqlite3
import time

import pytest

from cq_portage.cq.client import Refused
from cq_portage.cq.wire import Op, Status, build_request

BEYOND_SQLITE = 1 << 63  # one past the largest job id SQLite can hold


@pytest.mark.parametrize("op", [Op.STATUS, Op.CANCEL, Op.WAIT, Op.LOG])
def test_job_id_beyond_the_store_gets_an_error_reply(server, op):
    with server.client(timeout=5) as client:
        with pytest.raises(Refused, match="out of range"):
            client._call(build_request(op, job_id=BEYOND_SQLITE), 5)
        with pytest.raises(Refused, match="out of range"):
            client._call(build_request(op, job_id=(1 << 64) - 1), 5)
        # and then it goes on answering
        assert client.run(["true"]).ok


def test_log_offset_beyond_a_file_gets_an_error_reply(server):
    with server.client(timeout=5) as client:
        job = client.run(["echo", "hello"]).job_id
        with pytest.raises(Refused, match="out of range"):
            client.log(job, BEYOND_SQLITE)
        assert client.log(job, 0)[0] == b"hello\n"
        assert client.log(job, BEYOND_SQLITE - 1)[0] == b""  # past the end: nothing, no error


def test_an_exception_while_answering_is_one_reply_and_one_log_record(server):
    """A job row damaged behind the server's back (its argv is not JSON) makes reading it
    raise: that request gets an internal-error reply, the log a traceback, and every other
    request is answered as before."""
    with server.client(timeout=5) as client:
        good = client.run(["echo", "good"]).job_id
        bad = client.run(["echo", "bad"]).job_id
        db = sqlite3.connect(server.state_dir / "cq.db", timeout=10)
        db.execute("UPDATE jobs SET argv = 'not json' WHERE id = ?", (bad,))
        db.commit()
        db.close()
        started = time.monotonic()
        for _ in range(3):
            with pytest.raises(Refused) as refused:
                client.status(bad)
            assert refused.value.status == Status.SERVER_ERROR
            assert "internal error in cq-server (JSONDecodeError" in str(refused.value)
            assert "\n" not in str(refused.value)
            assert client.status(good).args == ["echo", "good"]
        assert time.monotonic() - started < 5  # answered at once, not after a timeout
        assert client.run(["true"]).ok  # jobs still run
    log = server.log.read_text()
    assert log.count("internal error while answering a request: JSONDecodeError") == 3
    assert log.count("Traceback (most recent call last)") == 3
    assert server.process.poll() is None


# -- memory: bounded in bytes for what unauthenticated peers send ---------------------------

MiB = 1 << 20


def rss(pid: int, field: str = "VmRSS") -> int:
    with open(f"/proc/{pid}/status") as f:
        line = next(line for line in f if line.startswith(field + ":"))
    return int(line.split()[1]) * 1024


def flood(port: int, frame: bytes, senders: int, each: int, wait: float) -> list[bytes]:
    """`senders` DEALER sockets send `each` frames; the replies that came within `wait`."""
    import zmq

    ctx = zmq.Context()
    socks = []
    for _ in range(senders):
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(f"tcp://127.0.0.1:{port}")
        socks.append(sock)
    for _ in range(each):
        for sock in socks:
            sock.send_multipart([b"", frame])
    replies: list[bytes] = []
    poller = zmq.Poller()
    for sock in socks:
        poller.register(sock, zmq.POLLIN)
    deadline = time.monotonic() + wait
    while len(replies) < senders * each and time.monotonic() < deadline:
        for sock, _ in poller.poll(100):
            replies.append(sock.recv_multipart()[-1])
    for sock in socks:
        sock.close()
    ctx.term()
    return replies


def test_unauthenticated_floods_are_bounded_in_bytes(make_server, tmp_path):
    """While a submission waits for a slow incoming hook, 300 frames of 4 MB and then 400
    of 1.3 MB (just under the frame limit) without a valid credential: the server's peak
    RSS grows by less than its max_memory_bytes (64 MiB) plus 64 MiB, and it goes on."""
    import threading

    from cq_portage.cq.wire import parse_reply

    hook = tmp_path / "slow-hook"
    hook.write_text("#!/bin/sh\ncat >/dev/null\nsleep 12\necho '{\"action\": \"accept\"}'\n")
    hook.chmod(0o755)
    budget = 64 * MiB
    server = make_server({"incoming_hook": str(hook), "hook_timeout": 30,
                          "limits": {"max_memory_bytes": budget}})
    pid = server.process.pid
    with server.client() as client:
        client.list()
    base = rss(pid)
    result: dict = {}
    submitter = threading.Thread(target=lambda: result.update(
        job=server.client(timeout=60).submit(["true"])))
    submitter.start()
    time.sleep(0.5)  # the handler now waits for the hook

    big = flood(server.port, b"x" * 4_000_000, senders=30, each=10, wait=3)
    assert big == []  # over twice the frame limit: the peers are cut off, nothing queued
    after_big = rss(pid, "VmHWM") - base
    assert after_big < 16 * MiB, f"peak RSS grew by {after_big / MiB:.0f} MiB"

    frame = b"MUNGE:" + b"A" * 1_300_000  # under the limit (1 MiB * 4/3 + 4 KiB)
    replies = [parse_reply(r) for r in flood(server.port, frame, senders=20, each=20,
                                             wait=30)]
    assert len(replies) == 400  # every frame answered, none left hanging
    busy = [r for r in replies if "server busy" in r.error]
    refused = [r for r in replies if "not a valid" in r.error or "credential" in r.error]
    assert len(busy) >= 200 and len(busy) + len(refused) == 400, {r.error for r in replies}
    submitter.join(60)
    assert result["job"].job_id  # the submission behind the hook was stored and answered
    peak = rss(pid, "VmHWM") - base
    print(f"flood: base RSS {base / MiB:.0f} MiB, peak +{peak / MiB:.0f} MiB, "
          f"{len(busy)} busy, {len(refused)} refused")
    assert peak < budget + 64 * MiB, f"peak RSS grew by {peak / MiB:.0f} MiB"
    with server.client(timeout=60) as client:  # (through the 12 s hook again)
        assert client.run(["true"]).ok
    assert "busy: requests waiting hold" in server.log.read_text()
