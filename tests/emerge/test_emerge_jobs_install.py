"""Build jobs (dedupe, order) and the install script, run for real: plan -> jobs run by real
emerge on the build prefix -> the plan turns binary -> the install script installs exactly
the instances with the planned USE into a client prefix."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from emerge_helpers import cq_plans, write_config

from cq_portage.emerge.jobs import build_jobs, dedupe_key
from cq_portage.emerge.plan import BUILD, Plan, PlanEntry
from cq_portage.emerge.profiles import GroupProfile


def test_identical_work_of_several_groups_is_one_job(world, tmp_path):
    target = {"packages": ["app-misc/pkguse"]}
    config = write_config(tmp_path, {
        "a": {"use": "ssl X", **target},          # X is not in IUSE: same build as b
        "b": {"use": "ssl", **target},
        "c": {"use": "-ssl", **target},
        "d": {"use": "ssl", "env": {"CFLAGS": "-O3"}, **target},  # same USE, other CFLAGS
        "e": {"use": "ssl", "env": {"CPU_FLAGS_X86": "aes"}, **target},  # not a USE_EXPAND here
    })
    result = cq_plans(world.client, config, "a", "b", "c", "d", "e")
    jobs = result["jobs"]
    assert [job["groups"] for job in jobs] == [["a", "b"], ["c"], ["d"], ["e"]]
    assert [job["use"] for job in jobs[:2]] == [["ssl"], []]
    assert all(job["argv"][-1] == "=app-misc/pkguse-1.0::cqtest" for job in jobs)
    assert len({job["key"] for job in jobs}) == 4
    # Flags travel as package.use lines: the group's, then a pin of every IUSE flag.
    assert jobs[2]["env"] == {"CFLAGS": "-O3", "CQ_PACKAGE_USE":
                              "*/* ssl\n=app-misc/pkguse-1.0::cqtest -sqlite ssl"}
    assert jobs[0]["argv"][:4] == ["cq-build-root", "run", "a", "--"]


def test_dedupe_key_is_stable_and_ignores_use_expand_variables():
    entry = PlanEntry(cpv="a/b-1", repo="r", slot="0", use=("x", "abi_x86_32"),
                      iuse=("x", "abi_x86_32"), action=BUILD, operation="new")
    command = ("emerge", "--buildpkg")
    one = dedupe_key(entry, {"USE": "x", "ABI_X86": "32", "CFLAGS": "-O2"}, command,
                     ("abi_x86",))
    two = dedupe_key(entry, {"CFLAGS": "-O2", "USE": "x -y", "CQ_PACKAGE_USE": "a/b x"},
                     command, ("abi_x86",))
    assert one == two == "a/b-1::r USE=abi_x86_32,x CFLAGS=-O2 CMD=emerge --buildpkg"
    against = PlanEntry(**{**entry.__dict__, "built_against": ("a/lib:0/2",)})
    assert dedupe_key(against, {}, command, ()) == \
        "a/b-1::r USE=abi_x86_32,x AGAINST=a/lib:0/2 CMD=emerge --buildpkg"


def _plan(group: str, *cpvs: str) -> Plan:
    return Plan(group=GroupProfile(group), entries=tuple(
        PlanEntry(cpv=c, repo="r", slot="0", use=(), iuse=(), action=BUILD, operation="new")
        for c in cpvs))


def test_job_order_keeps_every_plans_order():
    jobs = build_jobs([_plan("a", "x/lib-1", "x/app-1"),
                       _plan("b", "x/base-1", "x/lib-1", "x/tool-1")])
    order = [job.cpv for job in jobs]
    assert order.index("x/base-1") < order.index("x/lib-1") < order.index("x/app-1")
    assert order.index("x/lib-1") < order.index("x/tool-1")
    assert [job.groups for job in jobs if job.cpv == "x/lib-1"] == [("a", "b")]


def test_job_order_survives_plans_that_disagree():
    jobs = build_jobs([_plan("a", "x/one-1", "x/two-1"), _plan("b", "x/two-1", "x/one-1")])
    assert [job.cpv for job in jobs] == ["x/one-1", "x/two-1"]


def _run(argv: list[str], env: dict, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, **kw)


def _in_prefix(prefix, code: str) -> str:
    """Run Python with cq_portage in a prefix's environment (Portage is imported there)."""
    done = _run([sys.executable, "-c", textwrap.dedent(code)], prefix.env())
    assert done.returncode == 0, done.stderr
    return done.stdout


def _install_script(prefix, config) -> str:
    return _in_prefix(prefix, f"""
        from cq_portage.emerge.install import install_script
        from cq_portage.emerge.plan import Planner
        from cq_portage.emerge.profile_yaml import load_config
        from pathlib import Path
        group = load_config(Path({str(config)!r})).groups["g"]
        print(install_script(Planner().plan(group)), end="")
    """)


