"""The plan's binary/build decision equals real `emerge -puDN --usepkg --binpkg-respect-use=y`
where Portage must REJECT a binary package: stale sub-slot, --usepkg-exclude/include (make.conf
and repos.conf), user patches, a changed SLOT, unaccepted KEYWORDS, changed deps, and a binary
whose ebuild is gone.

Every binary package and installed package here is made by real emerge (--buildpkg in a
client, --buildpkgonly in builder prefixes sharing the sandbox's PKGDIR), so built
slot-operator deps, BUILD_IDs, KEYWORDS and USER_PATCHES are what Portage itself records.
Each scenario first checks that real emerge shows what the scenario is about (so an empty
plan cannot pass by agreeing with an empty baseline), then compares cq-emerge --pretend --json
entry by entry: cpv, enabled USE, binary or build, and the binary's BUILD_ID.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from cq_portage.sandbox.prefix import Prefix, Sandbox
from cq_portage.sandbox.repository import Ebuild
from emerge_helpers import (EmergeLine, cq_plans, emerge_plan, parse_emerge, real_emerge,
                             write_config)

# A patch that creates a file, so it applies to the sandbox's empty ${S}.
PATCH = "--- /dev/null\n+++ b/patched.txt\n@@ -0,0 +1 @@\n+patched by the site\n"


class PatchableEbuild(Ebuild):
    """An ebuild with its own src_prepare: Portage skips the source phases (and so
    eapply_user) of a package with no sources that defines none of them."""

    def text(self) -> str:
        return super().text() + "\nsrc_prepare() {\n\tdefault\n}\n"

    def cache_entry(self, ebuild_md5: str) -> str:
        return super().cache_entry(ebuild_md5).replace("DEFINED_PHASES=install",
                                                        "DEFINED_PHASES=install prepare")


# What the repository holds before the binary packages are made ...
BEFORE = [
    Ebuild("dev-libs/libz-1", slot="0/1"),
    Ebuild("app-misc/consumer-1.0", depend="dev-libs/libz:=", rdepend="dev-libs/libz:="),
    Ebuild("dev-libs/libbz-1", slot="0/1"),
    Ebuild("dev-libs/libbz-2", slot="0/2"),
    Ebuild("app-misc/consumer-both-1.0", depend="dev-libs/libbz:=", rdepend="dev-libs/libbz:="),
    Ebuild("app-misc/exclme-1.0"),
    Ebuild("app-misc/exclrepo-1.0"),
    Ebuild("app-misc/inc1-1.0"),
    Ebuild("app-misc/inc2-1.0"),
    PatchableEbuild("app-misc/patched-1.0"),
    PatchableEbuild("app-misc/patched-same-1.0"),
    Ebuild("app-misc/slotchg-1.0", slot="0"),
    Ebuild("app-misc/subchg-1.0", slot="0/1"),
    Ebuild("app-misc/kw-1.0", keywords="~amd64"),
    Ebuild("app-misc/chdeps-1.0"),
    Ebuild("app-misc/gone-1.0"),
    Ebuild("app-misc/gone-old-0.9"),
    Ebuild("app-misc/gone-old-1.0"),
]
# ... and what it became afterwards (a sync), with no revision bumps.
AFTER = [
    Ebuild("dev-libs/libz-2", slot="0/2"),
    Ebuild("app-misc/slotchg-1.0", slot="1"),
    Ebuild("app-misc/subchg-1.0", slot="0/2"),
    Ebuild("app-misc/kw-1.0", keywords="amd64"),
    Ebuild("dev-libs/chdep-1.0"),
    Ebuild("app-misc/chdeps-1.0", rdepend="dev-libs/chdep"),
]
REMOVED = ["app-misc/gone-1.0", "app-misc/gone-old-1.0"]
# Built by the plain builder before the sync (no patches, stable keywords, default USE).
BUILT = ["app-misc/exclme", "app-misc/exclrepo", "app-misc/inc1", "app-misc/inc2",
         "app-misc/patched", "app-misc/slotchg", "app-misc/subchg", "app-misc/chdeps",
         "app-misc/gone", "=app-misc/gone-old-1.0"]


@dataclass
class Site:
    sandbox: Sandbox
    client: Prefix  # libz/consumer and libbz/consumer-both installed, built against 0/1
    variants: dict[str, Prefix]  # clients that differ by one setting, nothing installed


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Site:
    sandbox = Sandbox(tmp_path_factory.mktemp("binary-decision")).create()
    sandbox.repository.add(*BEFORE)
    client = sandbox.add_prefix("client")
    builder = sandbox.add_prefix("builder")
    # consumer-both's binary built against libbz 0/2 first, so the stale one made next has
    # the higher BUILD_ID: Portage must skip it, not just take the newest instance.
    builder.emerge("--buildpkg", "--oneshot", "=dev-libs/libbz-2", "app-misc/consumer-both")
    client.emerge("--buildpkg", "--oneshot", "dev-libs/libz", "app-misc/consumer",
                  "=dev-libs/libbz-1", "app-misc/consumer-both")
    client.write_world("app-misc/consumer", "app-misc/consumer-both")
    builder.emerge("--buildpkgonly", "--oneshot", *BUILT)
    patcher = sandbox.add_prefix("patch-builder")
    _add_patch(patcher, "app-misc/patched-same")
    patcher.emerge("--buildpkgonly", "--oneshot", "app-misc/patched-same")
    testing = sandbox.add_prefix("testing-builder", ACCEPT_KEYWORDS="~amd64")
    testing.emerge("--buildpkgonly", "--oneshot", "app-misc/kw")

    sandbox.repository.add(*AFTER)
    for cpv in REMOVED:
        sandbox.repository.remove(cpv)

    variants = {
        "exclude": sandbox.add_prefix("exclude", EMERGE_DEFAULT_OPTS=(
            "--usepkg-exclude=app-misc/exclme")),
        "include": sandbox.add_prefix("include", EMERGE_DEFAULT_OPTS=(
            "--usepkg-include=app-misc/inc1")),
        "repo-exclude": sandbox.add_prefix("repo-exclude"),
        "patched": sandbox.add_prefix("patched"),
        "no-changed-deps": sandbox.add_prefix("no-changed-deps", EMERGE_DEFAULT_OPTS=(
            "--binpkg-changed-deps=n")),
        "changed-slot": sandbox.add_prefix("changed-slot", EMERGE_DEFAULT_OPTS=(
            "--changed-slot")),
    }
    with (variants["repo-exclude"].config_dir / "repos.conf/sandbox.conf").open("a") as conf:
        conf.write("usepkg-exclude = app-misc/exclrepo\n")
    for cpn in ("app-misc/patched", "app-misc/patched-same"):
        _add_patch(variants["patched"], cpn)
    return Site(sandbox=sandbox, client=client, variants=variants)


def _add_patch(prefix: Prefix, cpn: str) -> None:
    folder = prefix.config_dir / "patches" / cpn
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "site.patch").write_text(PATCH)


def _instances(sandbox: Sandbox, cpv: str) -> list[dict[str, str]]:
    """PKGDIR's index entries of one version, as Portage wrote them."""
    text = (sandbox.pkgdir / "Packages").read_text()
    found = []
    for stanza in text.split("\n\n")[1:]:
        fields = dict(line.split(": ", 1) for line in stanza.splitlines() if ": " in line)
        if fields.get("CPV") == cpv:
            found.append(fields)
    return found


