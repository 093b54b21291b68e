"""The `ssh:` section both configs share: how hosts are reached over SSH, and the check that
its files can be read. Apart from ssh.py so that reading a config does not load paramiko."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


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
