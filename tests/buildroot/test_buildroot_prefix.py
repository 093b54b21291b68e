"""Prefix roots with real emerge: what a build job runs, inside a group's root. The build's
dependencies go into the root's vdb with the group's USE, the binary package into the
host's PKGDIR, and the host's own installed system stays as it was."""

from __future__ import annotations

import json

import pytest
from buildroot_helpers import one_line

BUILD = ["emerge", "--color=n", "--nospinner", "--buildpkg", "--usepkg", "--oneshot",
         "--binpkg-respect-use=y", "=app-misc/brapp-1::cqtest"]
EMERGE_BOUND = 120  # seconds for one build of three tiny packages


def build_in(host, group: str, **env: str):
    done = host.cli("run", group, "--", *BUILD, env=env, timeout=EMERGE_BOUND)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def vdb(prefix) -> dict[str, frozenset[str]]:
    return {cpv: pkg.use for cpv, pkg in prefix.installed().items()}


def brapp_instances(host) -> list[frozenset[str]]:
    return sorted((i.use for i in host.sandbox.binary_instances()
                   if i.cpv == "app-misc/brapp-1"), key=sorted)


@pytest.fixture(scope="module")
def host_vdb_before(host):
    return vdb(host.build)


def test_a_prefix_root_is_made_on_the_fly_where_roots_live_without_config(host):
    assert not (host.roots / "pfoo").exists()
    done = host.cli("run", "pfoo", "--", "sh", "-c", 'echo "$PORTAGE_OVERRIDE_EPREFIX"')
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(host.roots / "pfoo")
    marker = json.loads((host.roots / "pfoo/.cq-build-root").read_text())
    assert (marker["kind"], marker["seed"]) == ("prefix", None)


def test_a_groups_build_deps_go_into_its_root_with_its_use(host, host_vdb_before):
    build_in(host, "pfoo", USE="foo")
    root = host.root_prefix("pfoo")
    assert vdb(root) == {"dev-libs/brlib-1": {"foo"}, "dev-util/brtool-1": frozenset(),
                         "app-misc/brapp-1": {"foo"}}
    # The build saw the root's DEPEND and BDEPEND, installed before it.
    assert root.built_against("app-misc/brapp-1") == {
        "-d dev-libs/brlib": "dev-libs/brlib-1", "-b dev-libs/brlib": "dev-libs/brlib-1",
        "-d dev-util/brtool": "dev-util/brtool-1", "-b dev-util/brtool": "dev-util/brtool-1"}
    assert vdb(host.build) == host_vdb_before  # the build host's own system is untouched
    assert frozenset({"foo"}) in brapp_instances(host)  # the binpkg is in the shared PKGDIR


def test_a_good_build_names_the_instance_it_made_last(host):
    done = build_in(host, "pfoo", USE="foo")
    build_id = host.root_prefix("pfoo").installed()["app-misc/brapp-1"].build_id
    [made] = [i for i in host.sandbox.binary_instances()
              if i.cpv == "app-misc/brapp-1" and i.build_id == build_id]
    assert made.use == {"foo"}
    assert done.stderr.splitlines()[-1] == \
        f"cq-build-root: built =app-misc/brapp-1-{build_id}::cqtest"
    failed = host.cli("run", "pfoo", "--", "sh", "-c", "exit 3")
    assert failed.returncode == 3 and "built" not in failed.stderr
    # A command that merges nothing (a build_command with --buildpkgonly, say) names no
    # instance: the root's BUILD_ID is an earlier merge's.
    idle = host.cli("run", "pfoo", "--", "true", "=app-misc/brapp-1::cqtest")
    assert idle.returncode == 0 and "built" not in idle.stderr


def test_a_second_group_with_other_use_has_its_own_root_state(host, host_vdb_before):
    build_in(host, "pfoo", USE="foo")  # the first group's state, whatever ran before
    before = vdb(host.root_prefix("pfoo"))
    build_in(host, "pnofoo", USE="-foo")
    assert vdb(host.root_prefix("pnofoo")) == {
        "dev-libs/brlib-1": frozenset(), "dev-util/brtool-1": frozenset(),
        "app-misc/brapp-1": frozenset()}
    assert vdb(host.root_prefix("pfoo")) == before
    assert vdb(host.build) == host_vdb_before
    assert brapp_instances(host) == [frozenset(), frozenset({"foo"})]


def test_cq_package_use_pins_a_dependencys_use_inside_the_root(host):
    # No USE in the environment: Portage ranks it above package.use (USE_ORDER env:pkg:...),
    # so a flag a job sets there cannot be pinned per package.
    build_in(host, "ppinned", CQ_PACKAGE_USE="dev-libs/brlib foo\n")
    root = host.root_prefix("ppinned")
    assert vdb(root)["dev-libs/brlib-1"] == {"foo"}
    assert vdb(root)["app-misc/brapp-1"] == frozenset()
    pins = root.path / "etc/portage/package.use/zz-cq-portage"
    assert pins.read_text() == "dev-libs/brlib foo\n"
    # The pins are the job's: the next job without them gets none.
    done = host.cli("run", "ppinned", "--", "sh", "-c",
                    'echo "${CQ_PACKAGE_USE-unset}"; cat ' + str(pins))
    assert done.stdout == "unset\n"


@pytest.mark.parametrize("atom, repo", [("=app-misc/brapp-9", "cqtest"),
                                        ("=app-misc/nothere-1", "cqtest"),
                                        ("=app-misc/brapp-1", "gentoo")])
def test_an_ebuild_the_host_does_not_have_is_one_line(host, atom, repo):
    done = host.cli("run", "pfoo", "--", *BUILD[:-1], f"{atom}::{repo}")
    assert done.returncode == 2
    assert one_line(done.stderr) == (f"cq-build-root: build host's ::{repo} has no {atom}; "
                                     "sync the build host")
    assert done.stdout == ""


def test_a_prefix_roots_config_is_the_hosts(host):
    root = host.roots / "pconf"
    assert host.cli("create", "pconf").returncode == 0  # kind: prefix, the host's
    host_conf = (host.build.path / "etc/portage/make.conf").read_text()
    conf = (root / "etc/portage/make.conf").read_text()
    assert 'ACCEPT_LICENSE="*"' in host_conf and 'ACCEPT_LICENSE="*"' in conf
    assert f'PKGDIR="{host.sandbox.pkgdir}"' in conf
    assert f'DISTDIR="{host.distdir}"' in conf
    assert f'PORTAGE_TMPDIR="{root}/var/tmp"' in conf
    assert f'PORT_LOGDIR="{root}/var/log/portage"' in conf
    assert (root / "etc/portage/make.profile").resolve() == host.sandbox.repository.profile_path
    # Portage inside the root reads what the host reads, but for the paths.
    done = host.cli("run", "pconf", "--", "portageq", "envvar", "PKGDIR", "DISTDIR",
                    "PORTAGE_TMPDIR", "ACCEPT_LICENSE", "EPREFIX")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(host.sandbox.pkgdir), str(host.distdir),
                                   f"{root}/var/tmp", "*", str(root)]
