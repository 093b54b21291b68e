"""Fleet mode end to end: an admin host updates the hosts of groups over SSH. Every host is
a real sshd on 127.0.0.1 (own host key, port) serving its own sandbox prefix; builds go to a
real cq-server (real munged, real emerge in the build prefix); hosts install with real
emerge --usepkgonly, run there over SSH."""

from __future__ import annotations

import queue
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from fleet_helpers import Fleet, make_fleet
from site_helpers import edited_config, make_site

from cq_portage.emerge.remote import split_json
from cq_portage.sandbox.repository import Ebuild
from cq_portage.sandbox.server import hold_queue

EBUILDS = [
    Ebuild("fleet-libs/core-1", iuse=("ssl",)),
    Ebuild("fleet-apps/alpha-1", rdepend="fleet-libs/core"),
    Ebuild("fleet-apps/beta-1", rdepend="fleet-libs/core"),
    Ebuild("fleet-apps/gamma-1"),
    Ebuild("fleet-apps/delta-1"),
    Ebuild("fleet-apps/broken-1", dies=True),
    Ebuild("fleet-apps/needs-broken-1", rdepend="fleet-apps/broken"),
    Ebuild("fleet-apps/noinst-1", dies_on_merge=True),
    Ebuild("fleet-apps/unsatisfiable-1", rdepend="fleet-libs/missing"),
    Ebuild("fleet-apps/epsilon-1"),
    Ebuild("fleet-apps/zeta-1"),
    Ebuild("fleet-apps/eta-1"),
    Ebuild("fleet-apps/theta-1"),
    Ebuild("fleet-apps/iota-1"),
]
# Each host: its world; overlapping needs across hosts and across groups.
WORLDS = {"h1": ("fleet-apps/alpha", "fleet-apps/beta"),
          "h2": ("fleet-apps/beta", "fleet-apps/gamma"),
          "h3": ("fleet-apps/alpha", "fleet-apps/gamma"),
          "h4": ("fleet-apps/delta", "fleet-apps/needs-broken"),
          "h5": ("fleet-apps/noinst",),
          "h6": ("fleet-apps/unsatisfiable",),
          "h7": ("fleet-apps/epsilon",),
          "h8": ("fleet-apps/epsilon",),
          "h9": ("fleet-apps/zeta",),
          "h10": ("fleet-apps/eta", "fleet-apps/theta"),
          "h11": ("fleet-apps/iota",),
          "h12": ("fleet-apps/iota",),
          "down": ("fleet-apps/delta",),
          "stranger": ("fleet-apps/delta",)}
# What each of the first three must end with: cpv -> enabled USE.
EXPECTED = {
    "h1": {"fleet-libs/core-1": {"ssl"}, "fleet-apps/alpha-1": set(),
           "fleet-apps/beta-1": set()},
    "h2": {"fleet-libs/core-1": {"ssl"}, "fleet-apps/beta-1": set(),
           "fleet-apps/gamma-1": set()},
    "h3": {"fleet-libs/core-1": set(), "fleet-apps/alpha-1": set(),
           "fleet-apps/gamma-1": set()},
}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, munged):
    root = tmp_path_factory.mktemp("fleet")
    site = make_site(root, munged)
    site.sandbox.repository.add(*EBUILDS)
    fleet = make_fleet(site, root / "fleet")
    for name, world in WORLDS.items():
        fleet.add_host(name, *world, known=name != "stranger")
    fleet.write_config({
        "fweb": {"use": "ssl", "hosts": ["h1", "h2"]},
        "fdb": {"use": "-ssl", "hosts": ["h3"]},
        "fother": {"hosts": ["h4", "h5", "down", "stranger"]},
        "fbad": {"packages": ["fleet-apps/unsatisfiable"], "hosts": ["h6"]},
        "flate": {"hosts": ["h7", "h8"]},
        "fint": {"hosts": ["h9"]},
        "forder": {"hosts": ["h10"]},
        "ffreeze": {"hosts": ["h11", "h12"]},
    })
    fleet.hosts["down"].sshd.stop()  # a host that is off
    yield fleet
    fleet.stop()
    site.server.stop()


def fleet_builds(fleet: Fleet) -> Counter:
    return Counter(a for a in fleet.site.jobs_run() if a.startswith("=fleet-"))


