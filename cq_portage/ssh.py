"""Run a command on another host over SSH (paramiko): cq-server's jobs on SSH build hosts (as
cq/executor.py runs them here: their environment, output streamed into the log, exit status
in the shell's convention) and cq-emerge's fleet mode.

Host keys are checked against one known_hosts file (the system's is not read unless it is that
file); an unknown or changed key is refused with an SshHostKeyError, never accepted.
On the host, a small POSIX-shell wrapper runs the job and ties it to the connection: EOF on
the channel's stdin (stop(), or sshd seeing the connection end) kills the job's process group.
"""

from __future__ import annotations

import logging
import shlex
import signal
import socket
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import paramiko
from paramiko.common import MSG_CHANNEL_REQUEST

from .sshconfig import SshTarget

log = logging.getLogger(__name__)


class SshError(Exception):
    """Something about SSH went wrong; the message is one line saying what and where."""


class SshUnreachable(SshError):
    """No SSH server answered (refused, no route, timeout, not speaking SSH)."""


class SshHostKeyError(SshError):
    """The host's key is not the one known_hosts holds for it."""


class SshAuthError(SshError):
    """The host refused our key, or the key cannot be read."""


class SshLost(SshError):
    """The connection ended while a command ran: it gave no exit status, its fate is unknown."""


class SshNoAnswer(SshLost):
    """The host stopped answering while a command ran (run()'s check_every), so the
    connection was dropped: a frozen host keeps TCP up and would keep run() waiting."""


def remote_command(argv: Sequence[str], env: Mapping[str, str]) -> str:
    """`env -- NAME=value ... argv...`, every word quoted for a POSIX shell. The variables
    ride in the command, not in SSH "env" requests, so the remote sshd's AcceptEnv does not
    matter and the login environment stays. GNU env takes `--` before the assignments only
    (`env A=1 -- cmd` runs a command named `--`), so a command name containing '=' would be
    taken for an assignment and is refused."""
    if not argv:
        raise ValueError("empty command")
    if "=" in argv[0]:
        raise ValueError(f"command name {argv[0]!r} contains '='")
    words = ["env", "--"]
    for name, value in env.items():
        if not name or "=" in name or "\0" in name or "\0" in value:
            raise ValueError(f"bad environment variable {name!r}")
        words.append(f"{name}={value}")
    if any("\0" in arg for arg in argv):
        raise ValueError("an argument contains a NUL byte")
    words.extend(argv)
    return " ".join(shlex.quote(w) for w in words)


# What the remote login shell runs around the job. Its stdin (the channel) is a lifeline: a
# watcher reads it, and EOF (stop() sends one; sshd gives one when the connection goes) sends
# SIGTERM, then after GRACE seconds SIGKILL, to the session's process group (sshd made the
# session its own group): the job ends with its connection, whoever logs in. (The SSH
# "signal" request would do, but OpenSSH refuses it for root logins: no privilege separation
# after auth for root.) `trap : TERM` keeps the shell alive until the job has ended, so the
# status it reports is the job's; the job gets stdin from /dev/null, like a local job. The
# shell's own stderr goes to /dev/null (bash reports killed jobs there: not the job's output).
# It needs a POSIX login shell: sh, bash, zsh.
_WRAPPER = """\
exec 3<&0 4>&2 </dev/null 2>/dev/null
{{ trap '' TERM; read -r _ <&3; kill -TERM 0; sleep {grace:g}; kill -KILL 0; }} >/dev/null 2>&1 4>&- &
trap : TERM
{command} 2>&4 3<&- 4>&-
s=$?
kill -KILL $! 2>/dev/null
exit $s
"""


def _handle_request(chan: paramiko.Channel, m: paramiko.Message) -> None:
    """paramiko ignores "exit-signal" (recv_exit_status then says -1): turn it into the
    shell's 128+N; hand every other channel request to paramiko."""
    start = m.packet.tell()
    if m.get_text() == "exit-signal":
        m.get_boolean()  # want_reply: always false for exit-signal
        name = m.get_text()
        try:
            chan.exit_status = 128 + signal.Signals[f"SIG{name}"]
        except KeyError:  # a signal this system has no number for
            log.warning("remote command killed by unknown signal %s", name)
            chan.exit_status = 255
        chan.status_event.set()
        return
    m.packet.seek(start)
    paramiko.Channel._handle_request(chan, m)


class _Transport(paramiko.Transport):
    _channel_handler_table = {**paramiko.Transport._channel_handler_table,
                              MSG_CHANNEL_REQUEST: _handle_request}


class _Reject(paramiko.RejectPolicy):
    def __init__(self, known_hosts: Path) -> None:
        self.known_hosts = known_hosts

    def missing_host_key(self, client, hostname: str, key: paramiko.PKey) -> None:
        host, port = hostname, "22"  # as known_hosts names it: host, or [host]:port
        if hostname.startswith("["):
            host, _, port = hostname[1:].partition("]:")
        raise SshHostKeyError(
            f"host key of {host}:{port} is not in {self.known_hosts} "
            f"({key.get_name()} {key.fingerprint}; check it, then add it: "
            f"ssh-keyscan -p {port} {host} >> {self.known_hosts})")


