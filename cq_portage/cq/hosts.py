"""Build hosts: where jobs run. This machine ("local"), and others reached over SSH."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..sshconfig import SshTarget

LOCAL = "local"


@dataclass(frozen=True)
class BuildHost:
    name: str
    labels: frozenset[str] = frozenset()  # what it offers: a job's labels must all be here
    ssh: SshTarget | None = None  # None: this machine
    key_file: Path | None = None  # for SSH hosts: the private key and the known_hosts file
    known_hosts: Path | None = None

    @property
    def url(self) -> str:
        return str(self.ssh) if self.ssh else LOCAL

    def accepts(self, labels: tuple[str, ...]) -> bool:
        return self.labels.issuperset(labels)


DEFAULT_HOSTS = (BuildHost(LOCAL),)
