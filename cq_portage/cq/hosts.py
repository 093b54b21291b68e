"""Build hosts: where jobs run. This machine ("local"), and others reached over SSH."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..ssh import SshTarget

LOCAL = "local"


def _home_ssh(name: str) -> Path:
    return Path(os.path.expanduser("~")) / ".ssh" / name


@dataclass(frozen=True)
class SshSettings:
    """How cq-server reaches build hosts over SSH (the `ssh:` section)."""

    key: Path = field(default_factory=lambda: _home_ssh("id_ed25519"))
    known_hosts: Path = field(default_factory=lambda: _home_ssh("known_hosts"))
    connect_timeout: float = 10.0
    # How often the host of a running job must show it still answers. A host that does not,
    # within connect_timeout, is down: without this a frozen host would hold its job forever.
    check_seconds: float = 30.0
    retry_seconds: float = 60.0  # how often a host that is down is tried again


@dataclass(frozen=True)
class BuildHost:
    name: str
    labels: frozenset[str] = frozenset()  # what it offers: a job's labels must all be here
    ssh: SshTarget | None = None  # None: this machine
    key: Path | None = None  # for SSH hosts: the private key and the known_hosts file
    known_hosts: Path | None = None

    @property
    def url(self) -> str:
        return str(self.ssh) if self.ssh else LOCAL

    def accepts(self, labels: tuple[str, ...]) -> bool:
        return self.labels.issuperset(labels)


DEFAULT_HOSTS = (BuildHost(LOCAL),)
