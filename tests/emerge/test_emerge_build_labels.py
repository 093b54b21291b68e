"""A group's build_labels send its builds to the cq-server build hosts that have them."""

from __future__ import annotations

import yaml

from cq_portage.emerge.jobs import build_jobs
from cq_portage.emerge.plan import BUILD, Plan, PlanEntry
from cq_portage.emerge.profiles import GroupProfile
from cq_portage.sandbox.repository import Ebuild
from site_helpers import Site, make_site


def _plan(group: GroupProfile) -> Plan:
    return Plan(group=group, entries=(PlanEntry(cpv="x/lib-1", repo="r", slot="0", use=(),
                                                iuse=(), action=BUILD, operation="new"),))


def test_the_same_build_for_two_architectures_is_two_jobs():
    jobs = build_jobs([_plan(GroupProfile("a", build_labels=("amd64",))),
                       _plan(GroupProfile("b", build_labels=("arm64",))),
                       _plan(GroupProfile("c", build_labels=("amd64",)))])
    assert [(job.groups, job.labels) for job in jobs] == [(("a", "c"), ("amd64",)),
                                                          (("b",), ("arm64",))]
    assert jobs[0].key.endswith(" LABELS=amd64")


def test_build_labels_pick_the_build_host_and_a_missing_one_is_one_line(tmp_path, munged):
    site = make_site(tmp_path, munged, {"build_hosts": {"x86": {"labels": ["amd64"]}}})
    site.sandbox.repository.add(Ebuild("app-misc/labelled-1"), Ebuild("app-misc/nowhere-1"))
    config = yaml.safe_load(site.config.read_text())
    config["groups"] = {
        "x86": {"packages": ["app-misc/labelled"], "build_labels": ["amd64"]},
        "sparc": {"packages": ["app-misc/nowhere"], "build_labels": "sparc"}}
    site = Site(site.sandbox, site.build, site.server, tmp_path / "labelled.yaml")
    site.config.write_text(yaml.safe_dump(config))
    try:
        host = site.client("host")
        done = site.cq_emerge(host, "-g", "x86")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "app-misc/labelled-1" in host.installed()
        with site.server.client() as client:
            [job] = [j for j in client.list() if j.args[-1] == "=app-misc/labelled-1::cqtest"]
        assert list(job.labels) == ["amd64"] and job.host == "x86"
        refused = site.cq_emerge(host, "-g", "sparc")
        assert refused.returncode == 1
        problem = [line for line in refused.stderr.splitlines() if "sparc" in line]
        assert problem and "no build host has the labels sparc" in problem[0], refused.stderr
        assert "Traceback" not in refused.stderr
        assert "app-misc/nowhere-1" not in host.installed()
    finally:
        site.server.stop()
