"""The nightly job's systemd units beside /etc/cron.d: off until enabled, spread over a
random delay, the build host's sync before the clients', each running what the ebuild
installs."""

from __future__ import annotations

import re
import shlex

from packaging_helpers import REPO, source_ebuild, span, systemd_unit

SYSTEMD = REPO / "etc" / "systemd"
EBUILD = REPO / "ebuild" / "app-admin" / "cq-portage" / "cq-portage-9999.ebuild"
UNITDIR = "/usr/lib/systemd/system"


def calendar_minutes(value: str) -> int:
    m = re.fullmatch(r"\*-\*-\* (\d\d):(\d\d):00", value)
    assert m, f"expected a daily OnCalendar=*-*-* HH:MM:00, not {value!r}"
    return int(m[1]) * 60 + int(m[2])


def test_units_are_installed_and_run_installed_programs():
    ebuild = source_ebuild(EBUILD)
    installed = {i.dest: i for i in ebuild.installed}
    executables = {i.dest for i in ebuild.installed if i.executable}
    for name in ("cq-portage-nightly", "cq-portage-sync"):
        for kind in ("service", "timer"):
            assert f"{UNITDIR}/{name}.{kind}" in installed
        service = systemd_unit(SYSTEMD / f"{name}.service")["Service"]
        assert service["Type"] == "oneshot"
        argv = shlex.split(service["ExecStart"])
        assert argv[0] in executables, f"{argv[0]} is not installed"
        timer = systemd_unit(SYSTEMD / f"{name}.timer")
        assert timer["Install"]["WantedBy"] == "timers.target"  # `enable` is the one step
        assert "[Install]" not in (SYSTEMD / f"{name}.service").read_text(), \
            "only the timer is enabled"


def test_clients_spread_over_half_an_hour_after_the_build_host_synced():
    nightly = systemd_unit(SYSTEMD / "cq-portage-nightly.timer")["Timer"]
    sync = systemd_unit(SYSTEMD / "cq-portage-sync.timer")["Timer"]
    assert span(nightly["RandomizedDelaySec"]) >= 30 * 60
    assert span(sync.get("RandomizedDelaySec", "0")) == 0, "one host: no reason to wait"
    gap = calendar_minutes(nightly["OnCalendar"]) - calendar_minutes(sync["OnCalendar"])
    assert gap >= 30, "the build host's tree must be synced before the clients start"
    # The timer spreads the start: the script must not wait a second time.
    env = systemd_unit(SYSTEMD / "cq-portage-nightly.service")["Service"]["Environment"]
    assert "CQ_NIGHTLY_DELAY=0" in shlex.split(env)
    sync_only = systemd_unit(SYSTEMD / "cq-portage-sync.service")["Service"]["ExecStart"]
    assert shlex.split(sync_only)[1:] == ["--sync-only"]


def test_shipped_mirror_examples_go_to_usr_share_not_etc():
    """They change how every host syncs: examples to copy, never live files."""
    installed = {i.src: i.dest for i in source_ebuild(EBUILD).installed}
    for src in ("etc/rsync/rsyncd-mirror.conf", "etc/portage/repos.conf/from-build-host.conf"):
        assert installed[src].startswith("/usr/share/cq-portage/"), installed[src]
