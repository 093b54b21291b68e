"""What both configs say about SSH: the `ssh:` section, the check that its files can be read,
and ssh:// URLs. Apart from ssh.py so that reading a config does not load paramiko."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit


@dataclass(frozen=True)
class SshSettings:
    """The running user's own SSH files unless the config names others."""

    key_file: Path = field(default_factory=lambda: Path.home() / ".ssh/id_ed25519")
    known_hosts: Path = field(default_factory=lambda: Path.home() / ".ssh/known_hosts")
    connect_timeout: float = 10.0
    # cq-server: how often the host of a running job must show it still answers. A host that
    # does not, within connect_timeout, is down: without this a frozen host would hold its
    # job forever.
    check_seconds: float = 30.0
    retry_seconds: float = 60.0  # cq-server: how often a host that is down is tried again
    command: tuple[str, ...] = ("cq-emerge",)  # cq-emerge's fleet mode: what hosts plan with

    def unreadable(self) -> list[tuple[str, Path]]:
        """(setting, path) of the files this process cannot read: both are needed before
        any host is tried (host keys are always verified)."""
        return [(what, path) for what, path in (("key_file", self.key_file),
                                                 ("known_hosts", self.known_hosts))
                if not os.access(path, os.R_OK)]


@dataclass(frozen=True)
class SshTarget:
    user: str
    host: str
    port: int = 22

    @classmethod
    def parse(cls, url: str) -> "SshTarget":
        """`ssh://user@host[:port]`; anything else is a ValueError with a one-line message."""
        want = "want ssh://user@host[:port]"
        try:
            parts = urlsplit(url)
            port = parts.port or 22
        except ValueError as e:
            raise ValueError(f"bad SSH URL {url!r}: {e} ({want})") from None
        if parts.scheme != "ssh":
            raise ValueError(f"bad SSH URL {url!r}: not ssh:// ({want})")
        if not parts.username or not parts.hostname:
            raise ValueError(f"bad SSH URL {url!r}: user and host are required ({want})")
        if parts.password is not None or parts.path not in ("", "/") or parts.query \
                or parts.fragment:
            raise ValueError(f"bad SSH URL {url!r}: only user, host and port may be given "
                             f"({want})")
        return cls(parts.username, parts.hostname, port)

    @property
    def address(self) -> str:
        """host:port, as messages name it."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def __str__(self) -> str:
        return f"ssh://{self.user}@{self.address}"
