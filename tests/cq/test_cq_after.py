"""Jobs that run after others (`after`): real munged, real cq-server processes, real sshd
build hosts; order across requesters and hosts, failure and cancel cascades, restarts."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import threading
import time

import pytest

from cq_portage.cq import cq_pb2 as pb
from cq_portage.cq.client import Refused
from cq_portage.cq.job import JobState, Status
from cq_portage.cq.wire import BadRequest, Limits, Op, build_request, parse_request
from cq_portage.sandbox.server import hold_queue, wait_running

from helpers import JOBS_V01, cq_client, original_client_request, raw_exchange, wait_for
from test_cq_hosts import ssh_host, sshds, with_hosts  # noqa: F401 (a fixture)
from test_cq_security import NOBODY, credential, nobody_credential, public_munged  # noqa: F401


def appender(trace, word: str, seconds: float = 0) -> list[str]:
    """A job that takes `seconds`, then writes `word` to the shared trace."""
    return ["sh", "-c", f"sleep {seconds}; echo {word} >> {trace}"]


def gated(go, trace, word: str) -> list[str]:
    """A job that writes `word` to the trace once `go` exists (as the test says when)."""
    return ["sh", "-c", f"while [ ! -e {go} ]; do sleep 0.05; done; echo {word} >> {trace}"]


def gate(client, path, **kw) -> int:
    """A running job that ends once `path` exists: what comes next stays queued till then,
    however slow the machine."""
    job_id = client.submit(["sh", "-c", f"while [ ! -e {path} ]; do sleep 0.05; done"],
                           **kw).job_id
    wait_running(client, job_id)
    return job_id


def test_after_on_the_wire_is_a_set_and_absent_unless_given():
    req = parse_request(build_request(Op.SUBMIT, ["a"], after=[5, 3, 5]), Limits())
    assert req.after == (3, 5)
    plain = build_request(Op.SUBMIT, ["a"])
    assert parse_request(plain, Limits()).after == ()
    assert b"\xc8\x01" not in plain  # field 25's tag: not a byte more for an old peer
    original = pb.cq_req(command="a", args=["a", ""], env=[""]).SerializeToString()
    assert parse_request(original, Limits()).after == ()
    with pytest.raises(BadRequest, match="^more than 2 jobs to run after$"):
        parse_request(build_request(Op.SUBMIT, ["a"], after=[1, 2, 3]), Limits(max_after=2))
    assert "after" not in [f.name for f, _ in pb.job_info(id=1).ListFields()]


def test_a_job_waits_for_one_on_another_host_and_holds_none_of_its_requester_back(
        make_server, sshds, tmp_path):
    remote = sshds("far")
    server = make_server(with_hosts(here=None, far=ssh_host(remote)))
    trace, go = tmp_path / "trace", tmp_path / "go"
    with server.client() as client:
        lib = client.submit(gated(go, trace, "lib")).job_id
        wait_running(client, lib)
        app = client.submit(appender(trace, "app"), after=[lib]).job_id
        other = client.submit(appender(trace, "other")).job_id  # needs nothing
        wait_for(lambda: client.status(other).state == JobState.DONE, timeout=60,
                 what="the job needing nothing ran on the free host")  # lib holds the other
        assert client.wait(other).ok
        waiting = client.status(app)
        assert waiting.state == JobState.QUEUED and list(waiting.after) == [lib]
        assert waiting.position is None  # it has no place while it waits
        listing = cq_client(server, "--list").stdout
        assert f"queued (after {lib})" in listing
        assert f"after:     {lib}" in cq_client(server, "--status", str(app)).stdout
        assert json.loads(cq_client(server, "--status", str(app), "--json").stdout)[
            "after"] == [str(lib)]  # uint64 in protobuf's JSON: a string
        go.touch()
        assert client.wait(app).ok
        first, second = client.status(lib), client.status(app)
        assert second.started >= first.finished  # not a moment before
        assert client.status(other).finished < first.finished  # ran on the free host
        assert {first.host, client.status(other).host} == {"here", "far"}
    assert trace.read_text().split() == ["other", "lib", "app"]


def test_two_requesters_share_a_merged_build_and_the_next_waits_for_it(
        make_server, public_munged, sshds, open_dir):
    """One group's cq-emerge (nobody) submits a library, another's (root) submits the same
    library (merged) and a package needing it; a second host is free all along."""
    group = subprocess.run(["getent", "group", str(NOBODY)], capture_output=True,
                           text=True).stdout.split(":")[0]
    remote = sshds("far")
    server = make_server({"allow": {"users": ["root"], "groups": [group]},
                          **with_hosts(here=None, far=ssh_host(remote))},
                         munge_socket=public_munged.socket)
    trace = open_dir / "trace"
    lib_argv = appender(trace, "lib", 2)
    with server.client(munge_socket=public_munged.socket) as client:
        for _ in range(2):  # both hosts busy: what is submitted next stays queued
            gate(client, open_dir / "go")
    rep = raw_exchange(server.port, nobody_credential(
        public_munged.socket, build_request(Op.SUBMIT, lib_argv)))
    assert rep.internal_status == 0 and rep.job_id
    lib = rep.job_id
    with server.client(munge_socket=public_munged.socket) as client:
        same = client.submit(lib_argv)
        assert same.merged and same.job_id == lib
        app = client.submit(appender(trace, "app"), after=[same.job_id]).job_id
        (open_dir / "go").touch()
        wait_running(client, lib)
        time.sleep(0.5)
        assert client.status(app).state == JobState.QUEUED  # though a host is free
        assert client.wait(app).ok
        first, second = client.status(lib), client.status(app)
        assert first.requester_uid == NOBODY and second.requester_uid == 0
        assert first.waiters == 2 and second.started >= first.finished
    assert trace.read_text().split() == ["lib", "app"]


def test_a_failed_job_fails_its_dependants_unrun_and_every_waiter_is_told(server, tmp_path):
    with server.client() as client:
        hold_queue(client, 1.5)
        bad = client.submit(["sh", "-c", "exit 3"]).job_id
        child = client.submit(["touch", str(tmp_path / "child")], after=[bad]).job_id
        grandchild = client.submit(["touch", str(tmp_path / "grandchild")],
                                   after=[child]).job_id
        unrelated = client.submit(["true"]).job_id
        result = {}
        waiter = threading.Thread(target=lambda: result.update(cli=cq_client(
            server, "-A", str(bad), "--", "touch", str(tmp_path / "cli"))))
        waiter.start()  # a foreground cq-client: it is told when its job fails
        assert client.wait(bad).exit_status == 3
        told = time.monotonic()
        outcome = client.wait(grandchild)
        assert outcome.state == "failed" and outcome.internal_status == Status.DEPENDENCY_FAILED
        assert outcome.error == f"job {child} it needed ended: failed"
        assert client.wait(child).error == f"job {bad} it needed ended: exit status 3"
        waiter.join(30)
        assert time.monotonic() - told < 5  # told at once, not at a poll's end
        cli = result["cli"]
        assert cli.returncode == 255
        assert "it needed ended: exit status 3" in cli.stderr and len(cli.stderr.splitlines()) == 1
        assert client.wait(unrelated).ok
        # Submitted after its dependency failed: accepted, and failed as soon as asked.
        late = client.submit(["touch", str(tmp_path / "late")], after=[bad])
        assert not late.merged
        assert client.status(late.job_id).state == JobState.FAILED
        assert client.wait(late.job_id).error == f"job {bad} it needed ended: exit status 3"
    for name in ("child", "grandchild", "cli", "late"):
        assert not (tmp_path / name).exists(), f"{name} ran"


def test_cancelling_a_dependency_fails_its_dependants(server, tmp_path):
    with server.client() as client:
        running = client.submit(["sleep", "30"]).job_id
        wait_running(client, running)
        queued = client.submit(["sleep", "30"]).job_id
        after_queued = client.submit(["touch", str(tmp_path / "a")], after=[queued]).job_id
        after_running = client.submit(["touch", str(tmp_path / "b")], after=[running]).job_id
        client.cancel(queued)
        assert client.wait(after_queued).error == f"job {queued} it needed ended: cancelled"
        start = time.monotonic()
        client.cancel(running)
        outcome = client.wait(after_running)
        assert time.monotonic() - start < 15  # the 10 s stop grace at most, then the cascade
        assert outcome.error == f"job {running} it needed ended: cancelled"
        assert outcome.internal_status == Status.DEPENDENCY_FAILED
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_waiting_jobs_survive_a_restart_and_a_killed_dependency_fails_them(server, tmp_path):
    trace = tmp_path / "trace"
    with server.client() as client:
        hold_queue(client, 1.5)
        first = client.submit(appender(trace, "first")).job_id
        second = client.submit(appender(trace, "second"), after=[first]).job_id
    assert server.stop() == 0  # SIGTERM: the running job finishes, the queue stays
    server.start()
    with server.client() as client:
        assert list(client.status(second).after) == [first]
        assert client.wait(second).ok
        assert client.status(second).started >= client.status(first).finished
        long = client.submit(["sh", "-c", f"echo started > {tmp_path}/long; sleep 60"]).job_id
        dependant = client.submit(appender(trace, "never"), after=[long]).job_id
        wait_for(lambda: (tmp_path / "long").exists(), what="the long job started")
    server.kill()  # kill -9: the long job is interrupted, never re-run
    server.start()
    with server.client() as client:
        assert client.wait(long).state == "interrupted"
        assert client.wait(dependant).error == f"job {long} it needed ended: interrupted"
    assert trace.read_text().split() == ["first", "second"]


def test_unknown_and_too_many_ids_are_refused_with_one_line(make_server):
    server = make_server({"limits": {"max_after": 2}})
    with server.client() as client:
        known = client.run(["true"]).job_id
        with pytest.raises(Refused, match="^job 999 it should run after is unknown$"):
            client.submit(["true"], after=[known, 999])
        with pytest.raises(Refused, match="^more than 2 jobs to run after$"):
            client.submit(["true"], after=[known, known + 1000, known + 2000])
        for bad_id in (0, (1 << 64) - 1):  # no job has id 0; SQLite holds no larger id
            rep = raw_exchange(server.port, credential(server.munge_socket, build_request(
                Op.SUBMIT, ["true"], after=[bad_id])))
            assert rep.internal_status == Status.REFUSED
            assert rep.error == f"job {bad_id} it should run after is unknown"
        assert client.submit(["true"], after=[known, known]).job_id  # a repeat is one
    refused = cq_client(server, "-A", f"{known},999", "--", "true")
    assert refused.returncode == 255
    assert refused.stderr == "cq-client: job 999 it should run after is unknown\n"
    for option, why in ((["-A", "x"], "bad job id 'x' in --after"),
                        (["-A", "3", "--list"], "--after goes with a command to submit")):
        usage = cq_client(server, *option, "--", "true") if "--list" not in option \
            else cq_client(server, *option)
        assert usage.returncode == 2 and why in usage.stderr
        assert "Traceback" not in usage.stderr
    assert cq_client(server, "-A", str(known), "-A", str(known), "--", "true").returncode == 0
    assert "Traceback" not in server.log.read_text()


def test_the_original_client_is_unaffected_by_waiting_jobs(server, tmp_path):
    with server.client() as client:
        blocker = hold_queue(client, 1)
        waiting = client.submit(["touch", str(tmp_path / "waited")], after=[blocker]).job_id
    frame = original_client_request(server.munge_socket, ["sh", "-c", "exit 4"], [])
    rep = raw_exchange(server.port, frame, timeout=30)
    assert rep.ListFields() == [(pb.cq_rep.DESCRIPTOR.fields_by_name["internal_status"], 0),
                                (pb.cq_rep.DESCRIPTOR.fields_by_name["exit_status"], 4)]
    with server.client() as client:
        assert client.wait(waiting).ok
        legacy = [j for j in client.list() if list(j.args) == ["sh", "-c", "exit 4"]][0]
        assert list(legacy.after) == []
    assert (tmp_path / "waited").exists()


HOOK = """#!/usr/bin/env python3
import json, sys
request = json.load(sys.stdin)
with open(sys.argv[1], "a") as log:
    log.write(json.dumps(request) + "\\n")
