"""cq_portage.ssh against real sshd processes on 127.0.0.1 (cq_portage.sandbox.sshd)."""

from __future__ import annotations

import io
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from cq_portage.ssh import (SshAuthError, SshError, SshHostKeyError, SshLost, SshRunner,
                            SshUnreachable, remote_command)
from cq_portage.sshconfig import SshTarget
from cq_portage.sandbox.processes import running
from cq_portage.sandbox.server import free_port
from cq_portage.sandbox.sshd import Sshd

from helpers import wait_for


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    with Sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


def runner_for(server: Sshd, **kw) -> SshRunner:
    return SshRunner(SshTarget.parse(server.url), server.client_key, server.known_hosts, **kw)


@pytest.fixture
def runner(sshd):
    with runner_for(sshd) as r:
        yield r


def run(runner: SshRunner, argv: list[str], env: dict[str, str] | None = None) -> tuple[int, str]:
    out = io.BytesIO()
    status = runner.run(argv, env or {}, out)
    return status, out.getvalue().decode()


# -- URLs and command lines ---------------------------------------------------------------------

def test_parse_target():
    assert SshTarget.parse("ssh://root@build1:2222") == SshTarget("root", "build1", 2222)
    assert SshTarget.parse("ssh://cq@build1") == SshTarget("cq", "build1", 22)
    assert SshTarget.parse("ssh://cq@[::1]:22").address == "[::1]:22"
    assert str(SshTarget.parse("ssh://cq@10.0.0.1:22")) == "ssh://cq@10.0.0.1:22"
    for bad in ("build1", "http://root@build1", "ssh://build1", "ssh://root@:22",
                "ssh://root@build1:99999", "ssh://root@build1:x", "ssh://root:pw@build1",
                "ssh://root@build1/path", "ssh://root@build1?x=1"):
        with pytest.raises(ValueError) as e:
            SshTarget.parse(bad)
        assert "\n" not in str(e.value) and bad in str(e.value), bad


def test_command_line_refuses_what_cannot_be_sent():
    for argv, env in (([], {}), (["A=1"], {}), (["true"], {"A=B": "1"}), (["true"], {"": "1"}),
                      (["true"], {"A": "x\0y"}), (["echo", "x\0y"], {})):
        with pytest.raises(ValueError):
            remote_command(argv, env)


# -- running commands ----------------------------------------------------------------------------

def test_exit_status(runner):
    assert run(runner, ["true"]) == (0, "")
    assert run(runner, ["sh", "-c", "echo out; echo err >&2; exit 3"]) == (3, "out\nerr\n")


def test_environment_reaches_the_command_quoted_safely(runner, tmp_path):
    marker = tmp_path / "injected"
    env = {"PLAIN": "web", "SPACES": "a  b   c", "QUOTES": "it's \"quoted\"",
           "DOLLAR": "$HOME ${PATH} $(touch " + str(marker) + ") `touch " + str(marker) + "`",
           "NEWLINES": "line 1\nline 2\n", "BACKSLASH": "a\\b\\\\n", "EMPTY": "",
           "UNICODE": "grüße", "DASH": "-n"}
    script = "printf '%s\\0' " + " ".join(f'"${name}"' for name in env)
    status, out = run(runner, ["sh", "-c", script], env)
    assert status == 0
    assert out.split("\0")[:-1] == list(env.values())
    assert not marker.exists()


def test_login_environment_is_kept_and_overridden(runner):
    status, out = run(runner, ["sh", "-c", 'echo "$HOME|$USER|$LANG_TEST"'], {"LANG_TEST": "x"})
    assert status == 0 and out.strip().endswith("|x") and out.split("|")[0]


def test_arguments_are_passed_verbatim(runner):
    args = ["a b", "'", '"', "$HOME", "*", ";", "|", "&&", "", "\n", "--", "-e"]
    status, out = run(runner, ["printf", "%s\\0", *args])
    assert status == 0 and out.split("\0")[:-1] == args


