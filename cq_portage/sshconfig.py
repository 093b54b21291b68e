"""What both configs say about SSH: the `ssh:` section and its one reader, the check that its
files can be read, and ssh:// URLs. Apart from ssh.py so that reading a config does not load
paramiko."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from .yamlfile import Checker, kind, seconds

# One key's check: (checker, value node, its name in messages) -> the value, or None after
# a problem.
Check = Callable[[Checker, yaml.Node, str], Any]


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


def read_section(c: Checker, node: yaml.Node, own: Mapping[str, Check],
                 old_key_name: bool = False, refused: set[str] | None = None) -> SshSettings:
    """The `ssh:` section of either config, each problem a FILE:LINE line in `c`. Both configs
    read key_file and known_hosts (file_path) and connect_timeout (seconds, at most an hour);
    `own` holds the keys only one of them reads, with their checks. `old_key_name`: `key` is
    read as key_file, with a warning (its old name in cq-server's config). `refused` gets the
    keys whose value was refused (a problem already)."""
    checks = {"key_file": file_path, "known_hosts": file_path, "connect_timeout": seconds(3600),
              **own}
    entries = c.mapping(node, "ssh", {*checks, "key"} if old_key_name else checks)
    if entries is None:
        return SshSettings()
    if old_key_name:
        c.renamed(entries, "key", "key_file", "ssh")
        entries.pop("key", None)  # left only when key_file is given too: a problem already
    values = {key: checks[key](c, value, f"ssh.{key}") for key, (_, value) in entries.items()}
    if refused is not None:
        refused.update(key for key, value in values.items() if value is None)
    return SshSettings(**{key: value for key, value in values.items() if value is not None})


def file_path(c: Checker, node: yaml.Node, what: str) -> Path | None:
    """An absolute path, or ~/... (the home of the user running the command: a relative path
    would depend on the directory it was started in)."""
    value = c.value(node) if isinstance(node, yaml.ScalarNode) else None
    path = None
    if isinstance(value, str) and "\0" not in value:  # a NUL makes every use of a path raise
        try:
            path = Path(value).expanduser()
        except RuntimeError:  # ~user of no such user, or no home to expand ~ to
            pass
    if path is None or not path.is_absolute():
        c.error(node, f"{what} must be an absolute path (or ~/...), not {kind(node)}")
        return None
    return path