def _kinds(lines: list[EmergeLine]) -> list[tuple[str, str]]:
    return [(line.kind, line.cpv) for line in lines]


def _assert_plan_equals(prefix: Prefix, tmp_path: Path, targets: list[str],
                        expected: list[EmergeLine], group: dict | None = None) -> list[dict]:
    """cq-emerge's plan for one group equals real emerge's merge list, entry by entry."""
    return _assert_plans_equal(prefix, tmp_path, {"g": (group or {}, targets, expected)})["g"]


def _assert_plans_equal(prefix: Prefix, tmp_path: Path,
                        groups: dict[str, tuple[dict, list[str], list[EmergeLine]]],
                        options: tuple[str, ...] = ()) -> dict[str, list[dict]]:
    """Several groups planned in one cq-emerge run (resolved in forked children that share
    one PKGDIR index; with --jobs=1 one after the other in one process, sharing Portage's
    frozen repository caches), each equal to its own real emerge."""
    config = write_config(tmp_path, {name: {**group, "packages": targets}
                                     for name, (group, targets, _) in groups.items()})
    plans = {p["group"]: p["packages"]
             for p in cq_plans(prefix, config, *groups, options=options)["plans"]}
    for name, (_, _, expected) in groups.items():
        assert [(p["cpv"], frozenset(p["use"]), p["action"], p["build_id"])
                for p in plans[name]] == \
            [(line.cpv, line.use, "binary" if line.kind == "binary" else "build",
              line.build_id) for line in expected], name
    return plans


