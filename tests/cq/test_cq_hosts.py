"""Several build hosts behind one cq-server: this machine and real sshd processes on 127.0.0.1,
each a host of its own (own host key, client key, port)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cq_portage.cq.client import Refused
from cq_portage.cq.config import load_config
from cq_portage.yamlfile import ConfigError
from cq_portage.cq.job import JobState, Status
from cq_portage.sandbox.server import wait_running
from cq_portage.sandbox.sshd import Sshd

from helpers import cq_client, original_client_request, raw_exchange, wait_for

# Short enough for tests: a frozen host is noticed within check + connect seconds.
FAST_SSH = {"connect_timeout": 2, "check_seconds": 1, "retry_seconds": 0.5}


def ssh_host(sshd: Sshd, **extra) -> dict:
    return {"url": sshd.url, "key_file": str(sshd.client_key),
            "known_hosts": str(sshd.known_hosts), **extra}


def with_hosts(**hosts) -> dict:
    """A server config with these build hosts, one that notices a host down within seconds."""
    return {"build_hosts": hosts, "ssh": FAST_SSH}


@pytest.fixture
def sshds(tmp_path):
    started: list[Sshd] = []

    def start(name: str) -> Sshd:
        sshd = Sshd(tmp_path / name).start()
        started.append(sshd)
        return sshd

    yield start
    for sshd in started:
        sshd.thaw()
        sshd.stop()


def hosts(client) -> dict:
    return {h.name: h for h in client.overview()[1]}


def test_jobs_run_on_several_hosts_at_once_and_list_shows_the_hosts(make_server, sshds,
                                                                    tmp_path):
    remote = sshds("remote")
    server = make_server(with_hosts(here=None, far=ssh_host(remote)))
    with server.client() as client:
        first = client.submit(["sh", "-c", "echo on $CQ_JOB_ID; sleep 3"]).job_id
        second = client.submit(["sh", "-c", "echo on $CQ_JOB_ID; sleep 3"]).job_id
        wait_running(client, first)
        wait_running(client, second)  # together: one job per host, two hosts
        ran_on = {client.status(first).host, client.status(second).host}
        assert ran_on == {"here", "far"}
        listed = hosts(client)
        assert {listed["here"].job_id, listed["far"].job_id} == {first, second}
        assert listed["far"].url == remote.url and listed["far"].up
        for job_id in (first, second):
            assert client.wait(job_id).ok
            assert client.log(job_id)[0] == f"on {job_id}\n".encode()
    listing = cq_client(server, "--list").stdout
    assert "HOST" in listing and "far" in listing and remote.url in listing
    as_json = json.loads(cq_client(server, "--list", "--json").stdout)
    assert sorted(h["name"] for h in as_json["hosts"]) == ["far", "here"]


def test_labels_pick_the_host_and_labels_no_host_has_are_refused(make_server, sshds):
    remote = sshds("arm")
    server = make_server(with_hosts(x86={"labels": ["amd64"]},
                                    arm=ssh_host(remote, labels=["arm64", "big"])))
    with server.client() as client:
        for labels, host in ((["arm64"], "arm"), (["amd64"], "x86"), (["big", "arm64"], "arm")):
            job_id = client.submit(["true"], labels=labels).job_id
            assert client.wait(job_id).ok
            assert client.status(job_id).host == host
            assert sorted(client.status(job_id).labels) == sorted(labels)
        with pytest.raises(Refused, match="no build host has the labels amd64 arm64"):
            client.submit(["true"], labels=["arm64", "amd64"])
    result = cq_client(server, "-L", "arm64", "--", "sh", "-c", "exit 7")
    assert result.returncode == 7
    refused = cq_client(server, "-L", "sparc", "--", "true")
    assert refused.returncode == 255
    assert refused.stderr.count("\n") == 1 and "no build host has the labels sparc" in refused.stderr
    bad = cq_client(server, "-L", "no spaces", "--", "true")
    assert bad.returncode == 2 and "bad label" in bad.stderr


def test_a_requesters_jobs_start_in_the_order_they_came(make_server, sshds):
    remote = sshds("any")
    server = make_server(with_hosts(here={"labels": ["x"]}, far=ssh_host(remote)))
    with server.client() as client:
        busy = client.submit(["sleep", "2"], labels=["x"]).job_id
        wait_running(client, busy)
        waits_for_here = client.submit(["true"], labels=["x"]).job_id
        later = client.submit(["true"]).job_id  # "far" is free, but an earlier job waits
        time.sleep(1)
        assert client.status(later).state == JobState.QUEUED
        assert client.wait(later).ok
        first, second = client.status(waits_for_here), client.status(later)
        assert first.started <= second.started and first.host == "here"


def test_remote_output_streams_into_the_job_log(make_server, sshds):
    remote = sshds("stream")
    server = make_server(with_hosts(far=ssh_host(remote)))
    with server.client() as client:
        job_id = client.submit(["sh", "-c", "echo first; sleep 3; echo second >&2"]).job_id
        data = wait_for(lambda: client.log(job_id)[0], what="the first line")
        assert data == b"first\n" and client.status(job_id).state == JobState.RUNNING
        assert client.wait(job_id).ok
        assert client.log(job_id)[0] == b"first\nsecond\n"
    follow = cq_client(server, "--log", str(job_id), "-f")
    assert follow.stdout == "first\nsecond\n"


def test_a_host_that_goes_down_gets_its_job_requeued_once_then_failed(make_server, sshds):
    one, two = sshds("one"), sshds("two")
    server = make_server(with_hosts(one=ssh_host(one), two=ssh_host(two)))
    by_name = {"one": one, "two": two}
    with server.client() as client:
        job_id = client.submit(["sh", "-c", "echo started on $CQ_JOB_ID; sleep 60"]).job_id
        wait_for(lambda: client.log(job_id)[0], what="the job started on its host")
        first_host = client.status(job_id).host
        by_name[first_host].stop()  # the host goes down, and its sessions with it
        second = wait_for(lambda: (s := client.status(job_id)).state == JobState.RUNNING
                          and s.host != first_host and s, what="the requeued job running")
        assert second.attempts == 2
        assert not hosts(client)[first_host].up
        wait_for(lambda: client.log(job_id)[0].count(b"started on") == 2, what="restarted")
        by_name[second.host].stop()
        outcome = client.wait(job_id)
        assert outcome.state == "failed" and outcome.internal_status == Status.HOST_LOST
        assert "went down while it ran, 2 times" in outcome.error
        listed = hosts(client)
        assert all(not h.up and h.error for h in listed.values())
        log = client.log(job_id)[0].decode()
        assert log.count(f"started on {job_id}") == 2
        assert f"build host {first_host} went down" in log
        # Nothing is lost meanwhile: a job queued while every host is down waits for one.
        waiting = client.submit(["sh", "-c", "echo back"]).job_id
        time.sleep(1)
        assert client.status(waiting).state == JobState.QUEUED
        one.start()  # the same host key and port: it came back
        assert client.wait(waiting).ok
        assert client.status(waiting).host == "one" and client.log(waiting)[0] == b"back\n"
        assert hosts(client)["one"].up
    assert "build host one is up again" in server.log.read_text()


def test_a_frozen_host_is_found_out_and_its_job_runs_elsewhere(make_server, sshds):
    frozen = sshds("frozen")
    server = make_server(with_hosts(here={"labels": ["x"]},
                                    far=ssh_host(frozen, labels=["x"])))
    with server.client() as client:
        busy = client.submit(["sleep", "3"], labels=["x"]).job_id
        wait_running(client, busy)
        assert client.status(busy).host == "here"
        job_id = client.submit(["sh", "-c", "echo hello; sleep 30"], labels=["x"]).job_id
        wait_running(client, job_id)
        assert client.status(job_id).host == "far"
        wait_for(lambda: client.log(job_id)[0], what="output from far")
        frozen.freeze()  # TCP stays up; nothing answers
        requeued = wait_for(lambda: (s := client.status(job_id)).host == "here" and s,
                            timeout=30, what="the job moved to here")
        assert requeued.attempts == 2
        far = hosts(client)["far"]
        assert not far.up and "answer" in far.error
        client.cancel(job_id)  # no need to sleep 30 s here as well
        outcome = client.wait(job_id)
        assert outcome.state == "cancelled"
        assert "build host far went down" in client.log(job_id)[0].decode()


def test_an_unknown_host_key_is_a_clear_error_and_the_host_stays_down(make_server, sshds,
                                                                      tmp_path):
    spoofed, other = sshds("spoofed"), sshds("other")
    wrong = tmp_path / "known_hosts"  # holds another host's key under this host's name
    wrong.write_text(other.host_key_line().replace(str(other.port), str(spoofed.port)))
    server = make_server(with_hosts(
        here=None, spoofed={**ssh_host(spoofed), "known_hosts": str(wrong)}))
    with server.client() as client:
        down = wait_for(lambda: not (h := hosts(client)["spoofed"]).up and h,
                        what="spoofed marked down")
        assert "host key of 127.0.0.1:" in down.error and str(wrong) in down.error
        for _ in range(3):  # every job runs on the host that is there
            job_id = client.submit(["true"]).job_id
            assert client.wait(job_id).ok and client.status(job_id).host == "here"
    assert "build host spoofed is down: host key of" in server.log.read_text()


def test_a_key_the_host_refuses_is_a_clear_error_and_the_host_stays_down(make_server, sshds):
    host, other = sshds("refusing"), sshds("stranger")
    server = make_server(with_hosts(
        here=None, refusing={**ssh_host(host), "key_file": str(other.client_key)}))
    with server.client() as client:
        down = wait_for(lambda: not (h := hosts(client)["refusing"]).up and h,
                        what="refusing marked down")
        assert f"refused the key {other.client_key}" in down.error
        assert "authorized_keys" in down.error
        job_id = client.submit(["true"]).job_id
        assert client.wait(job_id).ok and client.status(job_id).host == "here"
    assert "Traceback" not in server.log.read_text()


def test_cancel_stops_a_job_on_a_remote_host(make_server, sshds, tmp_path):
    remote = sshds("cancel")
    server = make_server(with_hosts(far=ssh_host(remote)))
    pid_file = tmp_path / "pid"
    with server.client() as client:
        job_id = client.submit(["sh", "-c", f"echo $$ > {pid_file}; exec sleep 60"]).job_id
        wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), what="pid")
        pid = int(pid_file.read_text())
        client.cancel(job_id)
        outcome = client.wait(job_id)
        assert outcome.state == "cancelled" and outcome.internal_status == Status.CANCELLED
    assert wait_for(lambda: not Path(f"/proc/{pid}").exists(), what="the remote job gone")


def test_an_original_client_job_runs_on_a_remote_host_and_is_answered_at_its_end(
        make_server, sshds):
    remote = sshds("legacy")
    server = make_server(with_hosts(far=ssh_host(remote)))
    frame = original_client_request(server.munge_socket, ["sh", "-c", 'echo "$MSG"; exit 9'],
                                    ["MSG=from afar"])
    rep = raw_exchange(server.port, frame, timeout=30)
    assert (rep.internal_status, rep.exit_status) == (0, 9)
    with server.client() as client:
        [job] = client.list()
        assert job.host == "far" and client.log(job.id)[0] == b"from afar\n"


def test_stopping_the_server_ends_a_remote_job_and_records_it(make_server, sshds, tmp_path):
    remote = sshds("stop")
    server = make_server({**with_hosts(far=ssh_host(remote)), "stop_grace_seconds": 0.5})
    pid_file = tmp_path / "pid"
    with server.client() as client:
        job_id = client.submit(["sh", "-c", f"echo $$ > {pid_file}; exec sleep 60"]).job_id
        wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), what="pid")
    assert server.stop() == 0
    assert wait_for(lambda: not Path(f"/proc/{int(pid_file.read_text())}").exists(),
                    what="the remote job gone")
    server.start()
    with server.client() as client:
        outcome = client.wait(job_id)
        assert outcome.state == "interrupted" and "not re-run" in outcome.error


def test_a_reload_keeps_the_build_hosts_and_says_they_take_a_restart(make_server):
    server = make_server({"build_hosts": {"here": None}})
    (server.folder / "cq-server.yaml").write_text(
        json.dumps({"build_hosts": {"here": {"labels": ["x"]}}}))
    server.process.send_signal(signal.SIGHUP)
    wait_for(lambda: "configuration reloaded" in server.log.read_text(), what="the reload")
    assert "SIGHUP: build_hosts changed; that takes a restart" in server.log.read_text()
    with server.client() as client, pytest.raises(Refused, match="no build host has"):
        client.submit(["true"], labels=["x"])


def test_check_hosts_says_which_build_hosts_answer(sshds, tmp_path):
    good, gone = sshds("good"), sshds("gone")
    gone.stop()
    config = tmp_path / "cq-server.yaml"
    config.write_text(json.dumps(with_hosts(here={"labels": ["amd64"]}, good=ssh_host(good),
                                            gone=ssh_host(gone))))
    done = subprocess.run([sys.executable, "-m", "cq_portage.cq.server_cli", "--config",
                           str(config), "--check-hosts"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    assert lines[1:] == [
        "  here [amd64]: this machine",
        f"  good: {good.url} answers",
        f"  gone: {gone.url} DOWN: cannot reach 127.0.0.1:{gone.port} over SSH: "
        f"Unable to connect to port {gone.port} on 127.0.0.1"]


# -- the configuration ---------------------------------------------------------------------

def config_error(tmp_path, text: str) -> str:
    path = tmp_path / "cq-server.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{path}:")
    return message


def test_build_host_config_errors_name_file_and_line(tmp_path):
    key = tmp_path / "key"
    key.write_text("k")
    assert config_error(tmp_path, "build_hosts:\n  a: {url: 'ftp://x'}\n").endswith(
        "build host 'a': bad SSH URL 'ftp://x': not ssh:// (want ssh://user@host[:port]) "
        "(or 'local')")
    assert ":3: build hosts 'a' and 'b' are both local" in config_error(
        tmp_path, "build_hosts:\n  a: {}\n  b: {url: local}\n")
    assert ":2: build host 'a': bad label 'x y'" in config_error(
        tmp_path, "build_hosts:\n  a: {labels: ['x y']}\n")
    missing = config_error(tmp_path, f"build_hosts:\n  a:\n    url: ssh://root@h\n"
                                     f"    key_file: {key}\n    known_hosts: /nonexistent\n")
    assert ":5: build host 'a': known_hosts file /nonexistent cannot be read" in missing
    assert ":2: unknown key 'port' in build host 'a'" in config_error(
        tmp_path, "build_hosts:\n  a: {port: 22}\n")
    assert ":2: ssh.check_seconds must be positive" in config_error(
        tmp_path, "ssh:\n  check_seconds: 0\n")
    assert "run_as applies to the local build host only" in config_error(
        tmp_path, f"run_as: requester\nbuild_hosts:\n  a: {{url: 'ssh://root@h', key_file: {key},"
                  f" known_hosts: {key}}}\n")


def test_build_hosts_default_to_this_machine(tmp_path):
    path = tmp_path / "cq-server.yaml"
    path.write_text("hook_timeout: 5\n")
    [host] = load_config(path).hosts
    assert host.name == "local" and host.ssh is None and not host.labels
