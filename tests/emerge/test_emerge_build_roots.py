"""Builds on a real dependency graph, end to end: build-time deps (DEPEND, BDEPEND),
slot-operator sub-slot rebuilds, multilib USE deps, group-USE-conditional build deps and two
groups needing one dependency with different USE. Real munged, a real cq-server whose jobs
build in per-group build roots (prefixes here) inside the build host, clients that install
with real emerge --usepkgonly.

Every scenario checks: each client run exits 0; each client has the right versions and USE;
the binary packages record the right slot-operator deps; the build host's own installed
system is unchanged; a second run has nothing to do."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from cq_portage.sandbox.prefix import InstalledPackage, Prefix
from cq_portage.sandbox.repository import MULTILIB_IUSE, Ebuild
from site_helpers import Site, make_site

ABI = "abi_x86_32(-)?,abi_x86_64(-)?"


@dataclass
class Scenario:
    old: list[Ebuild]  # the repository the hosts were installed from
    new: list[Ebuild]  # added by a sync afterwards
    groups: dict  # cq-portage.yaml groups
    build_host: list[tuple[str, dict]]  # what the build host installed for itself: atom, env
    clients: dict[str, tuple[str, list[str], dict]]  # name: group, installed atoms, env


def _site(tmp_path: Path, munged, scenario: Scenario) -> tuple[Site, dict[str, Prefix]]:
    site = make_site(tmp_path, munged, repo=scenario.old, groups=scenario.groups)
    for atom, env in scenario.build_host:
        site.build.emerge("--oneshot", atom, env=env)
    clients = {}
    for name, (_, atoms, env) in scenario.clients.items():
        client = clients[name] = site.client(name)
        if atoms:
            client.emerge("--oneshot", *atoms, env=env)
        client.write_world(*(atoms or ["app-misc/consumer"]))
    site.sandbox.repository.add(*scenario.new)
    return site, clients


def _update_all(site: Site, clients: dict[str, Prefix], scenario: Scenario,
                check: Callable[[dict[str, Prefix]], None]) -> dict[str, str]:
    """Each client updates itself; then the checks; then a second run finds nothing.
    Returns what each first run printed."""
    build_before = site.build.installed()
    printed = {}
    for name, client in clients.items():
        group = scenario.clients[name][0]
        done = site.cq_emerge(client, "--group", group)
        assert done.returncode == 0, f"{name}:\n{done.stdout}\n{done.stderr}"
        printed[name] = done.stdout
    check(clients)
    assert site.build.installed() == build_before, "the build host's own system changed"
    jobs = len(site.jobs_run())
    for name, client in clients.items():
        group = scenario.clients[name][0]
        again = site.cq_emerge(client, "--pretend", "--json", "--group", group)
        assert again.returncode == 0, again.stderr
        assert json.loads(again.stdout)["plans"][0]["packages"] == [], f"{name}: {again.stdout}"
        assert site.cq_emerge(client, "--group", group).returncode == 0
    assert len(site.jobs_run()) == jobs, "a second run built something"
    return printed


def _binaries(site: Site, cpv: str) -> list[InstalledPackage]:
    return [i for i in site.sandbox.binary_instances() if i.cpv == cpv]


@pytest.fixture
def site_for(tmp_path, munged):
    sites = []

    def make(scenario: Scenario):
        site, clients = _site(tmp_path, munged, scenario)
        sites.append(site)
        return site, clients

    yield make
    for site in sites:
        site.server.stop()


def test_library_bump_rebuilds_its_consumers_against_the_new_sub_slot(site_for):
    scenario = Scenario(
        old=[Ebuild("dev-libs/libz-1", slot="0/1"),
             Ebuild("app-misc/consumer-1", depend="dev-libs/libz:=", rdepend="dev-libs/libz:=",
                    records=("dev-libs/libz",))],
        new=[Ebuild("dev-libs/libz-2", slot="0/2")],
        groups={"g1": {}},
        build_host=[("dev-libs/libz", {})],
        clients={"c1": ("g1", ["app-misc/consumer"], {})})
    site, clients = site_for(scenario)
    assert clients["c1"].installed()["app-misc/consumer-1"].rdepend == "dev-libs/libz:0/1="

    def check(clients):
        installed = clients["c1"].installed()
        assert "dev-libs/libz-2" in installed and "dev-libs/libz-1" not in installed
        assert installed["app-misc/consumer-1"].rdepend == "dev-libs/libz:0/2="
        assert clients["c1"].built_against("app-misc/consumer-1")["-d dev-libs/libz"] == \
            "dev-libs/libz-2"
        assert [b.rdepend for b in _binaries(site, "app-misc/consumer-1")] == \
            ["dev-libs/libz:0/2="]
        # The install named the instances the jobs made, by build id, in one emerge.
        scripts = sorted((clients["c1"].path / "var/lib/cq-portage/logs").glob("install-*.sh"))
        ids = {cpv: installed[cpv].build_id for cpv in ("dev-libs/libz-2", "app-misc/consumer-1")}
        assert all(ids.values()), ids
        assert [s for s in scripts if all(f"={cpv}-{i}::cqtest" in s.read_text()
                                          for cpv, i in ids.items())], scripts

    site.hold_queue(5)  # both builds wait a while: the rebuild shows what it waits for
    printed = _update_all(site, clients, scenario, check)
    assert re.search(r"app-misc/consumer-1: queued \(job \d+, after \d+\)", printed["c1"]), \
        printed["c1"]


def test_multilib_use_dependency_is_built_for_both_abis(site_for):
    scenario = Scenario(
        old=[Ebuild("dev-libs/libz-1", iuse=MULTILIB_IUSE),
             Ebuild("app-misc/consumer-1", iuse=MULTILIB_IUSE, depend=f"dev-libs/libz[{ABI}]",
                    rdepend=f"dev-libs/libz[{ABI}]", records=("dev-libs/libz",))],
        new=[],
        groups={"db": {"abi_x86": "64 32"}},
        build_host=[("dev-libs/libz", {"ABI_X86": "64"})],
        clients={"db1": ("db", [], {})})
    site, clients = site_for(scenario)

    def check(clients):
        installed = clients["db1"].installed()
        both = {"abi_x86_32", "abi_x86_64"}
        assert installed["dev-libs/libz-1"].use == both
        assert installed["app-misc/consumer-1"].use == both
        assert clients["db1"].built_against("app-misc/consumer-1")["-d dev-libs/libz"] == \
            "dev-libs/libz-1"
        assert site.build.installed()["dev-libs/libz-1"].use == {"abi_x86_64"}

    _update_all(site, clients, scenario, check)


def test_group_use_pulls_new_build_dependencies_through_depend_and_bdepend(site_for):
    scenario = Scenario(
        old=[Ebuild("app-misc/fetcher-1", iuse=("ssl",), depend="ssl? ( dev-libs/sslib )",
                    rdepend="ssl? ( dev-libs/sslib )", records=("dev-libs/sslib",)),
             Ebuild("app-misc/docs-1", iuse=("doc",), bdepend="doc? ( dev-util/docgen )",
                    records=("dev-util/docgen",))],
        new=[Ebuild("dev-libs/sslib-1"), Ebuild("dev-util/docgen-1")],
        groups={"web": {"use": "ssl doc"}},
        build_host=[("app-misc/fetcher", {})],
        clients={"web1": ("web", ["app-misc/fetcher", "app-misc/docs"], {})})
    site, clients = site_for(scenario)

    def check(clients):
        web1 = clients["web1"]
        installed = web1.installed()
        assert installed["app-misc/fetcher-1"].use == {"ssl"}
        assert installed["app-misc/docs-1"].use == {"doc"}
        assert "dev-libs/sslib-1" in installed
        assert web1.built_against("app-misc/fetcher-1")["-d dev-libs/sslib"] == \
            "dev-libs/sslib-1"
        assert web1.built_against("app-misc/docs-1")["-b dev-util/docgen"] == \
            "dev-util/docgen-1"
        assert set(site.build.installed()) == {"app-misc/fetcher-1"}

    _update_all(site, clients, scenario, check)


def test_two_groups_need_one_build_dependency_with_different_use(site_for):
    scenario = Scenario(
        old=[Ebuild("dev-libs/libz-1", iuse=("foo",)),
             Ebuild("app-misc/consumer-1", iuse=("foo",), depend="dev-libs/libz[foo?]",
                    rdepend="dev-libs/libz[foo?]", records=("dev-libs/libz",))],
        new=[],
        groups={"a": {"use": "foo"}, "b": {"use": "-foo"}},
        build_host=[("dev-libs/libz", {"USE": "-foo"})],
        clients={"a1": ("a", [], {}), "b1": ("b", [], {})})
    site, clients = site_for(scenario)

    def check(clients):
        for name, use in (("a1", {"foo"}), ("b1", set())):
            installed = clients[name].installed()
            assert installed["dev-libs/libz-1"].use == use, name
            assert installed["app-misc/consumer-1"].use == use, name
        assert {frozenset(b.use) for b in _binaries(site, "app-misc/consumer-1")} == \
            {frozenset({"foo"}), frozenset()}

    _update_all(site, clients, scenario, check)


def test_two_groups_needing_one_instance_share_its_build(site_for):
    """Groups whose profiles differ only where these packages do not care: one build each,
    whichever group's root it ran in, and both groups install it."""
    scenario = Scenario(
        old=[Ebuild("dev-libs/libz-1", slot="0/1", iuse=("foo",)),
             Ebuild("app-misc/consumer-1", iuse=("foo",), depend="dev-libs/libz:=[foo?]",
                    rdepend="dev-libs/libz:=[foo?]", records=("dev-libs/libz",))],
        new=[],
        groups={"a": {"use": "foo"}, "a2": {"use": "foo ssl"}},
        build_host=[],
        clients={"a1": ("a", [], {}), "a21": ("a2", [], {})})
    site, clients = site_for(scenario)
    site.hold_queue(4)  # both runs meet a busy build host: their submissions merge
    runs = site.cq_emerge_at_once(*((clients[name], group) for name, (group, _, _)
                                    in scenario.clients.items()))
    for name, done in runs.items():
        assert done.returncode == 0, f"{name}:\n{done.stdout}\n{done.stderr}"
        installed = clients[name].installed()
        assert installed["app-misc/consumer-1"].use == {"foo"}
        assert installed["app-misc/consumer-1"].rdepend == "dev-libs/libz:0/1=[foo]"
    assert Counter(site.jobs_run()) == {"=dev-libs/libz-1::cqtest": 1,
                                        "=app-misc/consumer-1::cqtest": 1}
    assert len(_binaries(site, "app-misc/consumer-1")) == 1


def test_a_build_host_on_an_older_tree_is_one_line_to_sync_it(site_for):
    """The client planned a version the build host's tree does not have (yet): the build
    fails early, and cq-emerge shows the build root's one line, not emerge's wall of text."""
    scenario = Scenario(old=[Ebuild("app-misc/fresh-1")], new=[], groups={"g": {}},
                        build_host=[], clients={"f1": ("g", [], {})})
    site, clients = site_for(scenario)
    clients["f1"].write_world("app-misc/fresh")
    site.hold_queue(6)  # the build waits: meanwhile the "build host's tree" loses it
    run = subprocess.Popen([sys.executable, "-m", "cq_portage.emerge.cli", "--config",
                            str(site.config), "--group", "g"], env=clients["f1"].env(),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not site.jobs_run() and time.monotonic() < deadline:
        time.sleep(0.2)
    site.sandbox.repository.remove("app-misc/fresh-1")
    stdout, stderr = run.communicate(timeout=120)
    assert run.returncode == 1, stdout + stderr
    [line] = [e for e in stderr.splitlines() if e.startswith("!!! app-misc/fresh-1: failed")]
    assert "build host's ::cqtest has no =app-misc/fresh-1; sync the build host" in line
    assert "Traceback" not in stderr