same = [j for j in request["queue"] if j["state"] == "queued"
        and j["dedupe_key"] == request["job"]["dedupe_key"]]
print(json.dumps({"action": "merge", "job": same[0]["id"]} if same else {"action": "accept"}))
"""


def test_a_merged_submission_keeps_the_after_of_the_job_it_joined(server, make_server,
                                                                  tmp_path):
    with server.client() as client:
        blocker = gate(client, tmp_path / "go")
        first = client.submit(["echo", "same"], after=[blocker])
        again = client.submit(["echo", "same"])  # server dedupe: no `after` of its own
        assert again.merged and again.job_id == first.job_id
        assert list(client.status(first.job_id).after) == [blocker]
        (tmp_path / "go").touch()
        assert client.wait(first.job_id).ok
        assert client.status(first.job_id).started >= client.status(blocker).finished
    hook = tmp_path / "hook.py"
    hook.write_text(HOOK)
    hook.chmod(0o755)
    hooked = make_server({"incoming_hook": [str(hook), str(tmp_path / "hook.log")]},
                         folder="hooked")
    with hooked.client() as client:
        blocker = gate(client, tmp_path / "go-hooked")
        other = client.submit(["true"]).job_id
        first = client.submit(["echo", "a"], dedupe_key="k", after=[blocker])
        joined = client.submit(["echo", "b"], dedupe_key="k", after=[other])
        assert joined.merged and joined.job_id == first.job_id
        assert list(client.status(first.job_id).after) == [blocker]
        (tmp_path / "go-hooked").touch()
        assert client.wait(first.job_id).ok
    seen = [json.loads(line) for line in (tmp_path / "hook.log").read_text().splitlines()]
    assert seen[2]["job"]["after"] == [blocker] and seen[3]["job"]["after"] == [other]
    assert [j["after"] for j in seen[3]["queue"] if j["id"] == first.job_id] == [[blocker]]


def test_a_dependency_requeued_after_its_host_went_down_is_still_waited_for(make_server,
                                                                           sshds, tmp_path):
    one, two = sshds("one"), sshds("two")
    server = make_server(with_hosts(one=ssh_host(one), two=ssh_host(two)))
    trace, go = tmp_path / "trace", tmp_path / "go"
    with server.client() as client:
        lib = client.submit(["sh", "-c", f"echo start >> {trace}; "
                                         f"{gated(go, trace, 'lib')[2]}"]).job_id
        app = client.submit(appender(trace, "app"), after=[lib]).job_id
        wait_for(lambda: trace.exists(), what="lib started")
        first_host = client.status(lib).host
        {"one": one, "two": two}[first_host].stop()
        wait_for(lambda: client.status(lib).attempts == 2, what="lib requeued and restarted")
        assert client.status(app).state == JobState.QUEUED  # the other host is busy with lib
        go.touch()
        assert client.wait(app).ok
        lib_info, app_info = client.status(lib), client.status(app)
        assert lib_info.host != first_host and app_info.started >= lib_info.finished
    assert trace.read_text().split() == ["start", "start", "lib", "app"]


def test_a_queue_stored_before_after_existed_is_kept_and_runs(make_server, tmp_path):
    """The job table of the version with several build hosts had no after/unmet columns, no
    deps table, and an index on all queued jobs per requester: migrated at start."""
    state = tmp_path / "server" / "state"
    state.mkdir(parents=True, mode=0o750)
    db = sqlite3.connect(state / "cq.db")
    db.executescript(f"""
        CREATE TABLE jobs ({JOBS_V01},
            labels TEXT NOT NULL DEFAULT '', host TEXT, attempts INTEGER NOT NULL DEFAULT 0);
        CREATE INDEX jobs_queued_by_requester ON jobs(requester_uid, id)
            WHERE state = 'queued';
        INSERT INTO jobs (state, command, argv, env, requester_uid, requester_gid, key,
            submitted) VALUES ('queued', 'sh', '["sh", "-c", "echo one"]', '[]', 0, 0, 'a', 1),
            ('queued', 'sh', '["sh", "-c", "echo two"]', '[]', 0, 0, 'b', 2);
    """)
    db.close()
    (state / "cq.db").chmod(0o640)
    server = make_server()
    with server.client() as client:
        assert client.wait(2).ok and client.wait(1).ok
        assert client.status(2).started >= client.status(1).finished  # order kept
        assert list(client.status(1).after) == []
        third = client.submit(["sh", "-c", "echo three"], after=[2]).job_id
        assert client.wait(third).ok and client.log(third)[0] == b"three\n"
    db = sqlite3.connect(state / "cq.db")
    indexes = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    db.close()
    assert "jobs_queued_by_requester" not in indexes and "jobs_ready" in indexes