def _same_plan(prefix: Prefix, tmp_path: Path, targets: list[str],
               kinds: list[tuple[str, str]]) -> list[dict]:
    """Real emerge merges `kinds` for `targets`, and cq-emerge's plan equals its own."""
    expected = emerge_plan(prefix, targets, usepkg=True)
    assert _kinds(expected) == kinds, targets
    return _assert_plan_equals(prefix, tmp_path, targets, expected)


def _build_id(instance: dict[str, str]) -> int:
    return int(instance["BUILD_ID"])


def test_stale_sub_slot_binary_is_rebuilt(site, tmp_path):
    """libz 0/1 -> 0/2: consumer's only binary records libz:0/1=, so Portage rebuilds it."""
    [stale] = _instances(site.sandbox, "app-misc/consumer-1.0")
    assert "dev-libs/libz:0/1=" in stale["RDEPEND"], stale
    done = real_emerge(site.client, "--update", "--deep", "--newuse", "--usepkg",
                       "--binpkg-respect-use=y", "app-misc/consumer")
    assert re.search(r"^\[ebuild\s+rR\s*\]\s+app-misc/consumer-1.0", done.stdout, re.M), \
        done.stdout
    ours = _same_plan(site.client, tmp_path, ["app-misc/consumer"],
                      [("ebuild", "dev-libs/libz-2"), ("ebuild", "app-misc/consumer-1.0")])
    assert ours[1]["operation"] == "reinstall"
    assert ours[1]["built_against"] == ["dev-libs/libz:0/2"]


def test_fresh_sub_slot_binary_is_taken_over_a_stale_newer_one(site, tmp_path):
    """consumer-both has a binary built against libbz 0/2 and a later one against 0/1."""
    instances = {i["RDEPEND"]: _build_id(i)
                 for i in _instances(site.sandbox, "app-misc/consumer-both-1.0")}
    assert set(instances) == {"dev-libs/libbz:0/1=", "dev-libs/libbz:0/2="}, instances
    fresh, stale = instances["dev-libs/libbz:0/2="], instances["dev-libs/libbz:0/1="]
    assert stale > fresh
    expected = emerge_plan(site.client, ["app-misc/consumer-both"], usepkg=True)
    assert _kinds(expected) == [("binary", "dev-libs/libbz-2"),
                                ("binary", "app-misc/consumer-both-1.0")]
    assert expected[1].build_id == fresh

    _assert_plan_equals(site.client, tmp_path, ["app-misc/consumer-both"], expected)


def test_whole_world_with_both_sub_slot_cases(site, tmp_path):
    """Both libraries at once, as @world: one group's plan mixes rebuilds and binaries."""
    expected = emerge_plan(site.client, ["@world"], usepkg=True)
    assert sorted(_kinds(expected)) == sorted([
        ("ebuild", "dev-libs/libz-2"), ("ebuild", "app-misc/consumer-1.0"),
        ("binary", "dev-libs/libbz-2"), ("binary", "app-misc/consumer-both-1.0")])
    _assert_plan_equals(site.client, tmp_path, ["@world"], expected)