def test_pretend_shows_each_hosts_plan_and_the_union_of_jobs_and_submits_nothing(fleet):
    done = fleet.cq_emerge("--group", "fweb", "--group", "fdb", "--pretend")
    assert done.returncode == 0, done.stdout + done.stderr
    h1, h2, h3 = (fleet.hosts[n].label for n in ("h1", "h2", "h3"))
    out = done.stdout
    for label, group in ((h1, "fweb"), (h2, "fweb"), (h3, "fdb")):
        assert f"These are the packages host {label} (group {group}) would merge" in out
    assert "Build jobs (5, duplicates merged)" in out
    assert f"[build] fleet-apps/beta-1::cqtest  for {h1}, {h2}" in out
    assert f"[build] fleet-apps/alpha-1::cqtest  for {h1}, {h3}" in out  # across groups
    assert out.count("[build] fleet-libs/core-1::cqtest") == 2  # two instances: ssl, -ssl
    code, doc = fleet.cq_emerge_json("--group", "fweb", "--group", "fdb", "--pretend")
    assert code == 0
    assert [(h["host"], h["group"], h["ok"]) for h in doc["hosts"]] == [
        (h1, "fweb", True), (h2, "fweb", True), (h3, "fdb", True)]
    plan = {p["cpv"]: p for p in doc["hosts"][0]["plan"]["packages"]}
    assert plan["fleet-apps/alpha-1"]["depends"] == ["fleet-libs/core-1"]
    assert sorted(len(job["hosts"]) for job in doc["jobs"]) == [1, 2, 2, 2, 2]
    assert fleet_builds(fleet) == Counter()  # nothing submitted
    assert all(fleet.hosts[n].prefix.installed() == {} for n in ("h1", "h2", "h3"))


def test_ask_no_submits_nothing(fleet):
    done = fleet.cq_emerge("--group", "fweb", "--ask", input="no\n")
    assert done.returncode == 130 and "Quitting." in done.stdout
    assert "Would you like to submit 4 builds and install 6 packages on 2 hosts?" \
        in done.stdout
    assert fleet_builds(fleet) == Counter()


def test_fleet_update_builds_each_instance_once_and_installs_every_host(fleet):
    code, summary = fleet.cq_emerge_json("--group", "fweb", "--group", "fdb")
    assert code == 0, summary
    assert summary["ok"] and summary["builds"]["submitted"] == 5
    # One build per unique instance, however many hosts needed it.
    assert fleet_builds(fleet) == Counter({"=fleet-libs/core-1::cqtest": 2,
                                           "=fleet-apps/alpha-1::cqtest": 1,
                                           "=fleet-apps/beta-1::cqtest": 1,
                                           "=fleet-apps/gamma-1::cqtest": 1})
    instances = Counter((i.cpv, i.use) for i in fleet.site.sandbox.binary_instances()
                        if i.cpv.startswith("fleet-"))
    assert set(instances.values()) == {1} and len(instances) == 5
    for name, expected in EXPECTED.items():
        installed = {cpv: set(p.use) for cpv, p in fleet.hosts[name].prefix.installed().items()}
        assert installed == expected, name
    hosts = {h["host"]: h for h in summary["hosts"]}
    h1 = hosts[fleet.hosts["h1"].label]
    assert h1["ok"] and {p["state"] for p in h1["packages"]} == {"installed"}
    assert h1["install_logs"] and all(log.endswith(".log") for log in h1["install_logs"])
    jobs = {j["cpv"]: j for j in summary["builds"]["jobs"] if j["cpv"] != "fleet-libs/core-1"}
    assert sorted(jobs["fleet-apps/beta-1"]["hosts"]) == sorted(
        [fleet.hosts["h1"].label, fleet.hosts["h2"].label])


def test_second_fleet_run_has_nothing_to_merge(fleet):
    before = fleet_builds(fleet)
    done = fleet.cq_emerge("--group", "fweb", "--group", "fdb")
    assert done.returncode == 0, done.stderr
    for name in ("h1", "h2", "h3"):
        assert f"Nothing to merge: host {fleet.hosts[name].label}" in done.stdout
    assert ">>> 3 of 3 host(s) fully updated" in done.stdout
    assert fleet_builds(fleet) == before


