"""cq-server as a service: --daemon, pid file, log file, SIGHUP reload, SIGTERM with grace."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest
import yaml

from cq_portage.cq.client import Refused
from cq_portage.sandbox.processes import running as alive
from cq_portage.sandbox.server import wait_running

from helpers import wait_for


def start_daemon(server, tmp_path, config: dict) -> int:
    server.config = config
    argv = server.argv() + ["--daemon", "--pid-file", str(tmp_path / "cq.pid"),
                            "--log-file", str(tmp_path / "cq.log")]
    launcher = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert launcher.returncode == 0, launcher.stderr
    wait_for(lambda: (tmp_path / "cq.pid").exists() and "listening" in log(tmp_path))
    return int((tmp_path / "cq.pid").read_text())


def log(tmp_path) -> str:
    path = tmp_path / "cq.log"
    return path.read_text() if path.exists() else ""


def test_daemon_reload_and_graceful_stop(make_server, tmp_path):
    server = make_server(folder="fg")  # gives a CqServer with a port and a state dir
    server.kill()
    pid = start_daemon(server, tmp_path, {"stop_grace_seconds": 1})
    assert pid != os.getpid() and alive(pid)
    client = server.client()
    trace = tmp_path / "trace"
    assert client.run(["sh", "-c", f"echo first >> {trace}"]).ok

    # SIGHUP with queued jobs: a broken config is refused and logged, a good one applied.
    blocker = client.submit(["sleep", "1"]).job_id
    queued = [client.submit(["sh", "-c", f"echo {i} >> {trace}"]).job_id for i in range(3)]
    config_file = server.folder / "cq-server.yaml"
    config_file.write_text("stop_grace_seconds: -1\nnot_a_key: 1\n")
    os.kill(pid, signal.SIGHUP)
    wait_for(lambda: log(tmp_path).count("configuration not reloaded") == 2)
    refused = [line for line in log(tmp_path).splitlines() if "not reloaded" in line]
    for problem in ("cq-server.yaml:2: unknown key 'not_a_key'",  # a line each
                    "cq-server.yaml:1: stop_grace_seconds must be between 0 and"):
        assert any(problem in line for line in refused), problem
    config_file.write_text(yaml.safe_dump({"stop_grace_seconds": 1,
                                           "environment": {"deny": ["FORBIDDEN"]}}))
    os.kill(pid, signal.SIGHUP)
    wait_for(lambda: "configuration reloaded" in log(tmp_path))
    assert alive(pid) and int((tmp_path / "cq.pid").read_text()) == pid
    for job_id in [blocker, *queued]:
        assert client.wait(job_id).ok
    assert trace.read_text().split() == ["first", "0", "1", "2"]
    with pytest.raises(Refused, match="FORBIDDEN is not allowed"):  # the reloaded denylist
        client.run(["true"], {"FORBIDDEN": "1"})

    # logrotate moves the log away: what follows goes to a new file of the same name.
    (tmp_path / "cq.log").rename(tmp_path / "cq.log.1")
    rotated = client.run(["true"]).job_id
    wait_for(lambda: f"job {rotated} queued" in log(tmp_path))
    assert f"job {rotated}" not in (tmp_path / "cq.log.1").read_text()

    # SIGTERM while a job runs past the grace time: interrupted cleanly, queue kept.
    long = client.submit(["sleep", "30"]).job_id
    later = client.submit(["sh", "-c", f"echo later >> {trace}"]).job_id
    wait_running(client, long)
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not alive(pid), timeout=20)
    assert not (tmp_path / "cq.pid").exists()
    assert "stopped" in log(tmp_path)
    client.close()

    server.start()
    with server.client() as client:
        stopped = client.wait(long)
        assert stopped.state == "interrupted" and "shut down" in stopped.error
        assert client.wait(later).ok
    assert trace.read_text().split()[-1] == "later"


def test_sigterm_lets_a_short_job_finish(make_server, tmp_path):
    server = make_server({"stop_grace_seconds": 10})
    with server.client() as client:
        job = client.submit(["sleep", "1"]).job_id
        wait_running(client, job)
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(20) == 0
    server.start()
    with server.client() as client:
        assert client.wait(job).state == "done"


def test_daemon_refuses_second_instance_and_reports_config_errors(make_server, tmp_path):
    server = make_server(folder="fg")
    server.kill()
    pid = start_daemon(server, tmp_path, {})
    try:
        again = subprocess.run(server.argv() + ["--daemon", "--pid-file",
                                                str(tmp_path / "cq.pid")],
                               capture_output=True, text=True, timeout=30)
        assert again.returncode == 1
        assert again.stderr == (
            f"cq-server: already running as pid {pid} (pid file {tmp_path / 'cq.pid'})\n")
        bad = tmp_path / "bad.yaml"
        bad.write_text("listen:\n  port: [1]\n")
        broken = subprocess.run(server.argv()[:-2] + ["--config", str(bad), "--daemon"],
                                capture_output=True, text=True, timeout=30)
        assert broken.returncode == 2
        assert broken.stderr == f"cq-server: {bad}:2: port must be int, not list\n"
    finally:
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not alive(pid))


def test_check_config(make_server, tmp_path):
    server = make_server(folder="fg")
    good = subprocess.run(server.argv() + ["--check-config"], capture_output=True, text=True)
    assert good.returncode == 0 and "configuration OK" in good.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("run_as: nosuchuser\n")
    broken = subprocess.run(server.argv()[:-2] + ["--config", str(bad), "--check-config"],
                            capture_output=True, text=True)
    assert broken.returncode == 2
    assert broken.stderr == f"cq-server: {bad}:1: run_as: unknown user 'nosuchuser'\n"
