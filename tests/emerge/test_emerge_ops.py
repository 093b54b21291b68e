"""The operating surface against the sandbox: the Portage postsync hook, called the way
Portage calls it, and the nightly cron job."""

from __future__ import annotations

import fcntl
import os
import re
import subprocess
import sys
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


def run_hook(prefix, args, config):
    """The hook as Portage runs it: a child of a process (emerge, emaint) that goes on and
    exits soon after; the update it starts waits for that process to exit."""
    return run(prefix, ["sh", "-c", '"$0" "$@"; exit $?', HOOK, *args], config)


def test_postsync_hook_starts_the_update_in_the_background(site, tmp_path):
    host = site.client("synced1")
    config = site.host_config(tmp_path, groups=["synced"])
    start = time.monotonic()
    done = run_hook(host, [], config)  # postsync.d: once per sync, no arguments
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
    quiet = run_hook(host, repo, default)  # repo.postsync.d, default config: not ours
    assert quiet.returncode == 0 and quiet.stdout == ""
    other = tmp_path / "other"
    other.mkdir()
    listed = site.host_config(other, groups=["perrepo"], postsync=["cqtest"])
    assert "background" not in run_hook(host, [], listed).stdout  # then the global call is not
    assert "background" in run_hook(host, repo, listed).stdout
    wait_installed(host, "app-misc/perrepo-1")


def test_postsync_switched_off(site, tmp_path):
    host = site.client("off1")
    config = site.host_config(tmp_path, groups=["synced"], postsync=False)
    done = run_hook(host, [], config)
    assert done.returncode == 0 and "postsync: off" in done.stdout
    assert not (host.path / "var/log/cq-portage").exists()


def test_nightly_syncs_then_updates_and_logs(site, tmp_path):
    host = site.client("nightly1")
    config = site.host_config(tmp_path, groups=["nightly"])
    log, lock = tmp_path / "nightly.log", tmp_path / "nightly.lock"
    env = {"CQ_NIGHTLY_LOG": str(log), "CQ_NIGHTLY_LOCK": str(lock), "CQ_NIGHTLY_DELAY": "0"}

    failed = run(host, [NIGHTLY], config, CQ_SYNC_COMMAND="false", **env)
    assert failed.returncode == 1
    assert "sync failed with exit status 1: not updating" in log.read_text()
    # One line on the job's own stderr, for cron's MAILTO or the journal.
    assert failed.stderr == ("cq-portage-nightly: sync failed with exit status 1: not "
                             f"updating (log: {log})\n") and failed.stdout == ""
    assert "app-misc/nightly-1" not in host.installed()

    with open(lock, "w") as held:  # another nightly run holds the lock
        fcntl.flock(held, fcntl.LOCK_EX)
        busy = run(host, [NIGHTLY], config, **env)
    assert busy.returncode == 0 and "holds" in log.read_text().splitlines()[-1]

    ok = run(host, [NIGHTLY], config, **env)  # real `emaint sync --auto` in the prefix
    text = log.read_text()
    assert ok.returncode == 0, text
    assert ok.stdout == ok.stderr == "", "a good night mails nothing"
    assert "syncing: emaint sync --auto" in text and "cq-emerge finished with exit status 0" in text
    assert "app-misc/nightly-1" in host.installed()


# --- nothing acts until configured ------------------------------------------------------

EXAMPLE = TREE / "etc/cq-portage/cq-portage.yaml"  # as the ebuild installs it


