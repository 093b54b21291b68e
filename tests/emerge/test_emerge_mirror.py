"""One tree for the site: the build host serves its repository with the rsync module
shipped in etc/rsync/rsyncd-mirror.conf (a real rsync daemon), and a client synced with the
shipped etc/portage/repos.conf/from-build-host.conf (real `emaint sync`) holds exactly the
build host's tree, so it plans the versions the build host can build."""

from __future__ import annotations

import configparser
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cq_portage.sandbox.prefix import Sandbox
from cq_portage.sandbox.processes import wait_listening
from cq_portage.sandbox.repository import Ebuild
from cq_portage.sandbox.server import free_port

TREE = Path(__file__).resolve().parents[2]
RSYNCD = TREE / "etc/rsync/rsyncd-mirror.conf"
CLIENT_REPOS = TREE / "etc/portage/repos.conf/from-build-host.conf"
SYNC_SECONDS = 60  # a sync of the small sandbox tree takes a few seconds


def tree_digest(root: Path, skip: tuple[str, ...]) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))
            if p.is_file() and not p.relative_to(root).as_posix().startswith(skip)}


def rsync_module(tree: Path) -> tuple[str, configparser.SectionProxy]:
    """The shipped module, read as rsyncd reads it (name, then its parameters)."""
    parser = configparser.ConfigParser(interpolation=None, delimiters=("=",))
    parser.read_string(RSYNCD.read_text())
    [name] = parser.sections()
    return name, parser[name]


@pytest.fixture
def build_host_rsyncd(tmp_path):
    """rsyncd on 127.0.0.1 with the shipped module, pointed at a build host's tree."""
    sandbox = Sandbox(tmp_path / "sandbox").create()
    sandbox.repository.add(Ebuild("app-misc/mirrored-1"))
    name, module = rsync_module(sandbox.repository.path)
    port = free_port()
    lines = [f"port = {port}", f"pid file = {tmp_path}/rsyncd.pid",
             f"log file = {tmp_path}/rsyncd.log", f"[{name}]"]
    for key, value in module.items():
        if key == "path":
            value = str(sandbox.repository.path)
        elif key in ("uid", "gid"):
            value = "root"  # pytest's folders are 0700: nobody could not read them
        elif key == "hosts allow":
            value = "127.0.0.1"
        lines.append(f"\t{key} = {value}")
    (tmp_path / "rsyncd.conf").write_text("\n".join(lines) + "\n")
    log = tmp_path / "rsyncd.log"
    daemon = subprocess.Popen(["rsync", "--daemon", "--no-detach", "--config",
                               str(tmp_path / "rsyncd.conf")], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=open(log, "ab"))
    try:
        wait_listening(daemon, port, log, "rsyncd", 15)
        yield sandbox, name, module, port
    finally:
        daemon.terminate()
        daemon.wait(timeout=10)


def test_a_client_synced_from_the_build_host_has_its_tree(build_host_rsyncd, tmp_path):
    sandbox, name, module, port = build_host_rsyncd
    build_tree = sandbox.repository.path
    client = sandbox.add_prefix("client")
    # The shipped client repos.conf, for the sandbox's repository on this port.
    repos = configparser.ConfigParser(interpolation=None)
    repos.read_string(CLIENT_REPOS.read_text())
    [section] = repos.sections()
    conf = dict(repos[section])
    assert conf["sync-type"] == "rsync" and conf["sync-uri"].endswith(f"/{name}")
    conf["location"] = str(client.path / "var/db/repos" / sandbox.repository.name)
    conf["sync-uri"] = conf["sync-uri"].replace("build.example.org", f"127.0.0.1:{port}")
    # Gentoo's signed Manifests verify a real ::gentoo; the sandbox tree has none.
    conf["sync-rsync-verify-metamanifest"] = "no"
    (client.config_dir / "repos.conf" / "sandbox.conf").write_text(
        f"[{sandbox.repository.name}]\n" + "".join(f"{k} = {v}\n" for k, v in conf.items()))
    excluded = tuple(p.strip("/") + "/" for p in module["exclude"].split())

    # The build host syncs (upstream moved on): app-misc/mirrored-2 appears in its tree.
    sandbox.repository.add(Ebuild("app-misc/mirrored-2"))
    # Like ::gentoo, the tree says when it was made (Portage's rsync sync reads it first).
    (build_tree / "metadata" / "timestamp.chk").write_text(
        time.strftime("%a, %d %b %Y %H:%M:%S +0000\n", time.gmtime()))
    (build_tree / "distfiles").mkdir()
    (build_tree / "distfiles" / "big.tar.gz").write_bytes(b"not part of the tree")
    start = time.monotonic()
    sync = client.run("emaint", "sync", "-r", sandbox.repository.name, check=False,
                      timeout=SYNC_SECONDS)
    assert sync.returncode == 0, sync.stdout + sync.stderr
    assert time.monotonic() - start < SYNC_SECONDS
    client_tree = Path(conf["location"])
    assert tree_digest(client_tree, excluded) == tree_digest(build_tree, excluded)
    assert not (client_tree / "distfiles").exists(), "the module serves the tree only"

    # And the client plans the version the build host has.
    config = tmp_path / "cq-portage.yaml"
    config.write_text("server: {host: 127.0.0.1}\ngroups: {m: {packages: [app-misc/mirrored]}}\n")
    plan = subprocess.run([sys.executable, "-m", "cq_portage.emerge.cli", "--config",
                           str(config), "-g", "m", "--pretend", "--json"], env=client.env(),
                          text=True, capture_output=True, timeout=300)
    assert plan.returncode == 0, plan.stderr
    cpvs = [p["cpv"] for p in json.loads(plan.stdout)["plans"][0]["packages"]]
    assert cpvs == ["app-misc/mirrored-2"]
