"""The server never goes deaf: what breaks one request is answered, and the others go on."""

from __future__ import annotations

import asyncio
import logging
import signal
import sqlite3
import threading
import time

import pytest
import zmq

from cq_portage.cq.auth import Munge
from cq_portage.cq.client import Refused
from cq_portage.cq.config import load_config
from cq_portage.cq.job import JobState, Status
from cq_portage.cq.server import Server
from cq_portage.cq.wire import Op, build_request, job_state
from cq_portage.sandbox.server import free_port

from helpers import running_and_queued, stored_state, wait_for, wait_poll

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
            assert client.status(good).args == ("echo", "good")
        assert time.monotonic() - started < 5  # answered at once, not after a timeout
        assert client.run(["true"]).ok  # jobs still run
    log = server.log.read_text()
    assert log.count("internal error while answering a request: JSONDecodeError") == 3
    assert log.count("Traceback (most recent call last)") == 3
    assert server.process.poll() is None


def test_a_bug_reading_the_socket_stops_the_server_rather_than_leave_it_deaf(
        munged, tmp_path, caplog):
    """The socket is read from a callback on its edge-triggered descriptor: an exception there
    would leave it unread while the process stays up. The server stops instead, with one
    critical line and `failed` set (exit status 1), within 5 s. In-process, to plant the bug;
    every other test drives the same reader in a real server process."""
    config = load_config(None).with_overrides(
        host="127.0.0.1", port=free_port(), state_dir=tmp_path / "state",
        munge_socket=munged.socket)
    server = Server(config, Munge(munged.socket))
    server._take = lambda frames: 1 / 0

    def send_one() -> None:
        sock = zmq.Context.instance().socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(f"tcp://127.0.0.1:{config.port}")
        sock.send(b"anything")
        time.sleep(6)  # connected while the server stops
        sock.close()

    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT,
                                                        signal.SIGHUP)}
    started = time.monotonic()
    try:
        with caplog.at_level(logging.INFO, "cq_portage.cq.server"):
            asyncio.run(asyncio.wait_for(server.serve(on_ready=threading.Thread(
                target=send_one, daemon=True).start), 10))
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    assert time.monotonic() - started < 5
    assert server.failed
    critical = [r.getMessage() for r in caplog.records if r.levelno == logging.CRITICAL]
    assert critical == ["stopping: internal error, reading the socket ended: "
                        "ZeroDivisionError: division by zero"]


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


# -- disk full: a real small tmpfs as the state dir ----------------------------------------

@pytest.fixture
def tmpfs_server(make_server):
    """A server (not started) whose state dir is a 16 MiB tmpfs, unmounted afterwards."""
    import shutil
    import subprocess

    server = make_server(folder="s")
    server.kill()
    shutil.rmtree(server.state_dir)
    server.state_dir.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0750", "tmpfs",
                    str(server.state_dir)], check=True)
    try:
        yield server
    finally:
        server.kill()
        subprocess.run(["umount", "-l", str(server.state_dir)], check=True)


def fill(folder) -> int:
    """Write a file until the file system is full; its size."""
    import errno

    chunk = b"\0" * (64 << 10)
    written = 0
    with open(folder / "filler", "wb", buffering=0) as f:
        while True:
            try:
                written += f.write(chunk)
            except OSError as e:
                assert e.errno == errno.ENOSPC
                break
    return written


def test_disk_full_keeps_answering_refuses_submissions_and_recovers(tmpfs_server, tmp_path):
    from helpers import cq_client

    server = tmpfs_server
    server.config = {"stop_grace_seconds": 2}
    server.start()
    pid = server.process.pid
    go = tmp_path / "go"
    with server.client(timeout=10) as client:
        job, queued = running_and_queued(client, go)
        assert fill(server.state_dir) > 8 << 20

        # Full: reads answer at once, submissions are refused with one line.
        started = time.monotonic()
        assert client.status(job).state == JobState.RUNNING
        assert [j.id for j in client.list()] == [job, queued]
        assert job_state(wait_poll(client, job).state) == JobState.RUNNING
        with pytest.raises(Refused, match="no space left in STATE_DIR") as refused:
            client.submit(["true"])
        assert "\n" not in str(refused.value)
        with pytest.raises(Refused, match="no space left in STATE_DIR"):
            client.cancel(queued)  # a write too
        assert time.monotonic() - started < 5
        done = cq_client(server, "--timeout", "5", "--", "true")
        assert done.returncode == 255 and done.stderr.count("\n") == 1
        assert "no space left in STATE_DIR" in done.stderr and "Traceback" not in done.stderr

        # The job ends while nothing can be recorded: waiters hear how it ended, the store
        # keeps it as running until it has room.
        go.touch()
        wait_for(lambda: "cannot record the end of job" in server.log.read_text(), 10,
                 "the failed record")
        outcome = client.wait(job)
        assert (outcome.state, outcome.exit_status) == ("done", 3)
        assert stored_state(server, job) == "running"

        # Space comes back: the result is recorded within seconds, no restart.
        (server.state_dir / "filler").unlink()
        wait_for(lambda: stored_state(server, job) == "done", 5, "the end recorded")
        assert client.run(["true"]).ok
        assert server.process.pid == pid and server.process.poll() is None

        # The checkpoint thread lived through it: 800 more jobs (some 40 MB of WAL writes
        # on a 16 MiB file system) all go in, and the WAL stays small.
        ids = [client.submit(["true", str(i)]).job_id for i in range(800)]
        assert client.wait(ids[-1], poll=5).ok
    assert (server.state_dir / "cq.db-wal").stat().st_size < 6 << 20  # Store.WAL_LIMIT 4 MiB
    log = server.log.read_text()
    assert "Traceback" not in log