@pytest.mark.parametrize("variant, targets, kinds", [
    # make.conf EMERGE_DEFAULT_OPTS="--usepkg-exclude=app-misc/exclme"
    pytest.param("exclude", ["app-misc/exclme", "app-misc/exclrepo"],
                 [("ebuild", "app-misc/exclme-1.0"), ("binary", "app-misc/exclrepo-1.0")],
                 id="make.conf-usepkg-exclude"),
    # repos.conf [cqtest] usepkg-exclude = app-misc/exclrepo
    pytest.param("repo-exclude", ["app-misc/exclme", "app-misc/exclrepo"],
                 [("binary", "app-misc/exclme-1.0"), ("ebuild", "app-misc/exclrepo-1.0")],
                 id="repos.conf-usepkg-exclude"),
    # make.conf EMERGE_DEFAULT_OPTS="--usepkg-include=app-misc/inc1": only inc1 may be binary
    pytest.param("include", ["app-misc/inc1", "app-misc/inc2"],
                 [("binary", "app-misc/inc1-1.0"), ("ebuild", "app-misc/inc2-1.0")],
                 id="make.conf-usepkg-include"),
])
def test_usepkg_exclude_and_include(site, tmp_path, variant, targets, kinds):
    prefix = site.variants[variant]
    assert _kinds(emerge_plan(site.client, targets, usepkg=True)) == \
        [("binary", k[1]) for k in kinds]  # without the setting both are binaries
    _same_plan(prefix, tmp_path, targets, kinds)


def test_user_patches(site, tmp_path):
    """A client with /etc/portage/patches for both packages: the binary built without the
    patch is rejected, the one built with the same patch is taken; a client without
    patches does the opposite."""
    [plain] = _instances(site.sandbox, "app-misc/patched-1.0")
    [with_patch] = _instances(site.sandbox, "app-misc/patched-same-1.0")
    assert not plain.get("USER_PATCHES") and with_patch.get("USER_PATCHES"), \
        (plain, with_patch)
    targets = ["app-misc/patched", "app-misc/patched-same"]
    _same_plan(site.variants["patched"], tmp_path, targets,
               [("ebuild", "app-misc/patched-1.0"), ("binary", "app-misc/patched-same-1.0")])
    _same_plan(site.client, tmp_path, targets,
               [("binary", "app-misc/patched-1.0"), ("ebuild", "app-misc/patched-same-1.0")])


def test_keywords_not_accepted(site, tmp_path):
    """kw-1.0 was built while it was ~amd64 and is amd64 now: its binary records ~amd64,
    which the client does not accept; a group that accepts ~amd64 takes it."""
    [instance] = _instances(site.sandbox, "app-misc/kw-1.0")
    assert instance["KEYWORDS"] == "~amd64"
    targets = ["app-misc/kw"]
    stable = emerge_plan(site.client, targets, usepkg=True)
    assert _kinds(stable) == [("ebuild", "app-misc/kw-1.0")]
    testing = {"ACCEPT_KEYWORDS": "~amd64"}
    with_testing = emerge_plan(site.client, targets, testing, usepkg=True)
    assert _kinds(with_testing) == [("binary", "app-misc/kw-1.0")]

    _assert_plans_equal(site.client, tmp_path, {"stable": ({}, targets, stable),
                                                "testing": ({"env": testing}, targets,
                                                            with_testing)})
    # In one process, visibility must not leak from one group to the next, either way.
    _assert_plans_equal(site.client, tmp_path, {
        "stable": ({}, targets, stable), "testing": ({"env": testing}, targets, with_testing),
        "stable-again": ({}, targets, stable)}, options=("--jobs=1",))


def test_changed_deps(site, tmp_path):
    """chdeps-1.0 gained RDEPEND=dev-libs/chdep without a revision bump: --usepkg's default
    --binpkg-changed-deps=auto rejects the binary; =n in make.conf takes it."""
    [instance] = _instances(site.sandbox, "app-misc/chdeps-1.0")
    assert not instance.get("RDEPEND")
    _same_plan(site.client, tmp_path, ["app-misc/chdeps"],
               [("ebuild", "dev-libs/chdep-1.0"), ("ebuild", "app-misc/chdeps-1.0")])
    _same_plan(site.variants["no-changed-deps"], tmp_path, ["app-misc/chdeps"],
               [("binary", "app-misc/chdeps-1.0")])