@dataclass
class SshRunner:
    """Runs commands on one host, one paramiko Transport for all of them (reconnected once
    when it dropped). run() blocks; stop(), close() and alive() may be called from other
    threads."""

    target: SshTarget
    key_file: Path
    known_hosts: Path
    connect_timeout: float = 10.0
    stop_grace: float = 5.0  # stop(): seconds between the remote SIGTERM and SIGKILL
    _client: paramiko.SSHClient | None = field(default=None, init=False, repr=False)
    _channel: paramiko.Channel | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    # Held while connecting (up to connect_timeout), so that stop() and close() never wait
    # for a connection attempt: they only take _lock.
    _connecting: threading.Lock = field(default_factory=threading.Lock, init=False,
                                        repr=False)

    # -- connection ------------------------------------------------------------------------

    def _connect(self) -> paramiko.SSHClient:
        where = self.target.address
        try:
            key = paramiko.PKey.from_path(self.key_file)
        except (OSError, paramiko.SSHException, ValueError) as e:
            raise SshAuthError(f"cannot load SSH key {self.key_file}: {e}") from None
        client = paramiko.SSHClient()
        try:
            client.load_host_keys(str(self.known_hosts))
        except OSError as e:
            raise SshHostKeyError(f"cannot read known_hosts {self.known_hosts}: "
                                  f"{e.strerror or e}") from None
        client.set_missing_host_key_policy(_Reject(self.known_hosts))
        t = self.connect_timeout
        try:
            client.connect(self.target.host, self.target.port, self.target.user, pkey=key,
                           timeout=t, banner_timeout=t, auth_timeout=t, channel_timeout=t,
                           allow_agent=False, look_for_keys=False,
                           transport_factory=_Transport)
        except BaseException as e:
            transport = client.get_transport()
            alive = transport is not None and transport.is_active()
            client.close()
            if isinstance(e, paramiko.BadHostKeyException):
                raise SshHostKeyError(
                    f"host key of {where} is not in {self.known_hosts} (it holds a different "
                    f"{e.expected_key.get_name()} key for this host, the host offers "
                    f"{e.key.get_name()} {e.key.fingerprint}: changed or spoofed; "
                    f"if the host was reinstalled, replace its line)") from None
            if isinstance(e, paramiko.AuthenticationException) and not alive:
                # paramiko says "authentication failed" when the connection ends mid-login
                # too (a host going down): a refusal leaves it open for another try
                raise SshUnreachable(f"{where}: the connection ended during the login "
                                     f"({e})") from None
            if isinstance(e, paramiko.AuthenticationException):
                raise SshAuthError(f"{self.target.user}@{where} refused the key "
                                   f"{self.key_file} ({e}); is its .pub in that user's "
                                   "authorized_keys?") from None
            if isinstance(e, (TimeoutError, socket.timeout)):
                raise SshUnreachable(f"{where}: no answer within {t:g} s") from None
            if not isinstance(e, (OSError, EOFError, paramiko.SSHException)):
                raise  # an SshError of _Reject's, or a bug
            reason = getattr(e, "strerror", None) or str(e) or type(e).__name__
            if transport is not None and not transport.remote_version:
                # TCP was accepted, but no SSH server spoke (paramiko's words for it vary)
                reason = f"no SSH answer within {t:g} s ({reason})"
            raise SshUnreachable(f"cannot reach {where} over SSH: {reason}") from None
        log.info("connected to %s", self.target)
        return client

    def _transport(self) -> paramiko.Transport:
        """The live transport, connecting when there is none or it dropped."""
        with self._connecting:
            with self._lock:
                old = self._client
            t = old.get_transport() if old else None
            if t is not None and t.is_active():
                return t
            if old:
                log.info("connection to %s dropped; reconnecting", self.target)
                old.close()
            client = self._connect()
            with self._lock:
                self._client = client
            return client.get_transport()

    def _open_session(self) -> paramiko.Channel:
        """A new session channel. A transport that still looks active may be dead (the host
        restarted): then reconnect once. Nothing ran yet, so retrying cannot run it twice."""
        for attempt in (1, 2):
            t = self._transport()
            try:
                return t.open_session(timeout=self.connect_timeout)
            except (EOFError, OSError, paramiko.SSHException) as e:
                if attempt == 2:
                    raise SshUnreachable(f"{self.target.address}: cannot open a session: "
                                         f"{str(e) or type(e).__name__}") from None
                log.info("session on %s failed (%s); reconnecting", self.target, e)
                t.close()
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Drop the connection; a run() in progress raises SshLost."""
        with self._lock:
            client, self._client = self._client, None
        if client:
            client.close()

    def __enter__(self) -> "SshRunner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- commands ----------------------------------------------------------------------------

    def run(self, argv: Sequence[str], env: Mapping[str, str], output: BinaryIO,
            check_every: float | None = None) -> int:
        """Run argv with env on the host; stdout and stderr go, combined and as they come, to
        `output`; stdin is empty. Returns the exit status (killed by signal N: 128+N; command
        not found: 127, as env says). It returns once every process holding the job's output
        has closed it (a daemon the job leaves behind with its stdout open keeps it waiting).
        With `check_every`, the host must run `true` within connect_timeout that often, or
        the connection is dropped (SshNoAnswer). Raises SshError when it could not run,
        SshLost when the connection ended before the status arrived. One run() at a time
        per runner (a build host runs one job)."""
        command = _WRAPPER.format(command=remote_command(argv, env), grace=self.stop_grace)
        chan = self._open_session()
        with self._lock:
            self._channel = chan
        done, frozen = threading.Event(), threading.Event()
        if check_every:
            threading.Thread(target=self._watch, args=(check_every, done, frozen),
                             daemon=True, name=f"watch {self.target.address}").start()
        try:
            chan.set_combine_stderr(True)  # no pty: a pty would change the job's behaviour
            try:
                chan.exec_command(command)  # stdin stays open: EOF on it ends the job
            except (EOFError, OSError, paramiko.SSHException) as e:
                raise SshError(f"{self.target.address}: cannot start the command: "
                               f"{str(e) or type(e).__name__}") from None
            log.debug("running on %s: %s", self.target, command)
            while data := chan.recv(65536):
                output.write(data)
                output.flush()
            chan.status_event.wait()  # set by exit-status, exit-signal or the close
            status = chan.exit_status
        finally:
            done.set()
            with self._lock:
                self._channel = None
            self._close_channel(chan)
        if status < 0 and frozen.is_set():
            raise SshNoAnswer(f"{self.target.address} stopped answering (no reply within "
                              f"{self.connect_timeout:g} s); the command may still run there")
        if status < 0:
            raise SshLost(f"connection to {self.target.address} ended before the command "
                          f"reported its exit status; it may still run there")
        return status

    def _watch(self, every: float, done: threading.Event, frozen: threading.Event) -> None:
        while not done.wait(every):
            if not self.alive(self.connect_timeout) and not done.is_set():
                log.warning("%s does not answer; dropping the connection", self.target)
                frozen.set()
                self.close()  # run() then ends
                return

    def stop(self) -> bool:
        """End the running command: EOF on its stdin makes the remote wrapper send SIGTERM to
        the job's process group, SIGKILL stop_grace seconds later; run() then returns the
        job's status (143 or 137 unless it traps TERM). If the host says nothing for 5 s more,
        close the channel (run() raises SshLost). False when nothing runs."""
        with self._lock:
            chan = self._channel
        if chan is None:
            return False
        try:
            chan.shutdown_write()
        except (EOFError, OSError, paramiko.SSHException):
            pass  # already gone: run() sees it
        threading.Thread(target=self._close_later, args=(chan,), daemon=True).start()
        return True

    def _close_later(self, chan: paramiko.Channel) -> None:
        if not chan.status_event.wait(self.stop_grace + 5.0):
            log.warning("%s did not end the command on request; closing its channel",
                        self.target)
            self._close_channel(chan)

    def _close_channel(self, chan: paramiko.Channel) -> None:
        """Close `chan` on a connection that may have died under it: closing sends a message,
        which then fails (EOFError, a socket error) before paramiko's own thread has seen the
        end. Whoever waits on the channel already says what happened, in one line."""
        try:
            chan.close()
        except (EOFError, OSError, paramiko.SSHException) as e:
            log.debug("closing a channel to %s: %s", self.target, str(e) or type(e).__name__)

    def check(self, timeout: float = 5.0) -> None:
        """Raise an SshError saying why unless `true` runs on the host within `timeout`
        seconds (connecting first if needed, which may take connect_timeout more)."""
        chan = None
        try:
            chan = self._transport().open_session(timeout=timeout)
            # exec_command() waits for the host's reply without a timeout: closing the
            # channel at the deadline ends that wait on a host that froze meanwhile.
            deadline = threading.Timer(timeout, self._close_channel, (chan,))
            deadline.start()
            try:
                chan.exec_command("true")
                if not chan.status_event.wait(timeout) or chan.exit_status != 0:
                    raise SshUnreachable(f"{self.target.address}: no answer within "
                                         f"{timeout:g} s")
            finally:
                deadline.cancel()
        except (EOFError, OSError, paramiko.SSHException) as e:
            raise SshUnreachable(f"{self.target.address}: no answer within {timeout:g} s "
                                 f"({str(e) or type(e).__name__})") from None
        finally:
            if chan is not None:
                self._close_channel(chan)

    def alive(self, timeout: float = 5.0) -> bool:
        """Does the host answer (check() without the why)?"""
        try:
            self.check(timeout)
        except SshError as e:
            log.info("%s does not answer: %s", self.target, e)
            return False
        return True


def quiet_paramiko(verbose: bool) -> None:
    """paramiko logs every connection at INFO and the tracebacks of its transport thread
    at ERROR (a host that does not answer); this module raises one-line errors for all that
    matters. -v shows paramiko's INFO (its DEBUG is packet-level noise, even then)."""
    logging.getLogger("paramiko").setLevel(logging.INFO if verbose else logging.CRITICAL)
