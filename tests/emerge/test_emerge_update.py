"""cq-emerge end to end: real munged, a real cq-server whose jobs build in a build-host
prefix with real emerge, client prefixes that install with real emerge --usepkgonly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from cq_portage.sandbox.processes import running as alive
from emerge_helpers import cq_emerge
from site_helpers import Site, edited_config, make_site

@pytest.fixture(scope="module")
def site(tmp_path_factory, munged):
    site = make_site(tmp_path_factory.mktemp("site"), munged)
    yield site
    site.server.stop()




def instances(site: Site) -> Counter:
    return Counter((i.cpv, i.use) for i in site.sandbox.binary_instances())


def test_two_web_hosts_at_once_build_once_and_both_install(site):
    web1, web2 = site.client("web1"), site.client("web2")
    with site.server.client() as client:  # a busy build host: both plans meet a queue
        client.submit(["sleep", "3"])
    results = site.cq_emerge_at_once((web1, "web"), (web2, "web"))
    for name, result in results.items():
        assert result.returncode == 0, f"{name}: {result.stdout}\n{result.stderr}"
        assert "cq-emerge: www-servers/websrv-1: installed" in result.stdout
    for prefix in (web1, web2):
        installed = prefix.installed()
        assert installed["www-servers/websrv-1"].use == {"ssl", "http2"}
        assert "dev-libs/tls-1" in installed and "dev-libs/base-1" in installed
    assert all(n == 1 for n in instances(site).values()), instances(site)
    assert Counter(site.jobs_run()) == Counter(
        {"=dev-libs/base-1::cqtest": 1, "=dev-libs/tls-1::cqtest": 1,
         "=www-servers/websrv-1::cqtest": 1})
    # Progress, one line per change when not on a terminal: queued, building, built, installed
    lines = [line for line in results["web1"].stdout.splitlines()
             if line.startswith("cq-emerge: www-servers/websrv-1: ")]
    states = [line.split(": ")[2].split()[0] for line in lines]
    assert states[0] == "queued" and states[-2:] == ["installing", "installed"]


def test_second_run_does_nothing_and_says_so(site):
    before = site.jobs_run()
    again = site.cq_emerge(site.client("web1"), "--group", "web")
    assert again.returncode == 0 and "Nothing to merge: web already up to date." in again.stdout
    assert site.jobs_run() == before


def test_other_group_gets_its_own_instances_and_binaries_are_not_rebuilt(site):
    db1 = site.client("db1")
    done = site.cq_emerge(db1, "--group", "db", "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    states = {p["cpv"]: p["state"] for p in summary["packages"]}
    assert states == {"dev-libs/base-1": "installed", "dev-db/dbsrv-1": "installed"}
    installed = db1.installed()
    assert installed["dev-db/dbsrv-1"].use == {"X", "abi_x86_32", "abi_x86_64"}
    assert installed["dev-libs/base-1"].use == {"abi_x86_32", "abi_x86_64"}
    # a third web host needs no build at all: web's instances exist
    jobs = len(site.jobs_run())
    web3 = site.cq_emerge(site.client("web3"), "--group", "web")
    assert web3.returncode == 0 and len(site.jobs_run()) == jobs
    assert "www-servers/websrv-1: binary" in web3.stdout


def test_failed_build_skips_dependants_installs_the_rest(site):
    host = site.client("mixed1")
    result = site.cq_emerge(host, "--group", "mixed")
    assert result.returncode == 1
    installed = host.installed()
    assert "app-misc/indep-1" in installed
    assert "app-misc/broken-1" not in installed and "app-misc/needs-broken-1" not in installed
    errors = result.stderr.splitlines()
    broken = [e for e in errors if e.startswith("!!! app-misc/broken-1: failed")]
    assert broken and "exit status 1" in broken[0] and "--log" in broken[0]
    assert any(e.startswith("!!! app-misc/needs-broken-1: skipped (needs app-misc/broken-1)")
               for e in errors)
    job_id = broken[0].split("--log ")[1].rstrip(")")
    with site.server.client() as client:
        log, _, _ = client.log(int(job_id))
    assert b"fails to build, on purpose" in log


def test_detached_run_installs_in_the_background(site):
    host = site.client("later1")
    start = time.monotonic()
    result = site.cq_emerge(host, "--group", "later", "--detach")
    assert result.returncode == 0, result.stderr
    assert "in the background" in result.stdout
    deadline = time.monotonic() + 300
    while "app-misc/later-1" not in host.installed():
        assert time.monotonic() < deadline, "the background run did not install"
        time.sleep(0.5)
    assert time.monotonic() - start < 300
    assert Counter(site.jobs_run())["=app-misc/later-1::cqtest"] == 1


def test_unreachable_server_is_one_line_and_exit_1(site, tmp_path):
    bad = edited_config(site.config, tmp_path / "bad.yaml",
                        lambda c: c["server"].update(port=1, timeout=1))
    host = site.client("lonely")
    result = cq_emerge(host, "--config", str(bad), "--group", "unbuilt", "--quiet")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "cq-emerge: no answer from cq-server at 127.0.0.1:1 within 1s "
        "(is it running? is the address right?)"]
    assert host.installed() == {}


def test_failed_install_stops_the_group_and_is_reported(site):
    host = site.client("noinst1")
    result = site.cq_emerge(host, "--group", "noinst")
    assert result.returncode == 1
    assert "app-misc/noinst-1" not in host.installed()
    line = [e for e in result.stderr.splitlines() if e.startswith("!!! app-misc/noinst-1")]
    assert line and "install failed, exit status 1" in line[0]
    log_file = Path(line[0].rsplit(": ", 1)[1].rstrip(")"))
    assert "refuses to be installed, on purpose" in log_file.read_text()


def test_ask_no_submits_nothing_yes_goes_ahead(site):
    host = site.client("asked1")
    before = site.jobs_run()
    no = site.cq_emerge(host, "--group", "asked", "--ask", input="no\n")
    assert no.returncode == 130 and "Quitting." in no.stdout
    assert "Would you like to submit 1 build and install 1 package?" in no.stdout
    assert site.jobs_run() == before
    yes = site.cq_emerge(host, "--group", "asked", "--ask", input="yes\n")
    assert yes.returncode == 0, yes.stderr
    assert "app-misc/asked-1" in host.installed()


def test_client_away_picks_up_its_jobs_without_building_twice(site):
    host = site.client("away1")
    site.hold_queue(4)
    detached = site.cq_emerge(host, "--group", "away", "--detach")
    assert detached.returncode == 0, detached.stderr
    # The host goes away: its background waiter dies before the build is done.
    lock = host.path / "var/lib/cq-portage/away.lock"  # holds the background run's pid
    deadline = time.monotonic() + 30
    while not alive(background := int(lock.read_text().strip() or 0)):
        assert time.monotonic() < deadline, "no background run took the lock"
        time.sleep(0.05)
    os.kill(background, signal.SIGKILL)
    assert "app-misc/away-1" not in host.installed()
    back = site.cq_emerge(host, "--group", "away")  # back while the build is still queued
    assert back.returncode == 0, back.stderr
    assert "0 build job(s) submitted, 1 reused" in back.stdout
    assert "app-misc/away-1" in host.installed()
    assert Counter(site.jobs_run())["=app-misc/away-1::cqtest"] == 1
    again = site.cq_emerge(host, "--group", "away")
    assert "Nothing to merge" in again.stdout


def test_terminal_shows_one_updating_display(site):
    import pty

    host = site.client("shown1")
    main, child = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "cq_portage.emerge.cli", "--config",
                             str(site.config), "--group", "shown"], env=host.env(),
                            stdin=child, stdout=child, stderr=child)
    os.close(child)
    output = b""
    while True:
        try:
            data = os.read(main, 65536)
        except OSError:
            break
        if not data:
            break
        output += data
    assert proc.wait(300) == 0
    os.close(main)
    text = output.decode(errors="replace")
    assert "\033[1F" in text  # redrawn in place: cursor back up over the block
    assert "installed" in text and "cq-emerge: app-misc/shown-1:" not in text
