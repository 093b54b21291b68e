"""The postsync hook run by real Portage (`emaint sync` in a prefix): it plans what a plain
`cq-emerge --pretend --json` plans, although Portage hands hooks its whole configuration,
USE_EXPAND variables included, and it starts only once the syncing process has exited."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from cq_portage.sandbox.prefix import Prefix
from cq_portage.sandbox.repository import Ebuild
from cq_portage.emerge.jobs import wire_key
from site_helpers import edited_config, make_site

TREE = Path(__file__).resolve().parents[2]
HOOK = TREE / "etc/portage/postsync.d/cq-portage"
USE_EXPAND = "PYTHON_TARGETS L10N CPU_FLAGS_X86"
# make.conf's global values, which Portage exports to every hook ...
MAKE_CONF = {"USE_EXPAND": USE_EXPAND, "PYTHON_TARGETS": "python3_12", "L10N": "de",
             "CPU_FLAGS_X86": "sse2"}
# ... and this host's package.use, which says otherwise for one package.
PACKAGE_USE = ("app-misc/pyexp PYTHON_TARGETS: -python3_12 python3_13 L10N: -de fr "
               "CPU_FLAGS_X86: aes\n")
PYEXP = Ebuild("app-misc/pyexp-1", iuse=("python_targets_python3_12",
                                         "python_targets_python3_13", "l10n_de", "l10n_fr",
                                         "cpu_flags_x86_sse2", "cpu_flags_x86_aes"))
WAITED = Ebuild("app-misc/waited-1")
INSTALL_SECONDS = 240  # a build and an install in the sandbox take well under this


@pytest.fixture(scope="module")
def site(tmp_path_factory, munged):
    site = make_site(tmp_path_factory.mktemp("postsync-env"), munged)
    site.sandbox.repository.add(PYEXP, WAITED)
    # The build host must know these USE_EXPAND variables to build the pinned instance.
    site.build.write_make_conf(USE_EXPAND=USE_EXPAND)
    yield site
    site.server.stop()


def write_config(site, folder: Path, group: str, package: str) -> Path:
    def edit(config: dict) -> None:
        config["groups"][group] = {"packages": [package]}
        config["host"] = {"groups": [group]}
    return edited_config(site.config, folder / "cq-portage.yaml", edit)


def add_synced_repository(prefix: Prefix, folder: Path) -> None:
    """A second repository that `emaint sync --auto` really syncs (git, from a local
    source), so that Portage runs the postsync hooks as after any sync."""
    source = folder / "cqsync-source"
    (source / "profiles").mkdir(parents=True)
    (source / "profiles/repo_name").write_text("cqsync\n")
    (source / "metadata").mkdir()
    (source / "metadata/layout.conf").write_text("masters = cqtest\nthin-manifests = true\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org"]
    for args in (["init", "-q"], ["add", "."], ["commit", "-qm", "tree"]):
        subprocess.run([*git, *args], cwd=source, check=True, capture_output=True)
    (prefix.config_dir / "repos.conf" / "cqsync.conf").write_text(
        f"[cqsync]\nlocation = {prefix.path}/var/db/repos/cqsync\nsync-type = git\n"
        f"sync-uri = file://{source}\nauto-sync = yes\n")


def install_hook(prefix: Prefix) -> None:
    hooks = prefix.config_dir / "postsync.d"
    hooks.mkdir(exist_ok=True)
    shutil.copy(HOOK, hooks / "cq-portage")


def wait_installed(prefix: Prefix, cpv: str, log: Path) -> None:
    deadline = time.monotonic() + INSTALL_SECONDS
    while cpv not in prefix.installed():
        text = log.read_text() if log.exists() else "(none)"
        assert "!!!" not in text and time.monotonic() < deadline, f"{cpv} not installed:\n{text}"
        time.sleep(0.5)


def submitted(site, atom: str) -> set[str]:
    """The dedupe keys of the server's jobs that build `atom`."""
    with site.server.client() as client:
        return {j.dedupe_key for j in client.list() if j.args[-1].startswith(atom)}


