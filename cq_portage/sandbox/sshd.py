"""A throwaway sshd on 127.0.0.1: its own host key, client key, authorized_keys and port.

Several of them can stand for the hosts of a site: `client_key_file` makes them accept one
shared client key (an admin host's), and `set_env` gives every session there variables
(sshd_config SetEnv), e.g. a Prefix.env() so that the login's cq-emerge and emerge work on
that host's own sandbox prefix.
"""

from __future__ import annotations

import getpass
import os
import signal
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .processes import Daemon, wait_listening
from .server import free_port

SSHD = "/usr/sbin/sshd"  # sshd re-executes itself, so it wants an absolute path


def _keygen(path: Path, comment: str) -> None:
    if not path.exists():  # kept across restarts: a restarted host keeps its host key
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment,
                        "-f", str(path)], check=True, capture_output=True)


def _set_env_word(name: str, value: str) -> str:
    """NAME=value as one sshd_config word (double quotes; sshd has no escapes in them)."""
    if not name.isidentifier() or any(c in value for c in '"\\\n'):
        raise ValueError(f"cannot pass {name}={value!r} through sshd_config SetEnv")
    return f'"{name}={value}"'


def _children(pid: int) -> list[int]:
    """All descendants of `pid` (sessions, their shells and jobs), from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


@dataclass
class Sshd(Daemon):
    """One sshd process. Connect as `user` with `client_key`, checking against `known_hosts`."""

    folder: Path
    port: int = field(default_factory=free_port)
    user: str = field(default_factory=getpass.getuser)
    process: subprocess.Popen | None = field(default=None, repr=False)
    # Every session's environment on top of sshd's own (PATH included: SetEnv comes last).
    set_env: Mapping[str, str] = field(default_factory=dict)
    # The client key to accept, shared with other Sshd (made when missing); default: own.
    client_key_file: Path | None = None
    # A program sshd asks for the authorized keys (AuthorizedKeysCommand, run as root), in
    # place of the file: a test's hook into the login. sshd wants it and every folder above
    # it owned by root and writable by nobody else.
    keys_command: Path | None = None

    def __post_init__(self) -> None:
        self.host_key = self.folder / "ssh_host_ed25519_key"
        self.client_key = Path(self.client_key_file or self.folder / "client_key")
        self.authorized_keys = self.folder / "authorized_keys"
        self.known_hosts = self.folder / "known_hosts"
        self.config = self.folder / "sshd_config"
        self.log = self.folder / "sshd.log"

    @property
    def url(self) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}"

    def host_key_line(self) -> str:
        """The known_hosts line for this server: '[127.0.0.1]:PORT ssh-ed25519 AAAA...'."""
        kind, blob = Path(f"{self.host_key}.pub").read_text().split()[:2]
        return f"[127.0.0.1]:{self.port} {kind} {blob}\n"

    def _write_files(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        _keygen(self.host_key, "cq-sandbox-host")
        _keygen(self.client_key, "cq-sandbox-client")
        self.authorized_keys.write_text(Path(f"{self.client_key}.pub").read_text())
        self.known_hosts.write_text(self.host_key_line())
        # AcceptEnv: none. The job's variables travel in the command line (`env NAME=value`),
        # so nothing depends on the remote sshd's AcceptEnv list.
        self.config.write_text(f"""\
ListenAddress 127.0.0.1
Port {self.port}
HostKey {self.host_key}
{self._authorized_keys_lines()}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
AllowUsers {self.user}
PidFile {self.folder / 'sshd.pid'}
UseDNS no
PrintMotd no
PrintLastLog no
MaxStartups 100
MaxSessions 50
LogLevel VERBOSE
""" + self._set_env_line())

    def _authorized_keys_lines(self) -> str:
        if self.keys_command is None:
            return f"AuthorizedKeysFile {self.authorized_keys}"
        return (f"AuthorizedKeysFile none\nAuthorizedKeysCommand {self.keys_command} %u\n"
                "AuthorizedKeysCommandUser root")

    def _set_env_line(self) -> str:
        # One line: sshd keeps the first value of a keyword, so a second SetEnv is ignored.
        words = [_set_env_word(k, v) for k, v in self.set_env.items()]
        return f"SetEnv {' '.join(words)}\n" if words else ""

    def start(self, timeout: float = 10.0) -> "Sshd":
        self._write_files()
        try:  # privilege separation chroots into it; it is missing on a fresh container
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        except PermissionError:
            pass  # not root: sshd says so itself if it needs it
        self.process = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(self.config)], stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=open(self.log, "ab"))
        wait_listening(self.process, self.port, self.log, "sshd", timeout, self.stop)
        return self

    def stop(self) -> None:
        """Stop the listener and kill every session and the commands they run, the way a
        host that goes down ends them (a plain SIGTERM to sshd leaves sessions running)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGSTOP)  # no new sessions while we collect
            sessions = _children(self.process.pid)
            self.process.kill()
            self.process.wait()
            _signal_all(sessions, signal.SIGKILL)
        self.process = None

    def freeze(self) -> None:
        """SIGSTOP sshd and its sessions: the host stops answering but TCP stays up."""
        if self.process:
            _signal_all([self.process.pid, *_children(self.process.pid)], signal.SIGSTOP)

    def thaw(self) -> None:
        if self.process:
            _signal_all([self.process.pid, *_children(self.process.pid)], signal.SIGCONT)