def test_unreachable_host_and_unknown_host_key_do_not_stop_the_others(fleet):
    h4, h5, h6, down, stranger = (fleet.hosts[n]
                                  for n in ("h4", "h5", "h6", "down", "stranger"))
    done = fleet.cq_emerge("--group", "fother", "--group", "fbad")
    assert done.returncode == 1
    errors = done.stderr.splitlines()
    assert any(e.startswith(f"!!! cq-emerge: host {down.label} (group fother): cannot reach "
                            f"{down.label} over SSH") for e in errors), done.stderr
    key = [e for e in errors if e.startswith(f"!!! cq-emerge: host {stranger.label}")]
    assert key and f"host key of {stranger.label} is not in {fleet.known_hosts}" in key[0]
    # A host whose plan fails says why, with emerge's own explanation.
    at = errors.index(f"!!! cq-emerge: host {h6.label} (group fbad): cannot plan group "
                      "fbad there")
    assert "fleet-libs/missing" in "\n".join(errors[at:at + 12])
    # The reachable host went ahead: a failed build skips its dependant, not the rest.
    installed = h4.prefix.installed()
    assert "fleet-apps/delta-1" in installed and "fleet-apps/needs-broken-1" not in installed, done.stdout + done.stderr
    assert any(e.startswith(f"!!! {h4.label}: fleet-apps/broken-1: failed (job ")
               for e in errors)
    assert any(e.startswith(f"!!! {h4.label}: fleet-apps/needs-broken-1: skipped "
                            "(needs fleet-apps/broken-1)") for e in errors)
    # A failed install stops that host only; its log is kept on the admin host.
    failed = [e for e in errors if e.startswith(f"!!! {h5.label}: fleet-apps/noinst-1: "
                                                "failed (install failed, exit status 1: ")]
    assert failed, done.stderr
    log_file = Path(failed[0].rsplit(": ", 1)[1].rstrip(")"))
    assert log_file.is_relative_to(fleet.admin.path)
    assert "refuses to be installed, on purpose" in log_file.read_text()
    assert log_file.with_suffix(".sh").read_text().startswith("#!/bin/sh")
    assert f">>> host {down.label} (group fother): not updated: cannot reach" in done.stdout
    assert ">>> 0 of 5 host(s) fully updated" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr
    assert down.prefix.installed() == {} and stranger.prefix.installed() == {}
    # The summary for scripts says the same.
    code, summary = fleet.cq_emerge_json("--group", "fother", "--group", "fbad")
    assert code == 1 and not summary["ok"]
    hosts = {h["host"]: h for h in summary["hosts"]}
    assert "cannot reach" in hosts[down.label]["error"]
    assert "host key" in hosts[stranger.label]["error"]
    assert hosts[h4.label]["error"] is None and not hosts[h4.label]["ok"]
    assert hosts[h6.label]["error"] == "cannot plan group fbad there"


def test_unreachable_server_is_one_line_and_exit_1(fleet, tmp_path):
    path = edited_config(fleet.config, tmp_path / "cq-portage.yaml",
                         lambda c: c["server"].update(port=1, timeout=1))
    done = fleet.cq_emerge("--config", str(path), "--group", "flate", "--quiet")
    assert done.returncode == 1
    assert done.stderr.splitlines() == [  # after the plans, before any install
        "cq-emerge: no answer from cq-server at 127.0.0.1:1 within 1s "
        "(is it running? is the address right?)"]
    assert fleet.hosts["h7"].prefix.installed() == {}


def test_host_going_down_after_its_plan_stops_only_its_installs(fleet):
    h7, h8 = fleet.hosts["h7"], fleet.hosts["h8"]
    with fleet.site.server.client() as client:  # the build waits until h7 is down
        blocker = hold_queue(client, 120)
    run = fleet.start_cq_emerge("--group", "flate")
    lines = []
    for line in run.stdout:  # progress lines: plans are in once a build is queued
        lines.append(line)
        if "fleet-apps/epsilon-1: queued" in line:
            break
    h7.sshd.stop()
    with fleet.site.server.client() as client:
        client.cancel(blocker)
    out, err = run.communicate(timeout=120)
    out = "".join(lines) + out
    assert run.returncode == 1
    assert "fleet-apps/epsilon-1" in h8.prefix.installed()
    assert "fleet-apps/epsilon-1" not in h7.prefix.installed()
    failed = [e for e in err.splitlines() if e.startswith(f"!!! {h7.label}: fleet-apps/")]
    assert failed and f"install failed, cannot reach {h7.label} over SSH" in failed[0], err
    assert f">>> host {h8.label} (group flate): 1 installed (updated)" in out
    assert f">>> host {h7.label} (group flate): 1 failed (NOT updated)" in out
    assert Counter(fleet.site.jobs_run())["=fleet-apps/epsilon-1::cqtest"] == 1


def test_interrupted_run_keeps_its_builds_for_the_next(fleet):
    h9 = fleet.hosts["h9"]
    with fleet.site.server.client() as client:
        blocker = hold_queue(client, 120)
    run = fleet.start_cq_emerge("--group", "fint")
    for line in run.stdout:  # the queue position comes while the admin waits for builds
        if "build: fleet-apps/zeta-1: queued (job" in line and "position" in line:
            break
    run.send_signal(signal.SIGINT)
    out, err = run.communicate(timeout=60)
    assert run.returncode == 1
    assert "cq-emerge: interrupted: installs under way were let finish" in err
    assert "Traceback" not in err
    with fleet.site.server.client() as client:
        client.cancel(blocker)
    again = fleet.cq_emerge("--group", "fint")
    assert again.returncode == 0, again.stderr
    assert ">>> builds: 1 built (0 build job(s) submitted, 1 reused)" in again.stdout
    assert "fleet-apps/zeta-1" in h9.prefix.installed()
    assert Counter(fleet.site.jobs_run())["=fleet-apps/zeta-1::cqtest"] == 1


