"""The operating surface against the sandbox: the Portage postsync hook, called the way
Portage calls it, and the nightly cron job."""

from __future__ import annotations

import fcntl
import subprocess
import time
from pathlib import Path

import pytest

from site_helpers import make_site

TREE = Path(__file__).resolve().parents[2]
HOOK = TREE / "etc/portage/postsync.d/cq-portage"
NIGHTLY = TREE / "etc/libexec/cq-portage-nightly"


@pytest.fixture(scope="module")
def site(tmp_path_factory, munged):
    site = make_site(tmp_path_factory.mktemp("ops"), munged)
    yield site
    site.server.stop()


def wait_installed(prefix, cpv, seconds=300):
    deadline = time.monotonic() + seconds
    while cpv not in prefix.installed():
        assert time.monotonic() < deadline, f"{cpv} was not installed"
        time.sleep(0.5)


def run(prefix, argv, config, **env):
    return subprocess.run([str(a) for a in argv], env=prefix.env(CQ_PORTAGE_CONFIG=str(config),
                                                                  **env),
                          text=True, capture_output=True, timeout=120)


def test_postsync_hook_starts_the_update_in_the_background(site, tmp_path):
    host = site.client("synced1")
    config = site.host_config(tmp_path, groups=["synced"])
    start = time.monotonic()
    done = run(host, [HOOK], config)  # postsync.d: once per sync, no arguments
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - start < 10  # the sync is not kept waiting for builds
    assert "updating synced in the background" in done.stdout
    wait_installed(host, "app-misc/synced-1")
    log = (host.path / "var/log/cq-portage/postsync.log").read_text()
    assert "after a sync: cq-emerge for synced" in log


def test_per_repository_calls_act_only_when_configured(site, tmp_path):
    host = site.client("perrepo1")
    repo = ["cqtest", "", str(site.sandbox.repository.path)]
    default = site.host_config(tmp_path, groups=["perrepo"])
    quiet = run(host, [HOOK, *repo], default)  # repo.postsync.d, default config: not ours
    assert quiet.returncode == 0 and quiet.stdout == ""
    other = tmp_path / "other"
    other.mkdir()
    listed = site.host_config(other, groups=["perrepo"], postsync=["cqtest"])
    assert "background" not in run(host, [HOOK], listed).stdout  # then the global call is not
    assert "background" in run(host, [HOOK, *repo], listed).stdout
    wait_installed(host, "app-misc/perrepo-1")


def test_postsync_switched_off(site, tmp_path):
    host = site.client("off1")
    config = site.host_config(tmp_path, groups=["synced"], postsync=False)
    done = run(host, [HOOK], config)
    assert done.returncode == 0 and "postsync: off" in done.stdout
    assert not (host.path / "var/log/cq-portage").exists()


def test_nightly_syncs_then_updates_and_logs(site, tmp_path):
    host = site.client("nightly1")
    config = site.host_config(tmp_path, groups=["nightly"])
    log, lock = tmp_path / "nightly.log", tmp_path / "nightly.lock"
    env = {"CQ_NIGHTLY_LOG": str(log), "CQ_NIGHTLY_LOCK": str(lock)}

    failed = run(host, [NIGHTLY], config, CQ_SYNC_COMMAND="false", **env)
    assert failed.returncode == 1
    assert "sync failed with exit status 1: not updating" in log.read_text()
    assert "app-misc/nightly-1" not in host.installed()

    with open(lock, "w") as held:  # another nightly run holds the lock
        fcntl.flock(held, fcntl.LOCK_EX)
        busy = run(host, [NIGHTLY], config, **env)
    assert busy.returncode == 0 and "holds" in log.read_text().splitlines()[-1]

    ok = run(host, [NIGHTLY], config, **env)  # real `emaint sync --auto` in the prefix
    text = log.read_text()
    assert ok.returncode == 0, text
    assert "syncing: emaint sync --auto" in text and "cq-emerge finished with exit status 0" in text
    assert "app-misc/nightly-1" in host.installed()
