"""kill -9 the server: nothing accepted is lost, nothing is silently re-run."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest

from cq_portage.cq.client import Refused
from cq_portage.cq.job import JobState, Status
from cq_portage.sandbox.processes import running as alive
from cq_portage.sandbox.server import wait_running

from helpers import JOBS_V01, cq_client





def test_kill_9_while_running_then_restart(server, tmp_path):
    trace = tmp_path / "trace"
    with server.client() as client:
        done = client.submit(["sh", "-c", f"echo done >> {trace}"]).job_id
        assert client.wait(done).ok
        # The long job records its pid so we can tell whether it outlived the server.
        long = client.submit(["sh", "-c", f"echo long-started >> {trace}; echo $$ > "
                                          f"{tmp_path}/pid; sleep 60"]).job_id
        queued = [client.submit(["sh", "-c", f"echo {i} >> {trace}"]).job_id for i in range(4)]
        wait_running(client, long)
        while not (tmp_path / "pid").exists():
            time.sleep(0.02)
    server.kill()
    orphan = int((tmp_path / "pid").read_text())
    server.start()
    with server.client() as client:
        interrupted = client.wait(long)
        assert interrupted.state == "interrupted"
        assert interrupted.internal_status == Status.INTERRUPTED
        assert "not re-run" in interrupted.error
        for job_id in queued:
            assert client.wait(job_id).ok
        assert client.status(done).exit_status == 0 and client.status(done).state == JobState.DONE
    assert trace.read_text().split() == ["done", "long-started", "0", "1", "2", "3"]
    assert not alive(orphan), "the interrupted job's process was left running"


def test_cli_wait_survives_a_server_restart(server, tmp_path):
    with server.client() as client:
        blocker = client.submit(["sleep", "1.5"]).job_id
        job = client.submit(["sh", "-c", "exit 42"]).job_id
        wait_running(client, blocker)
    result = {}
    waiter = threading.Thread(target=lambda: result.update(
        r=cq_client(server, "--timeout", "20", "--wait", str(job))))
    waiter.start()
    time.sleep(0.5)
    server.kill()
    time.sleep(1.0)
    server.start()
    waiter.join(60)
    assert result["r"].returncode == 42, result["r"].stderr


def test_detached_client_learns_result_after_restart(server):
    submitted = cq_client(server, "--detach", "--", "sh", "-c", "exit 3")
    job = submitted.stdout.strip()
    with server.client() as client:
        client.wait(int(job))
    server.stop()
    server.start()
    assert cq_client(server, "--wait", job).returncode == 3
    assert "exit status 3" in cq_client(server, "--status", job).stdout


def test_finished_jobs_are_forgotten_after_keep_finished_days(make_server):
    server = make_server({"keep_finished_days": 0.00001})  # about a second
    with server.client() as client:
        old = client.run(["sh", "-c", "echo old"]).job_id
        log = server.state_dir / "logs" / "0000" / f"{old}.log"
        assert log.exists()
        time.sleep(1.5)
    server.stop()
    server.start()
    with server.client() as client:
        with pytest.raises(Refused, match=f"no job {old}"):
            client.status(old)
    assert not log.exists()


def test_a_queue_stored_by_the_previous_version_is_kept_and_runs(make_server, tmp_path):
    """The job table of version 0.1 had no labels, host or attempts: they are added."""
    state = tmp_path / "server" / "state"
    state.mkdir(parents=True)
    db = sqlite3.connect(state / "cq.db")
    db.executescript(f"""
        CREATE TABLE jobs ({JOBS_V01});
        INSERT INTO jobs (state, command, argv, env, requester_uid, requester_gid, key,
            submitted) VALUES ('queued', 'sh', '["sh", "-c", "echo kept"]', '[]', 0, 0, 'k', 1);
    """)
    db.close()
    server = make_server()
    with server.client() as client:
        assert client.wait(1).ok
        assert client.log(1)[0] == b"kept\n" and client.status(1).host == "local"
