"""cq-emerge against hostile or damaged input of its own: a config nested 50,000 deep, a
damaged pending file. One line each, never a traceback; the run goes on where it can."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cq_portage.emerge.pending import Pending, state_name
from site_helpers import make_site

DEEP = 50_000


@pytest.mark.parametrize("text, line", [
    ("groups:\n  web: " + "{a: " * DEEP + "1" + "}" * DEEP + "\n", 2),
    ("groups:\n  web: {packages: " + "[" * DEEP + "]" * DEEP + "}\n", 2),
    ("server: {host: b}\ngroups:\n  web:\n" + "    - " * 1 + "- " * DEEP + "x\n", 4),
])
def test_deeply_nested_config_is_one_line_exit_2(tmp_path, text, line):
    path = tmp_path / "deep.yaml"
    path.write_text(text)
    done = subprocess.run([sys.executable, "-m", "cq_portage.emerge.cli", "--config",
                           str(path), "--group", "web", "--pretend"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr == f"cq-emerge: {path}:{line}: invalid YAML: nested more than 100 " \
                          "levels deep\n"


DAMAGED = {
    "not json": b"{\"jobs\": {\"k\": 1",
    "wrong types": json.dumps({"jobs": {"k": {"id": 3}}}).encode(),
    "a list": json.dumps({"jobs": [1, 2]}).encode(),
    "huge number": b'{"jobs": {"k": 1e400}}',
    "huge integer": ('{"jobs": {"k": 1' + "0" * 400 + "}}").encode(),
    "negative id": b'{"jobs": {"k": -4}}',
    "deep nesting": b'{"jobs": ' + b"[" * DEEP + b"]" * DEEP + b"}",
    "a directory": None,
}


def holds_lock(path: Path) -> bool:
    """Whether some process holds the flock on `path` (asked from another process)."""
    probe = ("import fcntl, os, sys\nfd = os.open(sys.argv[1], os.O_RDWR)\n"
             "try:\n    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
             "except BlockingIOError:\n    sys.exit(1)\n")
    return subprocess.run([sys.executable, "-c", probe, str(path)]).returncode == 1


@pytest.mark.parametrize("name", sorted(DAMAGED))
def test_a_damaged_pending_file_is_moved_aside_with_one_line(tmp_path, caplog, name):
    state = tmp_path / "state"
    state.mkdir()
    path = state / "web.json"
    if DAMAGED[name] is None:
        (path / "inside").mkdir(parents=True)
    else:
        path.write_bytes(DAMAGED[name])
    with Pending.open(state, "web") as pending:
        assert pending.jobs == {}
        assert holds_lock(state / "web.lock")
        pending.jobs["k"] = 12
        pending.save()
    assert not holds_lock(state / "web.lock")  # released with the run
    aside = [p for p in state.iterdir() if p.name.startswith("web.json.damaged-")]
    assert len(aside) == 1
    if DAMAGED[name] is not None:
        assert aside[0].read_bytes() == DAMAGED[name]  # kept as it was, for a look
    records = [r for r in caplog.records if "damaged pending file" in r.getMessage()]
    assert len(records) == 1 and "\n" not in records[0].getMessage()
    assert str(path) in records[0].getMessage() and str(aside[0]) in records[0].getMessage()
    with Pending.open(state, "web") as again:  # the new file is sound
        assert again.jobs == {"k": 12}


def test_a_good_pending_file_is_kept(tmp_path):
    state = tmp_path / "state"
    with Pending.open(state, "web") as pending:
        pending.jobs.update({"a": 1, "b": (1 << 63) - 1})
        pending.save()
    with Pending.open(state, "web") as pending:
        assert pending.jobs == {"a": 1, "b": (1 << 63) - 1}
    assert sorted(p.name for p in state.iterdir()) == ["web.json", "web.lock"]


def test_a_group_named_fleet_web_never_shares_fleet_modes_state(tmp_path):
    class Group:
        def __init__(self, name: str):
            self.name = name

    names = {"fleet-web", "build-web", state_name("fleet", [Group("web")]),
             state_name("build", [Group("web")])}
    assert len(names) == 4
    state = tmp_path / "state"
    with Pending.open(state, "fleet-web") as local, \
            Pending.open(state, state_name("fleet", [Group("web")])) as fleet:
        assert local.path != fleet.path  # both locks held at once: distinct files
        local.jobs["x"] = 1
        local.save()
        fleet.jobs["y"] = 2
        fleet.save()
    assert Pending.open(state, "fleet-web").jobs == {"x": 1}


@pytest.fixture(scope="module")
def site(tmp_path_factory, munged):
    site = make_site(tmp_path_factory.mktemp("site"), munged)
    yield site
    site.server.stop()


def test_cq_emerge_goes_on_after_a_damaged_pending_file(site):
    """End to end: web1's pending file is a directory; the run says so in one line on
    stderr, installs what the group needs, and leaves the lock free."""
    web1 = site.client("web1")
    state = web1.path / "var/lib/cq-portage"
    (state / "web.json" / "junk").mkdir(parents=True)
    done = site.cq_emerge(web1, "--group", "web")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if "damaged pending file" in line]
    assert len(lines) == 1 and lines[0].startswith(f"cq-emerge: damaged pending file "
                                                   f"{state / 'web.json'} (")
    assert "Traceback" not in done.stderr
    assert "www-servers/websrv-1" in web1.installed()
    assert json.loads((state / "web.json").read_text())["jobs"] is not None
    assert not holds_lock(state / "web.lock")
    fd = os.open(state / "web.lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free: no BlockingIOError
    os.close(fd)
