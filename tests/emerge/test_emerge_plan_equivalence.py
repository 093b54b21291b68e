"""The plan equals what real `emerge -puDN --usepkg --binpkg-respect-use=y` prints with the
same flags: cpv, enabled USE, order, and which entries are binaries (which instance).
Rejected binaries are covered in test_emerge_binary_decision.py.

Each scenario first checks that real emerge shows what the scenario is about (so that an
empty plan can never pass by agreeing with an empty baseline), then compares cq-emerge."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field

import pytest

from emerge_helpers import cq_plans, emerge_plan, write_config


@dataclass
class Scenario:
    id: str
    group: dict  # the group as written in cq-portage.yaml
    env: dict  # the same flags, exported for real emerge
    targets: list[str]
    shows: str  # what real emerge must show, checked on its output: "cpv" or "cpv +flag"
    package_use: list[str] = field(default_factory=list)


SCENARIOS = [
    Scenario("version-bump", {}, {}, ["app-misc/bump"], "app-misc/bump-2.0"),
    Scenario("new-use-flag", {}, {}, ["app-misc/newflag"], "app-misc/newflag-1.0 +b"),
    Scenario("use-changed-by-group", {"use": "ssl -http2"}, {"USE": "ssl -http2"},
             ["app-misc/useflags"], "app-misc/useflags-1.0 +ssl"),
    Scenario("flag-removed-from-iuse", {}, {}, ["app-misc/dropflag"], "app-misc/dropflag-1.0"),
    Scenario("abi-x86-64-32", {"abi_x86": "64 32"}, {"ABI_X86": "64 32"}, ["dev-libs/multi"],
             "dev-libs/multi-1.0 +abi_x86_32"),
    Scenario("two-slots", {}, {}, ["dev-lang/slotted:2.7", "dev-lang/slotted:3"],
             "dev-lang/slotted-3.11"),
    Scenario("dependency-by-group-use", {"use": ["extra"], "abi_x86": ["64", "32"]},
             {"USE": "extra", "ABI_X86": "64 32"}, ["app-misc/optdep"],
             "dev-libs/extradep-1.0 +abi_x86_32"),
    Scenario("blocker", {}, {}, ["app-misc/newname"], "app-misc/newname-1.0"),
    Scenario("package-use", {"package_use": ["app-misc/pkguse sqlite"]}, {},
             ["app-misc/pkguse"], "app-misc/pkguse-1.0 +sqlite",
             package_use=["app-misc/pkguse sqlite"]),
    Scenario("world", {"use": "ssl extra"}, {"USE": "ssl extra"}, ["@world"],
             "app-misc/newname-1.0"),
]


def _shows(lines, shows: str) -> bool:
    cpv, *flags = shows.split()
    return any(line.cpv == cpv and all(f[1:] in line.use for f in flags) for line in lines)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.id)
def test_plan_equals_real_emerge(world, tmp_path, scenario: Scenario):
    expected = emerge_plan(world.client, scenario.targets, scenario.env, scenario.package_use,
                           usepkg=True)
    assert _shows(expected, scenario.shows), f"scenario set up wrong: {expected}"

    config = write_config(tmp_path, {"g": {**scenario.group, "packages": scenario.targets}})
    plan = cq_plans(world.client, config, "g")["plans"][0]["packages"]

    assert [(p["cpv"], frozenset(p["use"]), p["action"], p["build_id"]) for p in plan] == \
        [(line.cpv, line.use, "binary" if line.kind == "binary" else "build", line.build_id)
         for line in expected]


def test_already_up_to_date(world, tmp_path):
    assert "app-misc/stable-1.0" in world.client.installed()
    assert emerge_plan(world.client, ["app-misc/stable"]) == []
    config = write_config(tmp_path, {"g": {"packages": ["app-misc/stable"]}})
    assert cq_plans(world.client, config, "g")["plans"][0]["packages"] == []


def test_abi_x86_64_alone_is_up_to_date(world, tmp_path):
    """The other half of "64 vs 64 32": with the installed ABI nothing is to do."""
    assert emerge_plan(world.client, ["dev-libs/multi"], {"ABI_X86": "64"}) == []
    config = write_config(tmp_path, {"g": {"abi_x86": "64", "packages": ["dev-libs/multi"]}})
    assert cq_plans(world.client, config, "g")["plans"][0]["packages"] == []


def test_blocker_uninstalls_like_emerge(world, tmp_path):
    done = world.client.emerge("--pretend", "--update", "--deep", "--newuse",
                               "app-misc/newname", check=False)
    assert "[uninstall" in done.stdout and "app-misc/oldname-1.0" in done.stdout, done.stdout
    config = write_config(tmp_path, {"g": {"packages": ["app-misc/newname"]}})
    assert cq_plans(world.client, config, "g")["plans"][0]["uninstalls"] == \
        ["app-misc/oldname-1.0"]


def _actions_against_emerge_k(world, tmp_path, groups: dict[str, tuple[dict, dict]], target):
    """Plans of several groups in one cq-emerge run, with real emerge -k per group."""
    config = write_config(tmp_path, {name: {**group, "packages": [target]}
                                     for name, (group, _) in groups.items()})
    plans = {p["group"]: p["packages"] for p in cq_plans(world.client, config, *groups)["plans"]}
    found = {}
    for name, (_, env) in groups.items():
        with_binaries = emerge_plan(world.client, [target], env, usepkg=True)
        ours = plans[name]
        assert [(p["cpv"], frozenset(p["use"])) for p in ours] == \
            [(line.cpv, line.use) for line in with_binaries]
        assert [(p["action"], p["build_id"]) for p in ours] == \
            [("binary" if line.kind == "binary" else "build", line.build_id)
             for line in with_binaries]
        found[name] = ours
    return found


def test_binary_matches_one_group_not_another(world, tmp_path):
    plans = _actions_against_emerge_k(world, tmp_path, {
        "web": ({"use": "ssl"}, {"USE": "ssl"}),
        "db": ({"use": "-ssl X"}, {"USE": "-ssl X"}),
    }, "app-misc/binmatch")
    assert {name: [p["action"] for p in plan] for name, plan in plans.items()} == \
        {"web": ["binary"], "db": ["build"]}


def test_binary_with_other_iuse_is_not_a_match(world, tmp_path):
    """An instance built before the ebuild gained IUSE "b": same enabled USE, other IUSE."""
    [instance] = [i for i in world.sandbox.binary_instances()
                  if i.cpv == "app-misc/iusechange-1.0"]
    assert instance.use == frozenset({"a"})
    plans = _actions_against_emerge_k(world, tmp_path, {"a": ({"use": "a"}, {"USE": "a"})},
                                      "app-misc/iusechange")
    assert [(p["use"], p["action"]) for p in plans["a"]] == [(["a"], "build")]


def test_two_instances_of_one_version(world, tmp_path):
    instances = [i for i in world.sandbox.binary_instances() if i.cpv == "app-misc/twoinst-1.0"]
    assert len(instances) == 2 and len({i.build_id for i in instances}) == 2
    plans = _actions_against_emerge_k(world, tmp_path, {
        "gui": ({"use": "gui"}, {"USE": "gui"}),
        "nogui": ({"use": "-gui", "abi_x86": "64 32"}, {"USE": "-gui", "ABI_X86": "64 32"}),
        "gui32": ({"use": "gui", "abi_x86": "64 32"}, {"USE": "gui", "ABI_X86": "64 32"}),
    }, "app-misc/twoinst")
    assert [p["action"] for p in plans["gui"] + plans["nogui"]] == ["binary", "binary"]
    assert plans["gui32"][0]["action"] == "build"


def test_root_is_honoured(world, tmp_path):
    """ROOT moves the installed-package database (and world) elsewhere, as for emerge."""
    eroot = tmp_path / "root" / str(world.client.path).lstrip("/")
    (eroot / "var/db/pkg").mkdir(parents=True)
    (eroot / "var/lib/portage").mkdir(parents=True)
    (eroot / "var/lib/portage/world").write_text("app-misc/optdep\napp-misc/bump\n")
    env = {"ROOT": str(tmp_path / "root"), "USE": "extra"}
    expected = emerge_plan(world.client, ["@world"], env)
    assert _shows(expected, "dev-libs/extradep-1.0") and _shows(expected, "app-misc/bump-2.0")

    config = write_config(tmp_path, {"g": {"use": "extra"}})
    plan = cq_plans(world.client, config, "g", env={"ROOT": str(tmp_path / "root")})
    packages = plan["plans"][0]["packages"]
    assert [(p["cpv"], frozenset(p["use"])) for p in packages] == \
        [(line.cpv, line.use) for line in expected]
    assert {p["operation"] for p in packages} == {"new"}  # nothing installed in ROOT


def test_portage_configroot_is_honoured(world, tmp_path):
    """PORTAGE_CONFIGROOT points at another etc/portage (here: one with a package.use)."""
    root = tmp_path / "configroot"
    shutil.copytree(world.client.config_dir, root / "etc/portage", symlinks=True)
    (root / "etc/portage/package.use").write_text("app-misc/pkguse ssl\n")
    env = {"PORTAGE_CONFIGROOT": str(root)}
    expected = emerge_plan(world.client, ["app-misc/pkguse"], env)
    assert _shows(expected, "app-misc/pkguse-1.0 +ssl")
    config = write_config(tmp_path, {"g": {"packages": ["app-misc/pkguse"]}})
    packages = cq_plans(world.client, config, "g", env=env)["plans"][0]["packages"]
    assert [(p["cpv"], frozenset(p["use"])) for p in packages] == \
        [(line.cpv, line.use) for line in expected]


def test_emerge_default_opts_are_honoured(world, tmp_path):
    """EMERGE_DEFAULT_OPTS from make.conf shape the plan as they shape emerge."""
    prefix = world.sandbox.add_prefix("default-opts",
                                      EMERGE_DEFAULT_OPTS="--exclude=app-misc/stable")
    prefix.write_world("app-misc/stable", "app-misc/optdep")
    expected = emerge_plan(prefix, ["@world"], {"USE": "extra"})
    assert _shows(expected, "app-misc/optdep-1.0 +extra")
    assert not _shows(expected, "app-misc/stable-1.0")
    config = write_config(tmp_path, {"g": {"use": "extra"}})
    packages = cq_plans(prefix, config, "g")["plans"][0]["packages"]
    assert [(p["cpv"], frozenset(p["use"])) for p in packages] == \
        [(line.cpv, line.use) for line in expected]
