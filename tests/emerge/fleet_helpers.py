"""A fleet for end-to-end tests: hosts that are real sshd processes on 127.0.0.1, each
serving its own sandbox prefix (its sessions get that prefix's environment through sshd's
SetEnv), one admin key and known_hosts for all of them, and the site's config with groups
listing those hosts."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from cq_portage.sandbox.prefix import Prefix
from cq_portage.sandbox.sshd import Sshd
from site_helpers import Site

# What a host's login needs to run cq-emerge and emerge on its own prefix.
_HOST_ENV = ("PORTAGE_OVERRIDE_EPREFIX", "PATH", "PYTHONPATH", "NOCOLOR")


def login_env(prefix: Prefix, **extra: str) -> dict[str, str]:
    """What an sshd gives its sessions (SetEnv) so that they act on `prefix`, plus `extra`."""
    return {k: v for k, v in prefix.env(**extra).items() if k in (*_HOST_ENV, *extra)}


@dataclass
class Host:
    prefix: Prefix
    sshd: Sshd

    @property
    def url(self) -> str:
        return self.sshd.url

    @property
    def label(self) -> str:
        return f"127.0.0.1:{self.sshd.port}"


@dataclass
class Fleet:
    site: Site
    folder: Path
    admin: Prefix  # the admin host: where fleet mode runs and keeps its state
    config: Path
    hosts: dict[str, Host] = field(default_factory=dict)

    @property
    def key_file(self) -> Path:
        return self.folder / "admin_key"

    @property
    def known_hosts(self) -> Path:
        return self.folder / "known_hosts"

    def add_host(self, name: str, *world: str, known: bool = True) -> Host:
        """A host: a prefix with `world`, an sshd serving it; `known`: its host key is in
        the admin's known_hosts."""
        prefix = self.site.client(name)
        prefix.write_world(*world)
        sshd = Sshd(self.folder / f"sshd-{name}",
                    set_env=login_env(prefix, CQ_PORTAGE_CONFIG=str(self.config)),
                    client_key_file=self.key_file).start()
        if known:
            with open(self.known_hosts, "a") as f:
                f.write(sshd.host_key_line())
        host = self.hosts[name] = Host(prefix, sshd)
        return host

    def write_config(self, groups: dict[str, dict]) -> None:
        """The site's config plus `groups` (hosts named by add_host) and the ssh: section;
        every host reads this same file (CQ_PORTAGE_CONFIG), as a site shares one."""
        config = yaml.safe_load(self.site.config.read_text())
        for name, group in groups.items():
            config["groups"][name] = {**group, "hosts": [self.hosts[h].url
                                                         for h in group.get("hosts", [])]}
        config["ssh"] = {"key_file": str(self.key_file), "known_hosts": str(self.known_hosts),
                         "connect_timeout": 5}
        self.config.write_text(yaml.safe_dump(config))

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "cq_portage.emerge.cli", "--config", str(self.config),
                *args]

    def cq_emerge(self, *args: str, timeout: float = 300, **kw):
        """cq-emerge on the admin host (whose own prefix is empty: it plans nothing)."""
        return subprocess.run(self.argv(*args), env=self.admin.env(), text=True,
                              capture_output=True, timeout=timeout, **kw)

    def start_cq_emerge(self, *args: str) -> subprocess.Popen:
        """The same, running: its output is read as it comes."""
        return subprocess.Popen(self.argv(*args), env=self.admin.env(), text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def cq_emerge_on(self, host: Host, *args: str, timeout: float = 600):
        """cq-emerge run on the host itself (no SSH), as the host would run it."""
        return subprocess.run(self.argv(*args), env=host.prefix.env(), text=True,
                              capture_output=True, timeout=timeout)

    def cq_emerge_json(self, *args: str) -> tuple[int, dict]:
        done = self.cq_emerge(*args, "--json")
        try:
            return done.returncode, json.loads(done.stdout)
        except ValueError:
            raise AssertionError(f"not JSON:\n{done.stdout}\n{done.stderr}") from None

    def stop(self) -> None:
        for host in self.hosts.values():
            host.sshd.stop()


def make_fleet(site: Site, folder: Path) -> Fleet:
    folder.mkdir(parents=True, exist_ok=True)
    fleet = Fleet(site, folder, site.client("admin"), folder / "cq-portage.yaml")
    fleet.known_hosts.write_text("")
    fleet.write_config({})
    return fleet
