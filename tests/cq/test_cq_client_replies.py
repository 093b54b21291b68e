"""cq-client never lies and never crashes: against a fake server that sends each kind of bad
reply, it says so in one line and exits 255 — never 0, never a traceback."""

from __future__ import annotations

import subprocess
import threading

import pytest
import zmq

from cq_portage.cq.job import JobInfo, JobState, Status
from cq_portage.cq.wire import build_reply
from cq_portage.sandbox.server import free_port

from helpers import BIN

NOT_RUN = 255


class FakeServer:
    """A ROUTER that answers every request with the same frame."""

    def __init__(self, reply: bytes):
        self.reply = reply
        self.port = free_port()
        self.requests = 0
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(f"tcp://127.0.0.1:{self.port}")
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopping.is_set():
            if self.sock.poll(50):
                *envelope, _ = self.sock.recv_multipart()
                self.requests += 1
                self.sock.send_multipart([*envelope, self.reply])

    def close(self) -> None:
        self.stopping.set()
        self.thread.join()
        self.sock.close()
        self.ctx.term()


def job(**fields) -> JobInfo:
    return JobInfo(**{"id": 7, "state": JobState.DONE, "args": ("true",), **fields})


GOOD_DONE = build_reply(Status.RAN, 0, job_id=7, state=JobState.DONE, jobs=[job()])
BAD_REPLIES = {
    "garbage": b"\xff\xfe this is not protobuf \x00\x01",
    "empty": b"",
    "truncated": GOOD_DONE[:-2],  # inside its job (a cut between fields parses fine)
    "no job id or state": build_reply(Status.RAN, 0),
    "no state": build_reply(Status.RAN, 0, job_id=7),
    "no jobs": build_reply(Status.RAN, 0, job_id=7, state=JobState.DONE),
    "another job": build_reply(Status.RAN, 0, job_id=8, state=JobState.DONE, jobs=[job(id=8)]),
    "exit status above 255": build_reply(Status.RAN, 300, job_id=7, state=JobState.DONE,
                                         jobs=[job(exit_status=300)]),
    "exit 256 from the original server": build_reply(Status.RAN, 256, legacy=True),
    "failed yet internal status 0": build_reply(Status.RAN, 0, job_id=7, state=JobState.FAILED,
                                                jobs=[job(state=JobState.FAILED)]),
    "done yet internal status -2": build_reply(Status.EXEC_FAILED, 0, job_id=7,
                                               state=JobState.DONE, jobs=[job()]),
}
COMMANDS = {"submit": ["--", "true"], "detach": ["--detach", "--", "true"],
            "wait": ["--wait", "7"], "status": ["--status", "7"], "cancel": ["--cancel", "7"],
            "log": ["--log", "7"], "list": ["--list"]}


def run_client(port: int, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "cq-client"), "-h", "127.0.0.1", "-p", str(port),
                           "--munge-socket", MUNGE[0], "--timeout", "3", *args],
                          capture_output=True, text=True, timeout=30)


MUNGE: list[str] = []


@pytest.fixture(autouse=True)
def munge_socket(munged):
    MUNGE[:] = [str(munged.socket)]


ALL = set(COMMANDS)
# Which commands must refuse each reply; the others may take it (a reply about job 8 is a
# fine answer to a submission, LIST needs no job, --status shows what it is told).
REFUSED_BY = {
    "garbage": ALL, "empty": ALL, "truncated": ALL,
    "no job id or state": ALL - {"list"},
    "no state": {"submit", "wait", "status", "cancel", "log"},
    "no jobs": {"status", "cancel"},
    "another job": {"wait", "status", "cancel", "log"},
    "exit status above 255": ALL, "exit 256 from the original server": ALL,
    "failed yet internal status 0": {"submit", "wait"},
    "done yet internal status -2": {"submit", "wait"},
}


@pytest.mark.parametrize("name", sorted(BAD_REPLIES))
def test_bad_replies_are_one_line_and_255(name):
    server = FakeServer(BAD_REPLIES[name])
    try:
        for command, args in COMMANDS.items():
            done = run_client(server.port, *args)
            assert "Traceback" not in done.stderr, (command, done.stderr)
            if command not in REFUSED_BY[name]:
                continue
            assert done.returncode == NOT_RUN, (command, done.returncode, done.stderr)
            lines = done.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("cq-client: "), (command, lines)
    finally:
        server.close()


def test_a_good_reply_still_gives_the_jobs_status():
    """The fake server itself is sound: a coherent DONE reply with exit status 0 is 0."""
    server = FakeServer(GOOD_DONE)
    try:
        assert run_client(server.port, "--wait", "7").returncode == 0
        three = build_reply(Status.RAN, 3, job_id=7, state=JobState.DONE, jobs=[job()])
        server.reply = three
        assert run_client(server.port, "--wait", "7").returncode == 3
    finally:
        server.close()


@pytest.mark.parametrize("bad", ["-1", "abc", "1.5", "", "9223372036854775808", "0x10"])
def test_a_bad_job_id_is_a_usage_error(bad):
    for option in ("--wait", "--status", "--cancel", "--log"):
        done = subprocess.run([str(BIN / "cq-client"), "-p", "1", option, bad],
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 2, (option, bad, done.stderr)
        assert "bad job id" in done.stderr and "Traceback" not in done.stderr