@pytest.mark.parametrize("cpv, old_slot, new_slot", [
    ("app-misc/slotchg-1.0", "0", "1"),  # the SLOT itself
    ("app-misc/subchg-1.0", "0/1", "0/2"),  # the sub-slot only
], ids=["slot", "sub-slot"])
def test_binary_with_another_slot(site, tmp_path, cpv, old_slot, new_slot):
    """The ebuild's SLOT changed without a revision bump after the binary was built.
    Portage (3.0.83) takes such a binary for a new install unless the atom asks for the new
    slot or --changed-slot is given; the plan must do the same in all three cases."""
    [instance] = _instances(site.sandbox, cpv)
    assert instance.get("SLOT", "0") == old_slot
    assert site.sandbox.repository.ebuilds[cpv].slot == new_slot
    cpn = cpv.rsplit("-", 1)[0]

    _same_plan(site.client, tmp_path, [cpn], [("binary", cpv)])
    _same_plan(site.client, tmp_path, [f"{cpn}:{new_slot}"], [("ebuild", cpv)])
    # make.conf: EMERGE_DEFAULT_OPTS="--changed-slot"
    _same_plan(site.variants["changed-slot"], tmp_path, [cpn], [("ebuild", cpv)])


def test_binary_without_ebuild(site, tmp_path):
    """Versions removed from the repository after their binaries were built. With --usepkg
    Portage takes a binary that has no ebuild when nothing else matches (gone-1.0), but
    prefers an older ebuild to a newer binary whose ebuild is gone (gone-old: 0.9 is built,
    1.0's binary ignored) unless the atom names that version."""
    assert not any(cpv in site.sandbox.repository.ebuilds for cpv in REMOVED)
    assert all(_instances(site.sandbox, cpv) for cpv in REMOVED)
    for targets, kinds in (
            (["app-misc/gone"], [("binary", "app-misc/gone-1.0")]),
            (["app-misc/gone-old"], [("ebuild", "app-misc/gone-old-0.9")]),
            (["=app-misc/gone-old-1.0"], [("binary", "app-misc/gone-old-1.0")])):
        _same_plan(site.client, tmp_path, targets, kinds)


@pytest.mark.parametrize("variant, targets, group", [
    pytest.param("client", ["app-misc/consumer-both"], {}, id="fresh-sub-slot"),
    pytest.param("patched", ["app-misc/patched-same"], {}, id="user-patches"),
    pytest.param("client", ["app-misc/kw"], {"env": {"ACCEPT_KEYWORDS": "~amd64"}},
                 id="testing-keywords"),
    pytest.param("no-changed-deps", ["app-misc/chdeps"], {}, id="changed-deps-n"),
    pytest.param("client", ["app-misc/slotchg"], {}, id="old-slot"),
    pytest.param("client", ["app-misc/gone"], {}, id="no-ebuild"),
])
def test_planned_binaries_install_as_planned(site, tmp_path, variant, targets, group):
    """Where the plan is all binaries, the install's `emerge --usepkgonly` given each entry
    with its BUILD_ID (=cpv-BUILD_ID::repo) resolves to exactly the plan's instances."""
    prefix = site.client if variant == "client" else site.variants[variant]
    env = group.get("env", {})
    expected = emerge_plan(prefix, targets, env, usepkg=True)
    assert expected and {line.kind for line in expected} == {"binary"}, expected
    plan = _assert_plan_equals(prefix, tmp_path, targets, expected, group)

    atoms = [f"={p['cpv']}-{p['build_id']}::{p['repo']}" for p in plan]
    done = real_emerge(prefix, "--usepkgonly", "--oneshot", "--binpkg-respect-use=y", *atoms,
                       env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert [(line.kind, line.cpv, line.build_id) for line in parse_emerge(done.stdout)] == \
        [("binary", p["cpv"], p["build_id"]) for p in plan]