class Recorder(io.RawIOBase):
    """An output file that notes when each piece arrived."""

    def __init__(self) -> None:
        self.pieces: list[tuple[float, bytes]] = []

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.pieces.append((time.monotonic(), bytes(data)))
        return len(data)

    def arrival(self, text: bytes) -> float:
        seen = b""
        for at, piece in self.pieces:
            seen += piece
            if text in seen:
                return at
        raise AssertionError(f"{text!r} never arrived: {seen!r}")


def test_output_streams_as_it_comes(runner):
    out = Recorder()
    assert runner.run(["sh", "-c", "echo first; sleep 2; echo second"], {}, out) == 0
    ended = time.monotonic()
    assert ended - out.arrival(b"first\n") > 1.5
    assert ended - out.arrival(b"second\n") < 1.0


def test_large_output_arrives_whole(runner):
    expected = subprocess.run(["seq", "1", "300000"], capture_output=True, check=True).stdout
    out = io.BytesIO()
    assert runner.run(["seq", "1", "300000"], {}, out) == 0
    assert out.getvalue() == expected


def test_killed_by_signal_is_128_plus_n(runner):
    assert run(runner, ["sh", "-c", "kill -TERM $$"])[0] == 143
    assert run(runner, ["sh", "-c", "kill -KILL $$"])[0] == 137
    # The remote shell itself killed: sshd sends "exit-signal", which paramiko alone ignores.
    assert run(runner, ["sh", "-c", "kill -SEGV $PPID; sleep 1"])[0] == 139


def test_missing_command_is_127(runner):
    status, out = run(runner, ["/nonexistent/cq-test-command", "x"])
    assert status == 127 and "/nonexistent/cq-test-command" in out


def test_stdin_is_empty(runner):
    assert run(runner, ["sh", "-c", "cat; echo end"]) == (0, "end\n")


def test_one_connection_many_commands(runner):
    for i in range(5):
        assert run(runner, ["sh", "-c", f"exit {i}"])[0] == i
    transport = runner._client.get_transport()
    assert run(runner, ["true"])[0] == 0 and runner._client.get_transport() is transport


# -- refusing hosts and keys ---------------------------------------------------------------------

def other_host_key_line(folder: Path, port: int) -> str:
    key = folder / "other_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    kind, blob = Path(f"{key}.pub").read_text().split()[:2]
    return f"[127.0.0.1]:{port} {kind} {blob}\n"


@pytest.mark.parametrize("content", ["other key", "empty", "other port"])
def test_unknown_host_key_is_refused(sshd, tmp_path, content):
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text({"other key": other_host_key_line(tmp_path, sshd.port),
                            "empty": "",
                            "other port": sshd.host_key_line().replace(
                                f"]:{sshd.port} ", f"]:{free_port()} ")}[content])
    marker = tmp_path / "ran"
    runner = SshRunner(SshTarget.parse(sshd.url), sshd.client_key, known_hosts)
    with pytest.raises(SshHostKeyError) as e:
        runner.run(["touch", str(marker)], {}, io.BytesIO())
    message = str(e.value)
    assert message.startswith(f"host key of 127.0.0.1:{sshd.port} is not in {known_hosts} (")
    assert "\n" not in message and "SHA256:" in message
    assert not marker.exists()
    assert not runner.alive()


def test_missing_known_hosts_file_is_refused(sshd, tmp_path):
    runner = SshRunner(SshTarget.parse(sshd.url), sshd.client_key, tmp_path / "nope")
    with pytest.raises(SshHostKeyError, match="cannot read known_hosts .*nope"):
        runner.run(["true"], {}, io.BytesIO())