def test_a_build_ending_out_of_turn_is_handled_at_once(fleet):
    """With several build hosts a later job may end first; here a later job is cancelled
    while an earlier one still waits behind a busy build host."""
    h10 = fleet.hosts["h10"]
    with fleet.site.server.client() as client:
        blocker = hold_queue(client, 120)
    run = fleet.start_cq_emerge("--group", "forder")
    lines: queue.Queue = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in run.stdout])
    reader.start()
    try:
        while "position" not in lines.get(timeout=60):
            pass
        with fleet.site.server.client() as client:
            ids = {j.args[-1]: j.id for j in client.list()}
            later = ids["=fleet-apps/theta-1::cqtest"]
            assert later > ids["=fleet-apps/eta-1::cqtest"]  # waited for after eta's
            client.cancel(later)
        deadline = time.monotonic() + 20  # theta fails while eta still waits
        while not (line := lines.get(timeout=20)).startswith(f"cq-emerge: {h10.label}: "
                                                              "fleet-apps/theta-1: failed"):
            assert "eta-1: built" not in line and time.monotonic() < deadline, line
    finally:
        with fleet.site.server.client() as client:
            client.cancel(blocker)
    assert run.wait(timeout=120) == 1
    reader.join()
    assert "fleet-apps/eta-1" in h10.prefix.installed()
    assert "fleet-apps/theta-1" not in h10.prefix.installed()


def test_a_host_that_freezes_is_given_up_and_the_others_finish(fleet):
    h11, h12 = fleet.hosts["h11"], fleet.hosts["h12"]
    with fleet.site.server.client() as client:
        blocker = hold_queue(client, 120)
    run = fleet.start_cq_emerge("--group", "ffreeze")
    try:
        for line in run.stdout:
            if "build: fleet-apps/iota-1: queued" in line:
                break
        h11.sshd.freeze()  # TCP stays up, nothing answers: run() alone would wait forever
    finally:
        with fleet.site.server.client() as client:
            client.cancel(blocker)
    out, err = run.communicate(timeout=120)
    h11.sshd.thaw()
    assert run.returncode == 1
    assert "fleet-apps/iota-1" in h12.prefix.installed()
    failed = [e for e in err.splitlines() if e.startswith(f"!!! {h11.label}: fleet-apps/iota")]
    # Frozen before its install began: the session is never opened, and the failure says so.
    assert failed and "no SSH answer within 5 s" in failed[0], err
    assert "Traceback" not in err and "paramiko" not in err and "Exception" not in err, err
    assert f">>> host {h12.label} (group ffreeze): 1 installed (updated)" in out


def test_a_missing_remote_cq_emerge_is_reported_per_host(fleet, tmp_path):
    path = edited_config(fleet.config, tmp_path / "cq-portage.yaml",
                         lambda c: c["ssh"].update(command=["no-such-cq-emerge"]))
    done = fleet.cq_emerge("--config", str(path), "--group", "fweb", "--pretend")
    assert done.returncode == 1
    for name in ("h1", "h2"):
        assert (f"!!! cq-emerge: host {fleet.hosts[name].label} (group fweb): "
                "no-such-cq-emerge not found there (exit 127; set ssh.command in the config)"
                in done.stderr.splitlines()), done.stderr


def test_a_host_whose_config_differs_is_warned_about(fleet, tmp_path):
    # The admin's copy drifted; the hosts' did not.
    path = edited_config(fleet.config, tmp_path / "cq-portage.yaml",
                         lambda c: c["groups"]["fweb"].update(use="ssl X"))
    done = fleet.cq_emerge("--config", str(path), "--group", "fweb", "--pretend")
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [
        f"cq-emerge: warning: host {fleet.hosts[name].label}: its config gives group fweb "
        f"another use than {path} (it plans with its own)" for name in ("h1", "h2")]


def test_json_found_among_messages():
    text = 'cq-emerge: a warning\n{\n  "plans": [{"a": "{"}]\n}\nlater words\n'
    assert split_json(text) == ({"plans": [{"a": "{"}]}, "cq-emerge: a warning\n\nlater words\n")
    assert split_json("no json here\n") == (None, "no json here\n")