def test_jobs_built_for_real_then_install_script_installs_planned_use(world, tmp_path):
    client = world.sandbox.add_prefix("e2e-client")
    group = {"use": "ssl", "abi_x86": "64 32", "package_use": ["app-misc/e2e -http2"],
             "packages": ["app-misc/e2e"]}
    config = write_config(tmp_path, {"g": group})

    before = cq_plans(client, config, "g")
    planned = {p["cpv"]: p for p in before["plans"][0]["packages"]}
    assert set(planned) == {"app-misc/e2e-1.0", "dev-libs/e2edep-1.0"}
    assert [p["action"] for p in planned.values()] == ["build", "build"]
    assert planned["app-misc/e2e-1.0"]["use"] == ["abi_x86_32", "abi_x86_64", "ssl"]
    for job in before["jobs"]:  # the build host runs them as cq-server would
        done = _run(job["argv"], world.build.env(**job["env"]), cwd=tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr

    after = cq_plans(client, config, "g")
    assert [p["action"] for p in after["plans"][0]["packages"]] == ["binary", "binary"]
    assert after["jobs"] == []

    script = _install_script(client, config)
    assert "--binpkg-respect-use=y" in script and "set -eu" in script
    done = _run(["sh", "-c", script], client.env())
    assert done.returncode == 0, done.stdout + done.stderr
    installed = client.installed()
    for entry in after["plans"][0]["packages"]:
        assert installed[entry["cpv"]].use == frozenset(entry["use"])
        assert installed[entry["cpv"]].build_id == str(entry["build_id"])
    assert cq_plans(client, config, "g")["plans"][0]["packages"] == []


def test_build_jobs_pin_flags_against_the_build_hosts_own_config(world, tmp_path):
    """A build host whose make.conf sets other flags still builds the planned instance."""
    odd = world.sandbox.add_prefix("build-odd", USE="X -ssl", ABI_X86="64")
    client = world.sandbox.add_prefix("pin-client")
    config = write_config(tmp_path, {"g": {"use": "ssl -http2", "abi_x86": "64 32",
                                           "packages": ["app-misc/pinned"]}})
    before = cq_plans(client, config, "g")
    assert before["plans"][0]["packages"][0]["use"] == ["abi_x86_32", "abi_x86_64", "ssl"]
    [job] = before["jobs"]
    assert job["env"] == {"CQ_PACKAGE_USE": "*/* ssl -http2\n*/* ABI_X86: -* 64 32\n"
                          "=app-misc/pinned-1.0::cqtest -X abi_x86_32 abi_x86_64 -http2 ssl"}
    done = _run(job["argv"], odd.env(**job["env"]), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    after = cq_plans(client, config, "g")["plans"][0]["packages"]
    assert [p["action"] for p in after] == ["binary"]
    # Without the pins the same build host makes another instance (X from its make.conf).
    done = _run(job["argv"], odd.env(CQ_PACKAGE_USE="*/* ssl -http2"), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    built = [i.use for i in world.sandbox.binary_instances() if i.cpv == "app-misc/pinned-1.0"]
    assert frozenset(after[0]["use"]) in built
    assert frozenset({"X", "ssl", "abi_x86_64"}) in built


def test_install_script_picks_the_instance_of_its_group(world, tmp_path):
    """Two instances of twoinst-1.0 in PKGDIR: each group's script installs its own."""
    for name, group in {"gui": {"use": "gui"},
                        "nogui": {"use": "-gui", "abi_x86": "64 32"}}.items():
        client = world.sandbox.add_prefix(f"inst-{name}")
        config = write_config(tmp_path, {"g": {**group, "packages": ["app-misc/twoinst"]}},
                              name=f"{name}.yaml")
        plan = cq_plans(client, config, "g")["plans"][0]["packages"]
        assert [p["action"] for p in plan] == ["binary"]
        done = _run(["sh", "-c", _install_script(client, config)], client.env())
        assert done.returncode == 0, done.stdout + done.stderr
        installed = client.installed()["app-misc/twoinst-1.0"]
        assert installed.use == frozenset(plan[0]["use"])
        assert installed.build_id == str(plan[0]["build_id"])


def test_install_script_fails_when_no_instance_matches(world, tmp_path):
    client = world.sandbox.add_prefix("inst-missing")
    config = write_config(tmp_path, {"g": {"use": "X", "packages": ["app-misc/binmatch"]}})
    plan = cq_plans(client, config, "g")["plans"][0]["packages"]
    assert [p["action"] for p in plan] == ["build"]
    done = _run(["sh", "-c", _install_script(client, config)], client.env())
    assert done.returncode != 0
    assert "app-misc/binmatch-1.0" not in client.installed()
    # The real --usepkgonly refused the other group's instance for the reason we expect.
    assert "use flag configuration mismatch" in done.stdout + done.stderr


def test_install_script_quotes_safely():
    entry = PlanEntry(cpv="a/b-1", repo="r", slot="0", use=(), iuse=(), action=BUILD,
                      operation="new")
    plan = Plan(group=GroupProfile("g", env={"CFLAGS": "-O2 '$(rm -rf /)'"}), entries=(entry,))
    from cq_portage.emerge.install import install_script
    script = install_script(plan)
    done = subprocess.run(["sh", "-n", "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "CFLAGS='-O2 '\"'\"'$(rm -rf /)'\"'\"''" in script