def test_wrong_client_key_is_an_auth_error(sshd, tmp_path):
    key = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    marker = tmp_path / "ran"
    runner = SshRunner(SshTarget.parse(sshd.url), key, sshd.known_hosts)
    with pytest.raises(SshAuthError) as e:
        runner.run(["touch", str(marker)], {}, io.BytesIO())
    assert f"refused the key {key}" in str(e.value) and "\n" not in str(e.value)
    assert not marker.exists()


def test_a_host_that_goes_down_during_the_login_is_unreachable_not_a_refusal(tmp_path):
    """paramiko raises the same AuthenticationException for a refused key and for a
    connection that ends while sshd checks the key; the second is the host, not the key.
    sshd asks a command of ours for the keys; it goes down while that command runs."""
    folder = Path(tempfile.mkdtemp(dir="/run", prefix="cq-test-"))  # root's: sshd checks
    try:
        asked = tmp_path / "asked"
        command = folder / "keys"
        server = Sshd(tmp_path / "sshd", keys_command=command)
        command.write_text(f"#!/bin/sh\ntouch {asked}\nsleep 5\ncat {server.authorized_keys}\n")
        command.chmod(0o755)
        server.start()
        try:
            runner = SshRunner(SshTarget.parse(server.url), server.client_key,
                               server.known_hosts, connect_timeout=10)
            thread, outcome = run_in_thread(runner, ["true"])
            wait_for(asked.exists, 10, "sshd asking for the keys")
            server.stop()
            thread.join(10)
            assert not thread.is_alive()
        finally:
            server.stop()
    finally:
        shutil.rmtree(folder)
    error = outcome["error"]
    assert isinstance(error, SshUnreachable), error
    assert str(error).startswith(f"127.0.0.1:{server.port}: the connection ended during the "
                                 "login") and "\n" not in str(error)


def test_unreadable_client_key_is_an_auth_error(sshd, tmp_path):
    runner = SshRunner(SshTarget.parse(sshd.url), tmp_path / "nokey", sshd.known_hosts)
    with pytest.raises(SshAuthError, match="cannot load SSH key"):
        runner.run(["true"], {}, io.BytesIO())


def test_nothing_listening_is_unreachable(sshd, tmp_path):
    target = SshTarget("root", "127.0.0.1", free_port())
    runner = SshRunner(target, sshd.client_key, sshd.known_hosts, connect_timeout=2)
    started = time.monotonic()
    with pytest.raises(SshUnreachable) as e:
        runner.run(["true"], {}, io.BytesIO())
    assert time.monotonic() - started < 2 and f"127.0.0.1:{target.port}" in str(e.value)
    assert "\n" not in str(e.value)
    assert not runner.alive()


def test_silent_server_is_unreachable_within_the_timeout(sshd):
    with socket.socket() as silent:  # accepts TCP (the kernel does), never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        target = SshTarget("root", "127.0.0.1", silent.getsockname()[1])
        runner = SshRunner(target, sshd.client_key, sshd.known_hosts, connect_timeout=1)
        started = time.monotonic()
        with pytest.raises(SshUnreachable) as e:
            runner.run(["true"], {}, io.BytesIO())
        assert 0.9 < time.monotonic() - started < 5, e.value
        assert "no SSH answer within 1 s" in str(e.value) and "\n" not in str(e.value)


# -- stopping ------------------------------------------------------------------------------------

def run_in_thread(runner: SshRunner, argv: list[str]) -> tuple[threading.Thread, dict]:
    result: dict = {}

    def target():
        try:
            result["status"] = runner.run(argv, {}, io.BytesIO())
        except SshError as e:
            result["error"] = e
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, result


def started_pid(pidfile: Path) -> int:
    return int(wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), 10))


def test_stop_ends_a_long_command(runner, tmp_path):
    assert not runner.stop()  # nothing runs
    pidfile = tmp_path / "pid"
    thread, result = run_in_thread(runner, ["sh", "-c", f"echo $$ > {pidfile}; exec sleep 60"])
    pid = started_pid(pidfile)
    assert runner.stop()
    thread.join(10)
    assert result == {"status": 143}
    assert wait_for(lambda: not running(pid), 5)


