"""Jobs on a real cq-server: how they run, what they see, how they end."""

from __future__ import annotations

import json
import os
import pwd
import time

import pytest

from cq_portage.cq.client import Refused
from cq_portage.cq.job import Status
from cq_portage.sandbox.server import wait_running

from helpers import cq_client


def read_log(server, job_id):
    return (server.state_dir / "logs" / f"{job_id // 1000:04d}" / f"{job_id}.log").read_text()


def test_job_output_goes_to_its_own_log_and_exit_status_is_reported(server, client):
    outcome = client.run(["sh", "-c", "echo out; echo err >&2; exit 7"])
    assert (outcome.internal_status, outcome.exit_status, outcome.state) == (0, 7, "done")
    assert read_log(server, outcome.job_id) == "out\nerr\n"


@pytest.mark.parametrize("size", [0, 10, 65536, 3 << 20, (3 << 20) + 65536])
def test_the_tail_of_a_long_log_takes_a_few_requests_not_all_of_it(client, size):
    """cq-emerge reads each ended build's last lines (the instance it made, why it failed)."""
    script = f"head -c {size} /dev/zero | tr '\\0' x; echo; echo the last line"
    job_id = client.run(["sh", "-c", script]).job_id
    asked = []
    log = client.log
    client.log = lambda job_id, offset=0: asked.append(offset) or log(job_id, offset)
    tail = client.log_tail(job_id, 1000)
    whole = b"x" * size + b"\nthe last line\n"
    assert tail == whole[-1000:]
    assert len(asked) <= 2 * max(1, (size >> 16).bit_length()) + 3  # 3 MiB: 10, not 49


def test_killed_by_signal_is_128_plus_n(client):
    outcome = client.run(["sh", "-c", "kill -TERM $$"])
    assert (outcome.internal_status, outcome.exit_status) == (0, 128 + 15)


def test_command_that_cannot_run_says_why(client):
    outcome = client.run(["/nonexistent/program"])
    assert outcome.internal_status == Status.EXEC_FAILED and outcome.state == "failed"
    assert "No such file or directory" in outcome.error


def test_environment_is_servers_minus_denylist_plus_request(make_server, tmp_path):
    env = dict(os.environ, SERVER_VAR="from-server", SHARED="server",
               LD_LIBRARY_PATH="/evil", BASH_ENV="/evil.sh", SECRET_TOKEN="hush")
    server = make_server({"environment": {"deny": ["SECRET_*"]}}, env=env)
    with server.client() as client:
        outcome = client.run(["sh", "-c", "env > " + str(tmp_path / "env")],
                             {"SHARED": "request", "REQ_VAR": "x=y"})
        assert outcome.ok
        seen = dict(line.split("=", 1) for line in (tmp_path / "env").read_text().splitlines()
                    if "=" in line)
        assert seen["SERVER_VAR"] == "from-server" and seen["SHARED"] == "request"
        assert seen["REQ_VAR"] == "x=y" and seen["CQ_JOB_ID"] == str(outcome.job_id)
        for denied in ("LD_LIBRARY_PATH", "BASH_ENV", "SECRET_TOKEN"):
            assert denied not in seen
        for denied in ("LD_PRELOAD", "SECRET_X"):
            with pytest.raises(Refused, match=f"{denied} is not allowed"):
                client.run(["true"], {denied: "1"})


def test_jobs_run_one_at_a_time_in_arrival_order(client, tmp_path):
    trace = tmp_path / "trace"
    ids = [client.submit(["sh", "-c", f"echo start {i} >> {trace}; sleep 0.05; "
                                       f"echo end {i} >> {trace}"]).job_id for i in range(6)]
    assert ids == sorted(ids)
    for job_id in ids:
        assert client.wait(job_id).ok
    expected = [f"{w} {i}" for i in range(6) for w in ("start", "end")]
    assert trace.read_text().split("\n")[:-1] == expected


def test_cancel_queued_and_running(client, tmp_path):
    running = client.submit(["sleep", "30"]).job_id
    queued = client.submit(["touch", str(tmp_path / "never")]).job_id
    wait_running(client, running)
    client.cancel(queued)
    client.cancel(running)
    first, second = client.wait(running), client.wait(queued)
    assert (first.state, first.internal_status, first.exit_status) == (
        "cancelled", Status.CANCELLED, 128 + 15)
    assert second.state == "cancelled"
    assert not (tmp_path / "never").exists()
    with pytest.raises(Refused, match="already ended"):
        client.cancel(queued)


def test_unknown_job(client):
    with pytest.raises(Refused, match="no job 999"):
        client.status(999)


# -- the command line --------------------------------------------------------------------

def test_cli_runs_job_passes_env_and_exits_with_its_status(server):
    result = cq_client(server, "-E", "GREETING=hi", "--", "sh", "-c", 'echo "$GREETING"; exit 5')
    assert result.returncode == 5
    listing = json.loads(cq_client(server, "--list", "--json").stdout)
    job_id = int(listing["jobs"][-1]["id"])
    assert [h["name"] for h in listing["hosts"]] == ["local"]
    assert cq_client(server, "--log", str(job_id)).stdout == "hi\n"