def run_plain(argv, tmp_path, **env):
    """Outside any sandbox: nothing here may reach Portage, a server or a sync."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("CQ_")}
    base["PATH"] = f"{Path(sys.executable).parent}:{base.get('PATH', '/usr/bin:/bin')}"
    return subprocess.run([str(a) for a in argv], env={**base, **env}, cwd=tmp_path,
                          text=True, capture_output=True, timeout=60)


def test_shipped_config_bare_cq_emerge_says_why_and_exits_2(tmp_path):
    done = run_plain(["cq-emerge", "--config", EXAMPLE], tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [
        f"cq-emerge: {EXAMPLE}: no group given: name one with --group NAME, use "
        "--all-groups, or list this host's in host: {groups: [...]}"]


def test_shipped_config_postsync_hook_does_nothing_and_exits_0(tmp_path):
    done = run_plain([HOOK], tmp_path, CQ_PORTAGE_CONFIG=str(EXAMPLE),
                     PORTAGE_OVERRIDE_EPREFIX=str(tmp_path))
    assert done.returncode == 0 and done.stderr == ""
    assert done.stdout == (f"cq-emerge: postsync: no host: {{groups: [...]}} in {EXAMPLE}: "
                           "this host updates nothing by itself\n")
    assert list(tmp_path.iterdir()) == [], "no log, no background run"


def test_shipped_config_nightly_job_syncs_nothing_and_exits_0(tmp_path):
    log, marker = tmp_path / "nightly.log", tmp_path / "synced"
    done = run_plain([NIGHTLY], tmp_path, CQ_PORTAGE_CONFIG=str(EXAMPLE),
                     CQ_NIGHTLY_LOG=str(log), CQ_NIGHTLY_LOCK=str(tmp_path / "lock"),
                     CQ_SYNC_COMMAND=f"touch {marker}")
    assert done.returncode == 0 and done.stdout == done.stderr == "", "cron mails nothing"
    assert not marker.exists(), "it synced although this host has no groups"
    assert log.read_text().splitlines()[-1].endswith(
        f"not syncing: no host: {{groups: [...]}} in {EXAMPLE}: this host updates nothing "
        "by itself")


def test_nightly_with_a_broken_config_fails_in_one_line(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("server: {host: b}\ngroups: {web: {}}\nhost: {groups: [nope]}\n")
    log = tmp_path / "nightly.log"
    done = run_plain([NIGHTLY], tmp_path, CQ_PORTAGE_CONFIG=str(broken),
                     CQ_NIGHTLY_LOG=str(log), CQ_NIGHTLY_LOCK=str(tmp_path / "lock"),
                     CQ_SYNC_COMMAND="false")
    assert done.returncode == 2
    assert done.stderr == (f"cq-portage-nightly: cq-emerge --host-groups failed (exit 2): "
                           f"cq-emerge: {broken}:3: 'host.groups' names unknown group 'nope' (known "
                           f"groups: web) (log: {log})\n")


@pytest.mark.parametrize("max_delay", [3])
def test_nightly_waits_a_random_delay_within_its_bound(tmp_path, max_delay):
    """Under cron the job sleeps 0..CQ_NIGHTLY_DELAY seconds first, so that a site's hosts
    do not all reach the mirrors in one minute."""
    config = tmp_path / "c.yaml"
    config.write_text("server: {host: b}\ngroups: {web: {}}\nhost: {groups: [web]}\n")
    log = tmp_path / "nightly.log"
    delays = []
    for _ in range(4):
        start = time.monotonic()
        done = run_plain([NIGHTLY], tmp_path, CQ_PORTAGE_CONFIG=str(config),
                         CQ_NIGHTLY_LOG=str(log), CQ_NIGHTLY_LOCK=str(tmp_path / "lock"),
                         CQ_SYNC_COMMAND="false", CQ_NIGHTLY_DELAY=str(max_delay))
        took = time.monotonic() - start
        assert done.returncode == 1  # the "sync" fails: nothing more to do
        waited = int(re.findall(rf"waiting (\d+)s \(a random delay of at most "
                                rf"{max_delay}s\)", log.read_text())[-1])
        assert 0 <= waited <= max_delay and waited <= took < waited + 5
        delays.append(waited)
    bad = run_plain([NIGHTLY], tmp_path, CQ_PORTAGE_CONFIG=str(config),
                    CQ_NIGHTLY_LOG=str(log), CQ_NIGHTLY_LOCK=str(tmp_path / "lock"),
                    CQ_NIGHTLY_DELAY="soon")
    assert bad.returncode == 2 and "CQ_NIGHTLY_DELAY=soon is not a number" in bad.stderr


def test_nightly_sync_only_syncs_at_once_whatever_host_says(tmp_path):
    """The build host's early sync (--sync-only): no host groups needed, no random delay,
    no cq-emerge run; the clients then sync from its tree."""
    log, marker = tmp_path / "nightly.log", tmp_path / "synced"
    start = time.monotonic()
    done = run_plain([NIGHTLY, "--sync-only"], tmp_path, CQ_PORTAGE_CONFIG=str(EXAMPLE),
                     CQ_NIGHTLY_LOG=str(log), CQ_NIGHTLY_LOCK=str(tmp_path / "lock"),
                     CQ_NIGHTLY_DELAY="1800", CQ_SYNC_COMMAND=f"touch {marker}")
    assert time.monotonic() - start < 10, "no random delay for the build host"
    assert done.returncode == 0 and done.stdout == done.stderr == ""
    assert marker.exists()
    text = log.read_text()
    assert "syncing (--sync-only)" in text and text.rstrip().endswith("synced")
    assert "cq-emerge" not in text and "waiting" not in text
    failed = run_plain([NIGHTLY, "--sync-only"], tmp_path, CQ_NIGHTLY_LOG=str(log),
                       CQ_NIGHTLY_LOCK=str(tmp_path / "lock"), CQ_SYNC_COMMAND="false")
    assert failed.returncode == 1
    assert failed.stderr == (f"cq-portage-nightly: sync failed with exit status 1 (log: "
                             f"{log})\n")