def test_stop_kills_a_command_that_ignores_sigterm(sshd, tmp_path):
    pidfile = tmp_path / "pid"
    with runner_for(sshd, stop_grace=1) as runner:
        thread, result = run_in_thread(
            runner, ["sh", "-c", f"trap '' TERM; echo $$ > {pidfile}; sleep 60 & wait"])
        pid = started_pid(pidfile)
        started = time.monotonic()
        runner.stop()
        thread.join(10)
        assert result == {"status": 137} and 0.9 < time.monotonic() - started < 5
        assert wait_for(lambda: not running(pid), 5)


def test_the_command_ends_with_its_connection(runner, tmp_path):
    pidfile = tmp_path / "pid"
    thread, result = run_in_thread(runner, ["sh", "-c", f"echo $$ > {pidfile}; exec sleep 60"])
    pid = started_pid(pidfile)
    runner.close()  # what a dying cq-server does too
    thread.join(10)
    assert isinstance(result.get("error"), SshLost)
    assert wait_for(lambda: not running(pid), 5)
    assert run(runner, ["true"])[0] == 0  # and the runner connects again


# -- liveness and reconnection -------------------------------------------------------------------

def test_alive_then_not_after_sshd_stops(own_sshd):
    runner = runner_for(own_sshd)
    assert runner.alive()
    own_sshd.stop()
    started = time.monotonic()
    assert not runner.alive(timeout=2)
    assert time.monotonic() - started < 3


def test_alive_while_a_command_runs(runner):
    thread, result = run_in_thread(runner, ["sleep", "2"])
    time.sleep(0.3)
    assert runner.alive()
    thread.join(10)
    assert result == {"status": 0}


def test_frozen_host_is_not_alive_within_the_timeout(own_sshd):
    runner = runner_for(own_sshd)
    assert runner.alive()
    own_sshd.freeze()
    started = time.monotonic()
    assert not runner.alive(timeout=1)
    assert time.monotonic() - started < 3
    own_sshd.thaw()
    assert wait_for(runner.alive, 10)


def test_connection_lost_while_running_is_sshlost(own_sshd):
    runner = runner_for(own_sshd)
    thread, result = run_in_thread(runner, ["sleep", "30"])
    time.sleep(0.5)
    own_sshd.stop()  # the host goes down: its sessions die with it
    thread.join(10)
    assert isinstance(result.get("error"), SshLost), result
    assert "ended before the command reported its exit status" in str(result["error"])


def test_reconnect_after_sshd_restarts(own_sshd):
    runner = runner_for(own_sshd)
    assert run(runner, ["sh", "-c", "exit 5"])[0] == 5
    own_sshd.stop()
    with pytest.raises(SshUnreachable):
        run(runner, ["true"])
    own_sshd.start()  # same folder and port: same host key
    assert run(runner, ["sh", "-c", "exit 6"])[0] == 6


def test_restart_while_the_runner_still_holds_the_old_connection(own_sshd):
    runner = runner_for(own_sshd)
    assert run(runner, ["true"])[0] == 0
    old = runner._client.get_transport()
    own_sshd.stop()
    own_sshd.start()
    assert run(runner, ["sh", "-c", "exit 7"])[0] == 7  # reconnected once, silently
    assert runner._client.get_transport() is not old


def test_close_ends_a_run_on_a_frozen_host(own_sshd):
    """What the server's watchdog does when alive() says no: close(), and run() gives up."""
    runner = runner_for(own_sshd)
    thread, result = run_in_thread(runner, ["sleep", "30"])
    time.sleep(0.5)
    own_sshd.freeze()
    assert not runner.alive(timeout=1)
    started = time.monotonic()
    runner.close()
    thread.join(5)
    assert isinstance(result.get("error"), SshLost) and time.monotonic() - started < 3
