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
