"""`cq-emerge --pretend --json` says enough for another host to rebuild each plan: the same
build jobs and dedupe keys, the same install script, the plan's dependencies (what fleet
mode's admin host relies on, having no Portage of its own)."""

from __future__ import annotations

import pytest
from emerge_helpers import cq_plans, write_config

from cq_portage.emerge.install import install_script
from cq_portage.emerge.jobs import build_jobs
from cq_portage.emerge.plan_json import PlanFormatError, plan_from_json, plan_to_json

GROUPS = {
    "web": {"use": "ssl -X", "abi_x86": "64 32", "env": {"CFLAGS": "-O2 -pipe"},
            "package_use": ["app-misc/e2e -http2"], "packages": ["@world", "app-misc/e2e"]},
    "plain": {"packages": ["app-misc/pkguse", "app-misc/needs-lib2"]},
}


@pytest.fixture(scope="module")
def shown(world, tmp_path_factory):
    config = write_config(tmp_path_factory.mktemp("planjson"), GROUPS)
    return cq_plans(world.client, config, "web", "plain")


def test_plans_rebuilt_from_json_give_the_same_jobs_and_keys(shown):
    plans = [plan_from_json(doc) for doc in shown["plans"]]
    assert [job.to_json() for job in build_jobs(plans)] == shown["jobs"]
    for plan, doc in zip(plans, shown["plans"]):
        assert plan_to_json(plan) == doc  # nothing lost either way


def test_rebuilt_plan_keeps_profile_dependencies_and_install_script(shown):
    web = plan_from_json(next(p for p in shown["plans"] if p["group"] == "web"))
    assert web.group.use == ("ssl", "-X") and web.group.abi_x86 == ("64", "32")
    assert dict(web.group.env) == {"CFLAGS": "-O2 -pipe"}
    e2e = next(e for e in web.entries if e.cpv == "app-misc/e2e-1.0")
    assert e2e.package_use == ("-http2",) and "dev-libs/e2edep-1.0" in e2e.depends
    assert "abi_x86" in web.use_expand
    script = install_script(web)
    # "=cat/pf::repo" to build, "=cat/pf-BUILD_ID::repo" for the binary the plan took
    assert "USE='-http2 ssl -X'" in script and "=app-misc/e2e-1.0" in script


def test_a_plan_without_the_new_fields_or_with_other_keys_is_refused(shown):
    doc = shown["plans"][0]
    old = {k: v for k, v in doc.items() if k != "profile"}
    with pytest.raises(PlanFormatError, match="is cq-portage up to date there"):
        plan_from_json(old)
    build = next(i for i, p in enumerate(doc["packages"]) if p["key"])
    changed = {**doc, "packages": [dict(p) for p in doc["packages"]]}
    changed["packages"][build]["key"] = "something else"
    with pytest.raises(PlanFormatError, match="build key of .* differs"):
        plan_from_json(changed)

