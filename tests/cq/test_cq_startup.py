"""Starting as a service, on a state dir and a config it does not trust blindly: every
refusal is one line with its exit status; signals during start-up never kill the server."""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import stat
import subprocess
import time

import pytest

from cq_portage.cq.client import Refused
from cq_portage.sandbox.processes import running as alive
from cq_portage.sandbox.processes import wait_listening

from helpers import wait_for

NOBODY = 65534
DEEP = 50_000  # levels of nesting in a hostile config


def run_server(server, *extra: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(server.argv() + list(extra), capture_output=True, text=True,
                          timeout=timeout)


def assert_one_line(done: subprocess.CompletedProcess, status: int, *needles: str) -> str:
    assert done.returncode == status, done.stderr
    line = done.stderr
    assert line.startswith("cq-server: ") and line.count("\n") == 1, line
    assert "Traceback" not in line
    for needle in needles:
        assert needle in line, line
    return line


@pytest.fixture
def idle(make_server):
    """A CqServer with its port and folders, not running."""
    server = make_server(folder="s")
    server.kill()
    shutil.rmtree(server.state_dir)
    return server


# -- the config ----------------------------------------------------------------------------

@pytest.mark.parametrize("text, line, message", [
    ("limits:\n  max_request_bytes: 99999999999999999999\n", 2,
     "limits.max_request_bytes must be between 1 and 16777216"),
    ("limits: {max_args: 0}\n", 1, "limits.max_args must be between 1"),
    ("limits:\n  max_memory_bytes: 1099511627776000\n", 2, "limits.max_memory_bytes must be"),
    ("stop_grace_seconds: 1.0e+300\n", 1, "stop_grace_seconds must be between 0 and 86400"),
    ("hook_timeout: .nan\n", 1, "hook_timeout must be between 0 and 3600, not nan"),
    ("keep_finished_days: .inf\n", 1, "keep_finished_days must be between 0 and 36500"),
    ("ssh: {retry_seconds: 1.0e+20}\n", 1, "ssh.retry_seconds must be between 0 and 86400"),
    ("limits: " + "[" * DEEP + "]" * DEEP + "\n", 1, "nested more than 100 levels deep"),
    ("limits: " + "{a: " * DEEP + "1" + "}" * DEEP + "\n", 1, "nested more than 100 levels"),
    ("x:\n" + "- " * DEEP + "x\n", 2, "nested more than 100 levels deep"),
])
def test_config_beyond_bounds_is_one_line_exit_2(idle, text, line, message):
    config = idle.folder / "bad.yaml"
    config.write_text(text)
    argv = ["--config", str(config)]
    started = time.monotonic()
    for extra in (["--check-config"], []):  # checked, and refused at start alike
        done = subprocess.run(idle.argv()[:-2] + argv + extra, capture_output=True, text=True,
                              timeout=30)
        assert_one_line(done, 2, f"{config}:{line}: ", message)
    assert time.monotonic() - started < 20  # no deep recursion


def test_sighup_with_a_limit_beyond_bounds_keeps_the_old_config(make_server):
    server = make_server({"stop_grace_seconds": 1})
    config = server.folder / "cq-server.yaml"
    config.write_text("limits: {max_request_bytes: 99999999999999999999}\n")
    server.process.send_signal(signal.SIGHUP)
    wait_for(lambda: "configuration not reloaded" in server.log.read_text(), 10, "no reload")
    assert "limits.max_request_bytes must be between 1 and 16777216" in server.log.read_text()
    with server.client() as client:
        assert client.run(["true"]).ok


# -- the job store --------------------------------------------------------------------------

def test_a_damaged_store_is_one_line_exit_2(make_server):
    server = make_server()
    with server.client() as client:
        for i in range(200):
            client.submit(["echo", str(i)])
        client.wait(200)
    server.stop()
    db = server.state_dir / "cq.db"
    logs = sorted((server.state_dir / "logs").rglob("*.log"))
    assert len(logs) == 200

    with open(db, "r+b") as f:  # pages cut off at the end: a malformed image
        f.truncate(os.path.getsize(db) // 2)
    assert_one_line(run_server(server), 2, f"job store {db} is damaged", "move it aside",
                    "the job logs in")

    db.write_bytes(b"this is not SQLite" * 100)
    line = assert_one_line(run_server(server), 2, f"job store {db} is damaged",
                           "file is not a database", "move it aside")
    assert str(server.state_dir / "logs") in line
    assert sorted((server.state_dir / "logs").rglob("*.log")) == logs  # logs left alone


# -- the state dir --------------------------------------------------------------------------

def test_created_modes_are_tight(server):
    with server.client() as client:
        job = client.run(["echo", "hi"]).job_id
    state = server.state_dir
    mode = lambda p: stat.S_IMODE(os.stat(p).st_mode)  # noqa: E731
    assert mode(state) == 0o750 and mode(state / "logs") == 0o750
    assert mode(state / "logs" / "0000") == 0o750
    assert mode(state / "logs" / "0000" / f"{job}.log") == 0o640
    for name in ("cq.db", "cq.db-wal", "cq.db-shm", "running"):
        assert mode(state / name) & 0o137 == 0, name  # 0640 or tighter


@pytest.mark.parametrize("which, mode", [("state", 0o777), ("state", 0o1777),
                                         ("state", 0o770), ("logs", 0o777),
                                         ("logs", 0o1777)])
def test_a_state_dir_others_may_write_is_refused(idle, which, mode):
    target = idle.state_dir if which == "state" else idle.state_dir / "logs"
    target.mkdir(parents=True, exist_ok=True)
    target.chmod(mode)
    assert_one_line(run_server(idle), 1, str(target), f"(mode {mode:04o})",
                    "may be written by other users", "chmod 0750")


def test_a_state_dir_owned_by_another_user_is_refused(idle):
    idle.state_dir.mkdir(parents=True)
    idle.state_dir.chmod(0o750)
    os.chown(idle.state_dir, NOBODY, NOBODY)
    assert_one_line(run_server(idle), 1, str(idle.state_dir), f"owned by uid {NOBODY}")


@pytest.mark.parametrize("name", ["running", "cq.db"])
def test_a_planted_link_in_the_state_dir_is_refused_not_followed(idle, tmp_path, name):
    outside = tmp_path / "outside"
    outside.write_text("precious\n")
    idle.state_dir.mkdir(mode=0o750, parents=True)
    (idle.state_dir / name).symlink_to(outside)
    assert_one_line(run_server(idle), 1, str(idle.state_dir / name), "not a plain file")
    assert outside.read_text() == "precious\n"


def test_planted_links_for_job_logs_are_refused_not_followed(server, tmp_path):
    """A link where the next job's log goes (or its folder) fails that job with the reason;
    nothing outside the state dir is written or read."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "target").write_text("precious\n")
    logs = server.state_dir / "logs"
    with server.client() as client:
        first = client.run(["echo", "one"])
        assert first.ok and first.job_id == 1
        (logs / "0000" / "2.log").symlink_to(outside / "target")
        second = client.run(["echo", "two"])
        assert second.state == "failed" and "refused" in second.error
        assert "cannot open its log" in second.error
        # the log of a job that ran, replaced by a link: --log refuses it
        (logs / "0000" / "1.log").unlink()
        (logs / "0000" / "1.log").symlink_to(outside / "target")
        with pytest.raises(Refused, match="cannot read the log of job 1"):
            client.log(1)
        assert client.run(["true"]).ok  # and it goes on
    assert (outside / "target").read_text() == "precious\n"
    assert sorted(p.name for p in outside.iterdir()) == ["target"]


def test_a_planted_link_for_a_log_folder_is_not_followed(server, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (server.state_dir / "logs" / "0000").symlink_to(outside)
    with server.client() as client:
        outcome = client.run(["echo", "one"])
    assert outcome.state == "failed" and "cannot open its log" in outcome.error
    assert list(outside.iterdir()) == []


def test_a_pid_file_that_is_a_link_is_refused(idle, tmp_path):
    outside = tmp_path / "outside"
    outside.write_text("precious\n")
    pid = tmp_path / "cq.pid"
    pid.symlink_to(outside)
    done = run_server(idle, "--daemon", "--pid-file", str(pid), "--log-file",
                      str(tmp_path / "cq.log"))
    assert_one_line(done, 1, "cannot open the pid file", "symbolic link", str(pid))
    assert outside.read_text() == "precious\n"


# -- signals during start-up, systemd --------------------------------------------------------

def catches_sighup(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            mask = next(line for line in f if line.startswith("SigCgt:")).split()[1]
    except (FileNotFoundError, StopIteration):
        return False
    return bool(int(mask, 16) & (1 << (signal.SIGHUP - 1)))


def test_signals_at_random_moments_of_start_up(idle, tmp_path):
    """SIGHUP and SIGTERM from the moment the program runs until it listens: the outcome is
    a running server that reloaded, or a clean exit (status 0), never a dead one."""
    rng = random.Random(12)
    idle.config = {"stop_grace_seconds": 1}
    argv = idle.argv()
    trials = 12
    for trial in range(trials):
        log = tmp_path / f"start-{trial}.log"
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=open(log, "wb"))
        deadline = time.monotonic() + 10
        while not catches_sighup(proc.pid):  # the interpreter is up: start-up begins
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.001)
        time.sleep(rng.uniform(0, 0.8))  # start-up takes about 0.5 s on this machine
        kind = trial % 3
        hups = rng.randint(1, 5)
        for _ in range(hups):
            proc.send_signal(signal.SIGHUP)
        if kind:  # a stop: alone, or after a SIGHUP storm
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(15) == 0, log.read_text()
        else:
            wait_listening(proc, idle.port, log, "cq-server", 15)
            deadline = time.monotonic() + 10
            while "configuration reloaded" not in log.read_text():
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.02)
            with idle.client() as client:
                assert client.run(["true"]).ok
            assert proc.poll() is None
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(15) == 0
        assert "Traceback" not in log.read_text()


def test_daemon_returns_when_ready_and_takes_signals_at_once(idle, tmp_path):
    idle.config = {"stop_grace_seconds": 1}
    pid_file, log = tmp_path / "cq.pid", tmp_path / "cq.log"
    argv = idle.argv() + ["--daemon", "--pid-file", str(pid_file), "--log-file", str(log)]
    for sig in (signal.SIGHUP, signal.SIGTERM):
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0 and done.stderr == ""
        pid = int(pid_file.read_text())  # there as soon as --daemon returns
        os.kill(pid, sig)  # what logrotate's postrotate would do
        if sig == signal.SIGHUP:
            wait_for(lambda: "configuration reloaded" in log.read_text(), 10, "the reload")
            with idle.client() as client:
                assert client.run(["true"]).ok
            assert alive(pid)
            os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not alive(pid), 15, "the server's exit")
        assert not pid_file.exists()
    assert "Traceback" not in log.read_text()


def test_a_stale_pid_file_is_taken_over_and_a_live_one_refused(idle, tmp_path):
    """A server killed with SIGKILL leaves its pid file: it is not locked, so the next one
    takes it (empty until ready, since that pid may be reused); a running one's is locked."""
    pid_file, log = tmp_path / "cq.pid", tmp_path / "cq.log"
    pid_file.write_text("999999\n")
    argv = idle.argv() + ["--daemon", "--pid-file", str(pid_file), "--log-file", str(log)]
    assert subprocess.run(argv, capture_output=True, text=True, timeout=30).returncode == 0
    pid = int(pid_file.read_text())
    assert pid != 999999 and alive(pid)
    again = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert_one_line(again, 1, f"already running as pid {pid}")
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not alive(pid), 10, "the killed server's exit")
    assert int(pid_file.read_text()) == pid  # left behind
    assert subprocess.run(argv, capture_output=True, text=True, timeout=30).returncode == 0
    new = int(pid_file.read_text())
    assert new != pid and alive(new)
    os.kill(new, signal.SIGTERM)


def test_daemon_that_cannot_start_says_why_on_the_terminal(idle, tmp_path):
    """--daemon returns only once the server is ready, or with the one line that says why
    not: found before detaching (a port in use) or after (its log file cannot be made)."""
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    argv = idle.argv()
    argv[argv.index("-p") + 1] = str(blocker.getsockname()[1])
    done = subprocess.run(argv + ["--daemon", "--log-file", str(tmp_path / "cq.log")],
                          capture_output=True, text=True, timeout=30)
    blocker.close()
    assert_one_line(done, 1, "cannot listen on 127.0.0.1")

    (tmp_path / "file").write_text("")
    bad_log = tmp_path / "file" / "cq.log"  # its folder is a plain file
    done = subprocess.run(idle.argv() + ["--daemon", "--log-file", str(bad_log)],
                          capture_output=True, text=True, timeout=30)
    assert_one_line(done, 1, f"cannot open the log file {bad_log}")
    with socket.socket() as s:  # and nothing was left listening
        assert s.connect_ex(("127.0.0.1", idle.port)) != 0


def test_systemd_notify_ready_and_stopping(idle, tmp_path):
    """Type=notify: READY=1 once it answers, STOPPING=1 on SIGTERM; jobs do not inherit
    NOTIFY_SOCKET."""
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(15)
    idle.env = dict(os.environ, NOTIFY_SOCKET=str(path))
    idle.start()
    ready = sock.recv(4096).decode()
    assert ready.split("\n") == ["READY=1", f"MAINPID={idle.process.pid}"]
    with idle.client() as client:
        job = client.run(["sh", "-c", "echo ${NOTIFY_SOCKET-unset}"]).job_id
        assert client.log(job)[0] == b"unset\n"
    idle.process.send_signal(signal.SIGTERM)
    assert sock.recv(4096) == b"STOPPING=1"
    assert idle.process.wait(15) == 0
    sock.close()
