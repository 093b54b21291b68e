"""A site for end-to-end tests: a sandbox repository, a build-host prefix, a real cq-server
(with cq-emerge-hook) whose jobs build there, and a cq-portage.yaml naming its groups."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from cq_portage.sandbox.prefix import Prefix, Sandbox
from cq_portage.sandbox.repository import MULTILIB_IUSE, Ebuild
from cq_portage.sandbox.server import CqServer, hold_queue


REPO = [
    Ebuild("dev-libs/base-1", iuse=MULTILIB_IUSE),
    Ebuild("dev-libs/tls-1"),
    Ebuild("www-servers/websrv-1", iuse=("ssl", "http2", "X"),
           rdepend="dev-libs/base ssl? ( dev-libs/tls )"),
    Ebuild("dev-db/dbsrv-1", iuse=("X", "ssl") + MULTILIB_IUSE, rdepend="dev-libs/base"),
    Ebuild("app-misc/broken-1", dies=True),
    Ebuild("app-misc/needs-broken-1", rdepend="app-misc/broken"),
    Ebuild("app-misc/indep-1"),
    Ebuild("app-misc/later-1"),
    Ebuild("app-misc/unbuilt-1"),
    Ebuild("app-misc/noinst-1", dies_on_merge=True),
    Ebuild("app-misc/asked-1"),
    Ebuild("app-misc/away-1"),
    Ebuild("app-misc/shown-1"),
    Ebuild("app-misc/synced-1"),
    Ebuild("app-misc/perrepo-1"),
    Ebuild("app-misc/nightly-1"),
]
GROUPS = {
    "web": {"use": "ssl http2 -X", "packages": ["www-servers/websrv"]},
    "db": {"use": "X -ssl", "abi_x86": "64 32", "packages": ["dev-db/dbsrv"]},
    "mixed": {"packages": ["app-misc/needs-broken", "app-misc/indep"]},
    "later": {"packages": ["app-misc/later"]},
    "unbuilt": {"packages": ["app-misc/unbuilt"]},
    "noinst": {"packages": ["app-misc/noinst"]},
    "asked": {"packages": ["app-misc/asked"]},
    "away": {"packages": ["app-misc/away"]},
    "shown": {"packages": ["app-misc/shown"]},
    "synced": {"packages": ["app-misc/synced"]},
    "perrepo": {"packages": ["app-misc/perrepo"]},
    "nightly": {"packages": ["app-misc/nightly"]},
}


@dataclass
class Site:
    sandbox: Sandbox
    build: Prefix
    server: CqServer
    config: Path

    def client(self, name: str) -> Prefix:
        return self.sandbox.prefixes.get(name) or self.sandbox.add_prefix(name)

    def cq_emerge(self, prefix: Prefix, *args: str, timeout: float = 600, **kw):
        return subprocess.run([sys.executable, "-m", "cq_portage.emerge.cli", "--config",
                               str(self.config), *args], env=prefix.env(), text=True,
                              capture_output=True, timeout=timeout, **kw)

    def cq_emerge_at_once(self, *runs: tuple[Prefix, str]
                          ) -> dict[str, subprocess.CompletedProcess]:
        """`cq-emerge --group GROUP` on several (host, GROUP) at the same time, by host name."""
        results: dict[str, subprocess.CompletedProcess] = {}
        threads = [threading.Thread(target=lambda p=p, g=g: results.update(
            {p.name: self.cq_emerge(p, "--group", g)})) for p, g in runs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return results

    def host_config(self, folder: Path, **host) -> Path:
        """The site's config with a host: section, as one client host would have it."""
        return edited_config(self.config, folder / "cq-portage.yaml", lambda c: c.update(host=host))

    def hold_queue(self, seconds: float) -> None:
        """A busy build host: what is submitted next stays queued for a while."""
        with self.server.client() as client:
            hold_queue(client, seconds)

    def jobs_run(self) -> list[str]:
        """The atoms of every build job the server has run (or is running)."""
        with self.server.client() as client:
            return [j.args[-1] for j in client.list() if j.args[-1].startswith("=")]


def edited_config(path: Path, to: Path, edit: Callable[[dict], object]) -> Path:
    """The config file `path`, changed by edit(its content), written to `to` (may be `path`)."""
    config = yaml.safe_load(path.read_text())
    edit(config)
    to.write_text(yaml.safe_dump(config))
    return to


def make_site(root: Path, munged, server_config: dict | None = None,
              repo: list[Ebuild] = REPO, groups: dict = GROUPS,
              build_config: Callable[[Prefix], dict] | None = None):
    """`build_config`: more server config, made from the build prefix (an SSH build host
    that serves it needs the prefix before the server starts)."""
    sandbox = Sandbox(root / "sandbox").create()
    sandbox.repository.add(*repo)
    build = sandbox.add_prefix("build")
    hook = str(Path(sys.executable).parent / "cq-emerge-hook")
    more = build_config(build) if build_config else {}
    server = CqServer(root / "server", munged.socket,
                      {"incoming_hook": [hook], **(server_config or {}), **more},
                      env=build.env()).start()
    config = root / "cq-portage.yaml"
    config.write_text(yaml.safe_dump({
        "server": {"host": "127.0.0.1", "port": server.port, "munge_socket": munged.socket,
                   "timeout": 10},
        "groups": groups}))
    return Site(sandbox, build, server, config)