def test_cli_post_script_gets_statuses_and_job_id(server, tmp_path):
    post = tmp_path / "post.sh"
    post.write_text(f'#!/bin/sh\necho "$1 $2 $CQ_JOB_ID" > {tmp_path}/post.out\n')
    post.chmod(0o755)
    result = cq_client(server, "-P", str(post), "--", "sh", "-c", "exit 3")
    assert result.returncode == 3
    internal, exit_status, job_id = (tmp_path / "post.out").read_text().split()
    assert (internal, exit_status) == ("0", "3") and int(job_id) > 0


def test_cli_detach_then_wait_status_and_list(server, tmp_path):
    result = cq_client(server, "--detach", "--", "sh", "-c", "sleep 0.3; exit 4")
    assert result.returncode == 0
    job_id = result.stdout.strip()
    assert job_id.isdigit()  # the id alone on stdout
    listing = cq_client(server, "--list").stdout
    assert f"{job_id} " in listing and "sleep 0.3" in listing
    assert cq_client(server, "--wait", job_id).returncode == 4
    status = cq_client(server, "--status", job_id)
    assert "done" in status.stdout and "exit status 4" in status.stdout


def test_cli_refusal_and_unreachable_server_exit_255_with_one_line(server):
    refused = cq_client(server, "-E", "LD_PRELOAD=/x.so", "--", "true")
    assert refused.returncode == 255
    assert refused.stderr.strip().splitlines() == [
        "cq-client: environment variable LD_PRELOAD is not allowed by the server"]
    server.kill()
    start = time.monotonic()
    gone = cq_client(server, "--timeout", "2", "--", "true")
    assert gone.returncode == 255 and time.monotonic() - start < 10
    assert len(gone.stderr.strip().splitlines()) == 1
    assert "no answer from cq-server" in gone.stderr


def test_cli_usage_errors_exit_2(server):
    assert cq_client(server).returncode == 2
    assert cq_client(server, "-E", "BAD", "--", "true").returncode == 2
    assert cq_client(server, "--status", "1", "--", "true").returncode == 2


def test_cli_against_a_server_that_never_answers_gives_one_line(munged):
    import zmq

    from cq_portage.sandbox.server import free_port

    class Silent:  # accepts connections, reads requests, never answers
        port = free_port()
        munge_socket = munged.socket

    sock = zmq.Context.instance().socket(zmq.ROUTER)
    sock.bind(f"tcp://127.0.0.1:{Silent.port}")
    try:
        start = time.monotonic()
        result = cq_client(Silent, "--timeout", "1", "--status", "1")
        assert result.returncode == 1 and time.monotonic() - start < 10
        assert result.stderr.count("\n") == 1 and "no answer within 1s" in result.stderr
    finally:
        sock.close(0)


def test_jobs_run_as_the_configured_user(make_server, open_dir):
    out = open_dir
    server = make_server({"run_as": "nobody"})
    with server.client() as client:
        assert client.run(["sh", "-c", f"id -u > {out}/uid; id -g > {out}/gid"]).ok
        assert client.status(1).run_as == "65534:65534"
    assert (out / "uid").read_text() == "65534\n"


def test_run_as_requester_who_is_the_server_keeps_its_ids(make_server, open_dir):
    """Such jobs are spawned without ids (vfork, not fork): the same user, group and
    supplementary groups all the same, here the test's own."""
    out = open_dir
    server = make_server({"run_as": "requester"})
    with server.client() as client:
        assert client.run(["sh", "-c", f"id -u > {out}/uid; id -g > {out}/gid; "
                                       f"id -G > {out}/groups"]).ok
        assert client.status(1).run_as == f"{os.getuid()}:{os.getgid()}"
    assert int((out / "uid").read_text()) == os.getuid()
    assert int((out / "gid").read_text()) == os.getgid()
    assert set(map(int, (out / "groups").read_text().split())) == \
        set(os.getgrouplist(pwd.getpwuid(os.getuid()).pw_name, os.getgid()))


def test_cli_cancel(server, tmp_path):
    job = cq_client(server, "--detach", "--", "sleep", "30").stdout.strip()
    while "running" not in cq_client(server, "--status", job).stdout:
        time.sleep(0.05)
    assert cq_client(server, "--cancel", job).returncode == 0
    assert cq_client(server, "--wait", job).returncode == 255
    assert "cancelled" in cq_client(server, "--status", job).stdout
    other = cq_client(server, "--cancel", job)
    assert other.returncode == 1 and "already ended" in other.stderr


def test_cli_without_munged_says_so(server, tmp_path):
    result = cq_client(server, "--munge-socket", str(tmp_path / "nope"), "--", "true")
    assert result.returncode == 255 and result.stderr.count("\n") == 1
    assert "cannot create a MUNGE credential" in result.stderr
