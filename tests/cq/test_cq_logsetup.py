"""What cq-server's log setup (and cq-emerge's fleet mode, through quiet_paramiko) leaves on
stderr when an SSH host goes away: the project's one-line error, no traceback; everyone
else's tracebacks still print. A real sshd on 127.0.0.1, the runner in a process of its own
(its real stderr)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from cq_portage.sandbox.sshd import Sshd

_CHILD = textwrap.dedent("""
    import io, logging, socket, sys, threading
    from pathlib import Path
    from cq_portage.cq import logsetup
    from cq_portage.ssh import SshError, SshRunner
    from cq_portage.sshconfig import SshTarget

    url, key, known_hosts, level = sys.argv[1:]
    logsetup.setup(getattr(logging, level))
    runner = SshRunner(SshTarget.parse(url), Path(key), Path(known_hosts), stop_grace=0)

    class Started(io.RawIOBase):
        def writable(self):
            return True

        def write(self, data):
            print("running", flush=True)
            return len(data)

    def stop_when_asked():
        if sys.stdin.readline() == "stop\\n":
            runner._client.get_transport().sock.shutdown(socket.SHUT_WR)
            runner.stop()

    threading.Thread(target=stop_when_asked, daemon=True).start()
    try:
        runner.run(["sh", "-c", "echo started; exec sleep 60"], {}, Started())
    except SshError as e:
        print(f"error: {e}", file=sys.stderr)
""")


def _runner_process(host: Sshd, level: str) -> subprocess.Popen:
    """The child runs a long command on `host` and prints 'running' once it runs."""
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, host.url, str(host.client_key), str(host.known_hosts),
         level], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    assert child.stdout.readline() == "running\n"
    return child


def _stderr_lines(child: subprocess.Popen) -> list[str]:
    _, stderr = child.communicate(timeout=25)
    assert child.returncode == 0, stderr
    return stderr.splitlines()


def test_a_host_that_goes_away_mid_command_is_one_line(own_sshd):
    child = _runner_process(own_sshd, "WARNING")
    own_sshd.stop()  # the host goes down: its sessions die with it
    assert _stderr_lines(child) == [
        f"error: connection to 127.0.0.1:{own_sshd.port} ended before the command reported its "
        "exit status; it may still run there"]


def test_closing_a_channel_whose_connection_died_prints_no_traceback(own_sshd):
    """A job stopped on a frozen host: 5 s later the runner's own thread closes the channel,
    which sends a message. When the host went away meanwhile, that send can fail before
    paramiko's reader has seen the end (seen with frozen sessions killed: EOFError in
    _close_later); here our end of the connection stops sending while the host stays
    frozen, which holds that window open."""
    child = _runner_process(own_sshd, "WARNING")
    own_sshd.freeze()
    child.stdin.write("stop\n")
    child.stdin.flush()
    lines = _stderr_lines(child)
    assert len(lines) == 2, lines  # no traceback
    assert lines[0].endswith("did not end the command on request; closing its channel")
    assert lines[1].startswith("error: connection to 127.0.0.1:")


_OTHER_THREADS = textwrap.dedent("""
    import logging, threading, paramiko
    from cq_portage.cq import logsetup
    logsetup.setup(logging.WARNING)
    for target in (lambda: paramiko.Transport(object()), lambda: 1 / 0):
        thread = threading.Thread(target=target)
        thread.start()
        thread.join()
""")


def test_other_threads_still_print_their_tracebacks():
    """Even a thread whose stack passes through paramiko: only the runner's own channel
    closing is quiet, no error of anyone else's is hidden."""
    done = subprocess.run([sys.executable, "-c", _OTHER_THREADS], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("Traceback (most recent call last)") == 2, done.stderr
    assert "paramiko/transport.py" in done.stderr and "ZeroDivisionError" in done.stderr


def test_paramiko_says_nothing_unless_verbose_then_its_info(own_sshd):
    quiet = _runner_process(own_sshd, "WARNING")
    verbose = _runner_process(own_sshd, "DEBUG")
    own_sshd.stop()
    assert not any("paramiko" in line for line in _stderr_lines(quiet))
    said = [line for line in _stderr_lines(verbose) if " paramiko." in line]
    assert any("Authentication (publickey) successful" in line for line in said), said
    assert all(" INFO paramiko." in line for line in said), said  # not its DEBUG
