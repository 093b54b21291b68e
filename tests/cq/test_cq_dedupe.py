"""Identical queued jobs merge; the incoming hook decides when the config names one."""

from __future__ import annotations

import json
import threading

import pytest

from cq_portage.cq.client import Refused
from cq_portage.sandbox.server import hold_queue, wait_running


def test_twenty_clients_same_command_runs_once_all_told(server, tmp_path):
    counter = tmp_path / "runs"
    argv = ["sh", "-c", f"echo run >> {counter}; exit 5"]
    with server.client() as client:
        hold_queue(client, 3)
    outcomes, barrier = [None] * 20, threading.Barrier(20)

    def submit(i):
        with server.client() as c:
            barrier.wait()
            outcomes[i] = c.run(argv)

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert counter.read_text() == "run\n"
    assert {(o.job_id, o.exit_status) for o in outcomes} == {(outcomes[0].job_id, 5)}
    with server.client() as client:
        assert client.status(outcomes[0].job_id).waiters == 20


def test_identical_to_running_job_is_queued_once_as_follow_up(client, tmp_path):
    counter = tmp_path / "runs"
    argv = ["sh", "-c", f"echo run >> {counter}; sleep 0.5"]
    first = client.submit(argv)
    wait_running(client, first.job_id)
    second, third = client.submit(argv), client.submit(argv)
    assert second.job_id != first.job_id and not second.merged
    assert third.job_id == second.job_id and third.merged
    assert client.wait(second.job_id).ok
    assert counter.read_text() == "run\nrun\n"


def test_different_environment_or_argv_is_not_merged(client):
    hold_queue(client, 3)
    a = client.submit(["true"], {"USE": "ssl"})
    b = client.submit(["true"], {"USE": "-ssl"})
    c = client.submit(["true", "x"], {"USE": "ssl"})
    assert len({a.job_id, b.job_id, c.job_id}) == 3


HOOK = """#!/usr/bin/env python3
import json, sys
request = json.load(sys.stdin)
job, queue = request["job"], request["queue"]
with open(sys.argv[1], "a") as log:
    log.write(json.dumps(request) + "\\n")
key = job["dedupe_key"]
if key == "reject-me":
    print(json.dumps({"action": "reject", "reason": "not on my watch"}))
elif key == "broken":
    print("this is not json")
else:
    same = [j for j in queue if j["state"] == "queued" and j["dedupe_key"] == key]
    print(json.dumps({"action": "merge", "job": same[0]["id"]} if same else {"action": "accept"}))
"""


@pytest.fixture
def hooked_server(make_server, tmp_path):
    hook = tmp_path / "hook.py"
    hook.write_text(HOOK)
    hook.chmod(0o755)
    return make_server({"incoming_hook": [str(hook), str(tmp_path / "hook.log")]})


def test_hook_merges_by_dedupe_key_rejects_and_fails_closed(hooked_server, tmp_path):
    with hooked_server.client() as client:
        hold_queue(client, 3)
        a = client.submit(["sh", "-c", "exit 1"], {"USE": "ssl"}, dedupe_key="dev-libs/foo-1 ssl")
        b = client.submit(["sh", "-c", "exit 1"], {"USE": "ssl http2"},
                          dedupe_key="dev-libs/foo-1 ssl")
        assert b.job_id == a.job_id and b.merged  # different commands, one instance
        with pytest.raises(Refused, match="not on my watch"):
            client.submit(["true"], dedupe_key="reject-me")
        with pytest.raises(Refused, match="incoming hook failed: answer is not JSON"):
            client.submit(["true"], dedupe_key="broken")
        assert client.wait(a.job_id).exit_status == 1
    seen = [json.loads(line) for line in (tmp_path / "hook.log").read_text().splitlines()]
    second = seen[2]  # blocker, a, b ...
    assert second["job"]["env"] == {"USE": "ssl http2"}
    assert [j["id"] for j in second["queue"] if j["state"] == "queued"] == [a.job_id]
    assert "hook rejected" in hooked_server.log.read_text()


def test_hook_named_without_a_path_is_found_in_path(make_server, tmp_path):
    folder = tmp_path / "bin"
    folder.mkdir()
    hook = folder / "my-hook"
    hook.write_text('#!/bin/sh\necho \'{"action": "reject", "reason": "found me"}\'\n')
    hook.chmod(0o755)
    import os

    server = make_server({"incoming_hook": ["my-hook"]},
                         env=dict(os.environ, PATH=f"{folder}:{os.environ['PATH']}"))
    with server.client() as client:
        with pytest.raises(Refused, match="found me"):
            client.submit(["true"])