def pretend(site, prefix: Prefix, config: Path) -> dict:
    done = subprocess.run(["cq-emerge", "--config", str(config), "--pretend", "--json"],
                          env=prefix.env(), text=True, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_hook_started_by_portage_plans_what_a_plain_run_plans(site, tmp_path):
    host = site.client("pyexp1")
    host.write_make_conf(**MAKE_CONF)
    (host.config_dir / "package.use").write_text(PACKAGE_USE)
    config = write_config(site, tmp_path, "pyexp", "app-misc/pyexp")
    add_synced_repository(host, tmp_path)
    install_hook(host)

    # Logs of earlier runs: cq-emerge keeps keep_logs_days (default 30) of them.
    logs = host.path / "var/lib/cq-portage/logs"
    logs.mkdir(parents=True)
    aged, recent = logs / "install-pyexp-old.log", logs / "install-pyexp-recent.log"
    for path, days in ((aged, 31), (recent, 29)):
        path.write_text("earlier run\n")
        os.utime(path, (time.time() - days * 86400,) * 2)

    plain = pretend(site, host, config)
    [plan] = plain["plans"]
    [entry] = plan["packages"]
    wanted = set(entry["use"])
    # package.use wins over make.conf in a plain run (this is what the hook must keep).
    assert {"python_targets_python3_13", "l10n_fr", "cpu_flags_x86_aes"} <= wanted
    assert not wanted & {"python_targets_python3_12", "l10n_de"}, wanted

    # A real sync: Portage runs the hook with settings.environ(), PYTHON_TARGETS and all.
    sync = host.run("emaint", "sync", "--auto", env={"CQ_PORTAGE_CONFIG": str(config)},
                    check=False, timeout=120)
    assert sync.returncode == 0, sync.stdout + sync.stderr
    log = host.path / "var/log/cq-portage/postsync.log"
    deadline = time.monotonic() + INSTALL_SECONDS
    while not (keys := submitted(site, "=app-misc/pyexp")):
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.3)
    assert keys == {wire_key(job["key"]) for job in plain["jobs"]}, "it submitted other builds"
    wait_installed(host, "app-misc/pyexp-1", log)
    installed = host.installed()["app-misc/pyexp-1"]
    assert set(installed.use) == wanted, log.read_text()
    # And the plain run now finds nothing to do: the hook did not undo anything.
    assert pretend(site, host, config)["plans"][0]["packages"] == []
    assert not aged.exists() and recent.exists(), "the run prunes logs older than 30 days"
    text = log.read_text()
    assert "waiting for the syncing process" in text and "has exited" in text, text


def test_hook_waits_for_the_syncing_process_to_exit(site, tmp_path):
    """Portage moves packages (package moves over the vdb) after the hooks: the update
    starts only once the process that ran the hook has exited."""
    host = site.client("waited1")
    config = write_config(site, tmp_path, "waited", "app-misc/waited")
    hold = 6.0  # seconds the "syncing process" lives on after its hook returned
    marker = tmp_path / "sync-exited"
    # The hook's parent plays emaint: it runs the hook, then keeps working for a while.
    parent = subprocess.Popen(["sh", "-c", f'"$1"; echo hook-returned; sleep {hold}; '
                               f'touch "$2"', "sh", str(HOOK), str(marker)],
                              env=host.env(CQ_PORTAGE_CONFIG=str(config)),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    started = time.monotonic()
    output = ""
    while "hook-returned" not in output:
        output += parent.stdout.readline()
        assert time.monotonic() - started < 10, output  # the sync is not kept waiting
    assert "updating waited in the background" in output
    submitted_early = []
    while parent.poll() is None:
        submitted_early += submitted(site, "=app-misc/waited")
        time.sleep(0.3)
    assert marker.exists() and time.monotonic() - started >= hold
    assert submitted_early == [], "the update started while the syncing process still ran"
    log = host.path / "var/log/cq-portage/postsync.log"
    wait_installed(host, "app-misc/waited-1", log)
    assert f"waiting for the syncing process (pid {parent.pid})" in log.read_text()