def test_disk_full_logs_one_line_per_batch_of_refused_submissions(tmpfs_server):
    """16 submitters, each with its own connection, send 20 submissions each at once on a
    full disk: every one gets its error reply within 20 s, and the log holds one line per
    batch the server refused together, not one per submission (up to 512 identical lines)."""
    import re
    from concurrent.futures import ThreadPoolExecutor

    server = tmpfs_server
    server.start()
    fill(server.state_dir)

    def submitter(n: int) -> list[str]:
        errors = []
        with server.client(timeout=20) as client:
            for i in range(20):
                try:
                    client.submit(["true", str(n), str(i)])
                except Refused as e:
                    errors.append(str(e))
        return errors

    started = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        errors = [e for each in pool.map(submitter, range(16)) for e in each]
    assert time.monotonic() - started < 20
    assert len(errors) == 16 * 20  # none stored, none lost, none left hanging
    assert all("no space left in STATE_DIR" in e for e in errors)
    lines = [line for line in server.log.read_text().splitlines()
             if "no space left in STATE_DIR" in line]
    sizes = [int(m[1]) if (m := re.search(r"\((\d+) requests of one batch\)$", line)) else 1
             for line in lines]
    assert sum(sizes) == len(errors)  # each refusal logged once, in its batch's line
    assert len(lines) < len(errors), "one line per submission: no batch formed, or logged"
    assert server.process.poll() is None


def test_sigterm_on_a_full_disk_ends_within_the_grace(tmpfs_server, tmp_path):
    """A job that ended while the disk was full cannot be recorded: SIGTERM still ends the
    server within stop_grace_seconds (2) + 5 s, exit 0; the next start reports the job as
    interrupted, never re-run."""
    from cq_portage.sandbox.server import wait_running

    server = tmpfs_server
    server.config = {"stop_grace_seconds": 2}
    server.start()
    go = tmp_path / "go"
    with server.client(timeout=10) as client:
        job = client.submit(["sh", "-c", f"while [ ! -e {go} ]; do sleep 0.05; done"]).job_id
        wait_running(client, job)
        fill(server.state_dir)
        go.touch()
        wait_for(lambda: "cannot record the end of job" in server.log.read_text(), 10,
                 "the failed record")
    started = time.monotonic()
    assert server.stop(timeout=2 + 5) == 0
    assert time.monotonic() - started < 2 + 5
    assert "cannot be recorded" in server.log.read_text()
    (server.state_dir / "filler").unlink()
    server.start()
    with server.client() as client:
        assert client.wait(job).state == "interrupted"


# -- kill -9 at random moments under concurrent submitters ---------------------------------

def test_kill_9_under_concurrent_submitters_loses_no_acknowledged_job(server):
    """24 submitters, each with its own connection, submit as fast as they can while the
    server is killed with SIGKILL three times at random moments and restarted: every job id
    a submitter was given is in the store afterwards (0 lost), each once."""
    import random
    import threading

    rng = random.Random(9)
    acknowledged: list[int] = []
    errors: list[str] = []
    stop = threading.Event()
    lock = threading.Lock()

    def submitter(n: int) -> None:
        with server.client(timeout=30) as client:
            i = 0
            while not stop.is_set():
                try:
                    job = client.submit(["true", str(n), str(i)]).job_id
                except Exception as e:  # a submission that timed out is not acknowledged
                    with lock:
                        errors.append(f"{type(e).__name__}: {e}")
                    continue
                with lock:
                    acknowledged.append(job)
                i += 1

    threads = [threading.Thread(target=submitter, args=(n,)) for n in range(24)]
    for t in threads:
        t.start()
    for _ in range(3):
        time.sleep(rng.uniform(0.5, 2.0))
        server.kill()
        server.start()
    time.sleep(1.0)
    stop.set()
    for t in threads:
        t.join(60)
    server.stop()
    db = sqlite3.connect(server.state_dir / "cq.db")
    stored = {row[0] for row in db.execute("SELECT id FROM jobs")}
    db.close()
    lost = set(acknowledged) - stored
    print(f"kill -9 x3: {len(acknowledged)} acknowledged, {len(stored)} stored, "
          f"{len(lost)} lost, {len(errors)} client errors")
    assert len(acknowledged) >= 300  # the load was real
    assert lost == set()  # the bound: 0 acknowledged submissions lost
    assert len(set(acknowledged)) == len(acknowledged)  # none acknowledged twice
