"""cq-emerge's own logs are pruned by age (keep_logs_days), as cq-server prunes its jobs."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from cq_portage.emerge.logs import DAY, prune_logs
from cq_portage.emerge.profile_yaml import parse_config
from cq_portage.yamlfile import ConfigError

NOW = time.time()  # one "now" for the whole module, so that ages are exact


def make_log(path: Path, age_days: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("log\n")
    os.utime(path, (NOW - age_days * DAY, NOW - age_days * DAY))
    return path


def test_logs_older_than_keep_days_go_and_newer_ones_stay(tmp_path):
    logs = tmp_path / "logs"
    old = [make_log(logs / "install-web-20260101-000000-7.log", 31),
           make_log(logs / "background-web.log", 45),
           make_log(logs / "fleet" / "ssh_root_web1" / "install-web-1.log", 30.01)]
    new = [make_log(logs / "install-web-20260201-000000-9.log", 29.99),
           make_log(logs / "fleet" / "ssh_root_web2" / "install-web-2.log", 1)]
    stale = logs / "fleet" / "ssh_root_gone"  # a host removed from the group long ago
    stale.mkdir()
    os.utime(stale, (NOW - 31 * DAY, NOW - 31 * DAY))
    assert prune_logs(logs, 30, now=NOW) == 3
    assert [p for p in old if p.exists()] == []
    assert all(p.exists() for p in new)
    assert not (logs / "fleet" / "ssh_root_web1").exists()  # emptied by the pruning
    assert not stale.exists()
    assert (logs / "fleet" / "ssh_root_web2").is_dir()


def test_a_fresh_empty_folder_is_kept_for_the_run_about_to_write_into_it(tmp_path):
    folder = tmp_path / "logs" / "fleet" / "ssh_root_web3"
    folder.mkdir(parents=True)  # made just now by a run that has not written its log yet
    assert prune_logs(tmp_path / "logs", 0.5, now=NOW) == 0
    assert folder.is_dir()


def test_no_log_dir_yet_is_nothing_to_do(tmp_path):
    assert prune_logs(tmp_path / "missing", 30) == 0


SERVER = "server: {host: build.example.org}\ngroups: {web: {use: ssl}}\n"


@pytest.mark.parametrize("text, days", [("", 30.0), ("keep_logs_days: 7", 7.0),
                                        ("keep_logs_days: 0.5", 0.5),
                                        ("keep_logs_days: 0", 0.0)])
def test_keep_logs_days_in_the_config(text, days):
    assert parse_config(SERVER + text, Path("c.yaml")).keep_logs_days == days


@pytest.mark.parametrize("value", ["-1", "forever", "true", "99999999"])
def test_a_bad_keep_logs_days_is_one_line(value):
    with pytest.raises(ConfigError) as error:
        parse_config(SERVER + f"keep_logs_days: {value}\n", Path("c.yaml"))
    assert error.value.problems == [
        "c.yaml:3: 'keep_logs_days' must be a number of days from 0 to 36500"]
