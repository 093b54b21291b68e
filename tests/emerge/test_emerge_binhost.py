"""Packages delivered over HTTP, end to end: nginx (the distribution's) serves the build
host's PKGDIR; clients are sandbox prefixes with a PKGDIR of their own, binrepos.conf and
FEATURES=getbinpkg, like a site's hosts. Real munged, real cq-server, builds in build roots,
real emerge on the clients.

The nginx here answers If-Modified-Since as RFC 9110 says (`if_modified_since before`, as
Python's http.server and Apache do), which is where Portage's cached-TIMESTAMP-plus-5-seconds
request misses an index rewritten a moment after the cached one; the build host also sets
PORTAGE_BINHOST_TTL, so a client that keeps its cached index never asks at all. Either way,
only an install that fetches the index afresh sees a build that just ended."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import time
from pathlib import Path

import pytest
import yaml

from cq_portage.emerge.binhost import cached_index
from cq_portage.sandbox.binhost import Binhost, write_index
from cq_portage.sandbox.prefix import Prefix
from cq_portage.sandbox.signing import SigningKey, client_gnupg_home, stop_agent, trust
from cq_portage.sandbox.repository import Ebuild
from site_helpers import Site, edited_config, make_site

REPO = [
    Ebuild("dev-libs/liba-1", iuse=("ssl",)),
    Ebuild("dev-libs/libb-1", rdepend="dev-libs/liba"),
    Ebuild("app-misc/tool-1", iuse=("ssl",), rdepend="dev-libs/libb"),
    Ebuild("app-misc/late-1"),
    Ebuild("app-misc/solo-1"),
]
GROUPS = {
    "web": {"use": "ssl", "packages": ["app-misc/tool"]},
    "db": {"use": "-ssl", "packages": ["app-misc/tool"]},
    "solo": {"packages": ["app-misc/solo"]},
}
TTL = 3600  # seconds a client may keep the binhost's index without asking


@pytest.fixture
def site(tmp_path, munged):
    site = make_site(tmp_path, munged, repo=REPO, groups=GROUPS)
    site.build.write_make_conf(PORTAGE_BINHOST_TTL=str(TTL))
    write_index(site.build)
    binhost = Binhost(tmp_path / "binhost", site.sandbox.pkgdir).start()
    site.binhost = binhost
    yield site
    binhost.stop()
    site.server.stop()


def _client(site: Site, name: str, *world: str, signed: bool = False) -> Prefix:
    prefix = site.sandbox.add_prefix(name, pkgdir=site.sandbox.root / f"{name}-packages")
    site.binhost.configure_client(prefix, signed=signed)
    prefix.write_world(*world)
    return prefix


def _pretend(site: Site, prefix: Prefix, group: str) -> dict:
    done = site.cq_emerge(prefix, "--pretend", "--json", "--group", group)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _fetched(site: Site) -> list[str]:
    return [path for path, status, _ in site.binhost.requests()
            if status == 200 and path.endswith(".gpkg.tar")]


def test_a_client_joining_later_plans_the_binhosts_packages_as_binary(site):
    """web1 builds and installs; web2 joins with an empty PKGDIR: its plan takes every
    package from the binhost (0 builds, as `emerge -puDN --getbinpkg` would) and installs
    them over HTTP; db1 (other USE) still needs its own builds of what USE changes."""
    web1 = _client(site, "web1", "app-misc/tool")
    first = site.cq_emerge(web1, "--group", "web")
    assert first.returncode == 0, first.stdout + first.stderr
    assert web1.installed()["app-misc/tool-1"].use == {"ssl"}
    assert len(site.jobs_run()) == 3

    web2 = _client(site, "web2", "app-misc/tool")
    plan = _pretend(site, web2, "web")
    assert [p["action"] for p in plan["plans"][0]["packages"]] == ["binary"] * 3
    assert plan["jobs"] == []
    fetched_before = len(_fetched(site))
    second = site.cq_emerge(web2, "--group", "web")
    assert second.returncode == 0, second.stdout + second.stderr
    assert len(site.jobs_run()) == 3, "a package the binhost has was built again"
    assert set(web2.installed()) == {"dev-libs/liba-1", "dev-libs/libb-1", "app-misc/tool-1"}
    assert web2.installed()["dev-libs/liba-1"].use == {"ssl"}
    assert len(_fetched(site)) - fetched_before == 3  # each package over HTTP, once

    db1 = _client(site, "db1", "app-misc/tool")
    plan = _pretend(site, db1, "db")
    actions = {p["cpv"]: p["action"] for p in plan["plans"][0]["packages"]}
    assert actions == {"dev-libs/liba-1": "build", "dev-libs/libb-1": "binary",
                       "app-misc/tool-1": "build"}


def test_an_unreachable_binhost_is_one_line_and_builds_only_when_asked(site, tmp_path):
    web1 = _client(site, "web1", "app-misc/tool")
    site.binhost.stop()
    done = site.cq_emerge(web1, "--pretend", "--group", "web")
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"cq-emerge: binhost cqbinhost ({site.binhost.url}): ")
    assert "Connection refused" in lines[0] and "binhost.unreachable: build" in lines[0]
    assert done.stdout == ""
    assert site.jobs_run() == []

    fallback = edited_config(site.config, tmp_path / "fallback.yaml",
                             lambda c: c.update(binhost={"unreachable": "build"}))
    done = web1.run(*_cli(fallback), "--pretend", "--json", "--group", "web", check=False)
    assert done.returncode == 0, done.stderr
    assert [p["action"] for p in json.loads(done.stdout)["plans"][0]["packages"]] == \
        ["build"] * 3
    warning = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(warning) == 1 and "planning from the local PKGDIR only" in warning[0]


def test_install_right_after_each_build_fetches_the_fresh_index(site):
    """The race: the client plans (caching the index), then three builds end one after
    the other, each rewriting the index within seconds of the last, and each is
    installed at once. Every install must see the instance just built; the same emerge
    without cq-emerge's refresh does not."""
    web1 = _client(site, "web1", "app-misc/tool")
    started = time.monotonic()
    done = site.cq_emerge(web1, "--group", "web")
    assert done.returncode == 0, done.stdout + done.stderr
    assert set(web1.installed()) == {"dev-libs/liba-1", "dev-libs/libb-1", "app-misc/tool-1"}
    assert time.monotonic() - started < 300
    installs = [p for p, s, _ in site.binhost.requests() if p.endswith(".gpkg.tar")]
    assert len(installs) == 3
    # The plan's index request and one before each install, each answered in full: no
    # If-Modified-Since (304) and no TTL kept the copy cached at planning time.
    indexes = [s for p, s, _ in site.binhost.requests() if p.startswith("/Packages")]
    assert len(indexes) >= 4 and set(indexes) == {200}, indexes

    # The premise, with Portage alone: web1 holds a fresh copy of the index; a new build
    # lands; emerge with that cached copy does not see it, after dropping it it does.
    site.build.emerge("--buildpkgonly", "--oneshot", "app-misc/late")
    index = cached_index(web1.path, site.binhost.url)
    assert index.is_file()
    missed = web1.emerge("--usepkgonly", "--oneshot", "app-misc/late", check=False)
    assert missed.returncode != 0 and "app-misc/late" not in web1.installed()
    index.unlink()
    web1.emerge("--usepkgonly", "--oneshot", "app-misc/late")
    assert "app-misc/late-1" in web1.installed()


def _cli(config: Path) -> list[str]:
    import sys

    return [sys.executable, "-m", "cq_portage.emerge.cli", "--config", str(config)]


@pytest.fixture
def keys(tmp_path):
    """The build host's signing key and another one; their agents end with the test."""
    made = [SigningKey.create(tmp_path / "gnupg-build"),
            SigningKey.create(tmp_path / "gnupg-other", user_id="someone else <x@y.invalid>")]
    homes: list[Path] = []
    yield made, homes
    for home in [k.home for k in made] + homes:
        stop_agent(home)


def _signed_client(site: Site, name: str, key: SigningKey, homes: list[Path]) -> Prefix:
    client = _client(site, name, "app-misc/tool", signed=True)
    trust(client, key.public())
    homes.append(client_gnupg_home(client))
    return client


def _tamper(pkgdir: Path, victim: str, donor: str) -> None:
    """What an intruder on the binhost does: put another package's files into `victim`'s
    gpkg (its signatures and signed Manifest kept) and make the index's sizes and digests
    match the new file, so only the signature check can tell."""
    path = next(pkgdir.glob(f"{victim}/*.gpkg.tar"))
    donor_files = _gpkg_files(next(pkgdir.glob(f"{donor}/*.gpkg.tar")))
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for member, data in _gpkg_members(path):
            name = member.name.split("/", 1)[1]
            if name.startswith("image.tar") and not name.endswith(".sig"):
                data = donor_files[name]
                member.size = len(data)
            tar.addfile(member, io.BytesIO(data) if data is not None else None)
    path.write_bytes(out.getvalue())
    data = path.read_bytes()
    index = pkgdir / "Packages"
    stanzas = index.read_text().split("\n\n")
    for at, stanza in enumerate(stanzas):
        if f"PATH: {path.relative_to(pkgdir)}" in stanza:
            fields = {"MD5": hashlib.md5(data).hexdigest(), "SHA1": hashlib.sha1(data).hexdigest(),
                      "SIZE": str(len(data))}
            stanzas[at] = "\n".join(
                f"{line.split(':')[0]}: {fields[line.split(':')[0]]}"
                if line.split(":")[0] in fields else line for line in stanza.splitlines())
    text = "\n\n".join(stanzas)
    index.write_text(text)
    (pkgdir / "Packages.gz").write_bytes(gzip.compress(text.encode()))


def _gpkg_members(path: Path) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    with tarfile.open(path) as tar:
        return [(m, tar.extractfile(m).read() if m.isfile() else None) for m in tar.getmembers()]


def _gpkg_files(path: Path) -> dict[str, bytes]:
    return {m.name.split("/", 1)[1]: data for m, data in _gpkg_members(path) if data is not None}


def _refusals(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "refused:" in line]


def test_signed_packages_install_and_foreign_or_tampered_ones_are_refused(site, keys):
    """The build host signs (FEATURES=binpkg-signing); clients request signatures and trust
    its key as getuto would. A client trusting another key, and a package changed on the
    binhost, are each refused in one line naming the package, and nothing of it is
    installed."""
    (key, other), homes = keys
    key.sign_on(site.build)
    homes.append(client_gnupg_home(site.build))
    web1 = _signed_client(site, "web1", key, homes)
    done = site.cq_emerge(web1, "--group", "web")
    assert done.returncode == 0, done.stdout + done.stderr
    assert set(web1.installed()) == {"dev-libs/liba-1", "dev-libs/libb-1", "app-misc/tool-1"}
    for gpkg in site.sandbox.pkgdir.glob("*/*/*.gpkg.tar"):
        assert {"Manifest.sig", "image.tar.zst.sig"} <= set(_gpkg_files(gpkg)) or \
            any(n.endswith(".sig") for n in _gpkg_files(gpkg)), gpkg

    foreign = _signed_client(site, "web2", other, homes)
    done = site.cq_emerge(foreign, "--group", "web")
    assert done.returncode == 1
    refused = _refusals(done.stderr)
    assert len(refused) == 1, done.stderr
    assert refused[0].startswith("!!! dev-libs/liba-1: failed (refused: GnuPG verification "
                                 "failed: binpkg signed with at least one unknown key; log: ")
    assert foreign.installed() == {}
    assert len(site.jobs_run()) == 3  # the binhost's packages were not built again

    _tamper(site.sandbox.pkgdir, "dev-libs/liba", "dev-libs/libb")
    web3 = _signed_client(site, "web3", key, homes)
    done = site.cq_emerge(web3, "--group", "web")
    assert done.returncode == 1
    refused = _refusals(done.stderr)
    assert len(refused) == 1, done.stderr
    assert refused[0].startswith("!!! dev-libs/liba-1: failed (refused: ")
    assert "mismatch" in refused[0] or "GnuPG" in refused[0], refused[0]
    assert web3.installed() == {}
    assert len(site.jobs_run()) == 3


def test_binhost_url_in_the_config_serves_a_client_without_binrepos_conf(site, tmp_path):
    """binhost.url alone (no binrepos.conf, no FEATURES=getbinpkg on the client): cq-emerge
    exports PORTAGE_BINHOST and FEATURES=getbinpkg for the plan and the install script."""
    web1 = _client(site, "web1", "app-misc/tool")
    assert site.cq_emerge(web1, "--group", "web").returncode == 0
    plain = site.sandbox.add_prefix("plain", pkgdir=site.sandbox.root / "plain-packages")
    plain.write_world("app-misc/tool")
    path = edited_config(site.config, tmp_path / "with-url.yaml",
                         lambda c: c.update(binhost={"url": site.binhost.url}))
    plan = json.loads(plain.run(*_cli(path), "--pretend", "--json", "--group", "web").stdout)
    assert [p["action"] for p in plan["plans"][0]["packages"]] == ["binary"] * 3
    assert plan["plans"][0]["install_env"]["PORTAGE_BINHOST"] == site.binhost.url
    done = plain.run(*_cli(path), "--group", "web", check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert set(plain.installed()) == {"dev-libs/liba-1", "dev-libs/libb-1", "app-misc/tool-1"}
    assert len(site.jobs_run()) == 3


@pytest.mark.parametrize("binhost, problem", [
    ({"url": "build.example.org/packages"}, "'binhost.url' must be URLs"),
    ({"url": 3}, "'binhost.url' must be URLs"),
    ({"signatures": "yes"}, "'binhost.signatures' must be 'required' or 'as-configured'"),
    ({"unreachable": "ignore"}, "'binhost.unreachable' must be 'fail' or 'build'"),
    ({"urls": "https://x/"}, "unknown key"),
    ("https://x/", "'binhost' must be a mapping"),
])
def test_a_wrong_binhost_setting_is_one_line_naming_its_line(tmp_path, binhost, problem):
    from cq_portage.emerge.profile_yaml import load_config
    from cq_portage.yamlfile import ConfigError

    path = tmp_path / "cq-portage.yaml"
    path.write_text(yaml.safe_dump({"server": {"host": "b"}, "groups": {"g": {}},
                                    "binhost": binhost}))
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert len(raised.value.problems) == 1
    assert raised.value.problems[0].startswith(f"{path}:")
    assert problem in raised.value.problems[0], raised.value.problems


def test_binhost_settings_become_portages_variables(tmp_path):
    from cq_portage.emerge.profile_yaml import load_config

    path = tmp_path / "cq-portage.yaml"
    path.write_text(yaml.safe_dump({"server": {"host": "b"}, "groups": {"g": {}}, "binhost": {
        "url": "https://build.example.org/packages  https://mirror.example.org/p",
        "signatures": "required", "unreachable": "build"}}))
    settings = load_config(path).binhost
    assert settings.unreachable == "build"
    assert settings.environment({"FEATURES": "-news"}) == {
        "PORTAGE_BINHOST": "https://build.example.org/packages https://mirror.example.org/p",
        "FEATURES": "-news getbinpkg binpkg-request-signature"}
    path.write_text(yaml.safe_dump({"server": {"host": "b"}, "groups": {"g": {}}}))
    assert load_config(path).binhost.environment({}) == {}


def test_fleet_mode_works_over_the_binhost(site, tmp_path):
    """Fleet mode: the admin host gets each host's plan over SSH (each planned against the
    binhost), submits once, and installs on each host over SSH from the binhost."""
    from fleet_helpers import make_fleet

    fleet = make_fleet(site, tmp_path / "fleet")
    try:
        for name in ("h1", "h2"):
            _client(site, name)
            fleet.add_host(name, "dev-libs/liba")
        # Small on purpose: a fleet run on this 2-core machine nears pytest's 300 s limit.
        fleet.write_config({"fweb": {"use": "ssl", "hosts": ["h1"]},
                            "fdb": {"use": "-ssl", "hosts": ["h2"]}})
        # A host planning on a loaded machine is slow.
        edited_config(fleet.config, fleet.config, lambda c: c["ssh"].update(connect_timeout=60))
        code, summary = fleet.cq_emerge_json("--group", "fweb", "--group", "fdb")
        assert code == 0, json.dumps(summary["hosts"], indent=1)[-3000:]
        assert summary["builds"]["submitted"] == 2  # liba with ssl, and without
        for name, use in (("h1", {"ssl"}), ("h2", set())):
            installed = fleet.hosts[name].prefix.installed()
            assert set(installed) == {"dev-libs/liba-1"}
            assert installed["dev-libs/liba-1"].use == use, name
            assert fleet.hosts[name].prefix.pkgdir != site.sandbox.pkgdir  # no shared dir
        assert len(_fetched(site)) == 2  # one package for each host, over HTTP
    finally:
        fleet.stop()


def test_detach_installs_over_the_binhost_in_the_background(site):
    solo = _client(site, "solo1", "app-misc/solo")
    started = time.monotonic()
    detached = site.cq_emerge(solo, "--group", "solo", "--detach")
    assert detached.returncode == 0, detached.stderr
    assert "in the background" in detached.stdout
    while "app-misc/solo-1" not in solo.installed():
        assert time.monotonic() - started < 240, "the background run did not install"
        time.sleep(0.5)
    assert any(path.startswith("/app-misc/solo/") for path in _fetched(site))


def test_https_binhost_with_a_throwaway_ca(tmp_path, munged):
    """nginx over HTTPS with a certificate of a throwaway CA: a client that trusts the CA
    plans and installs from it; one that does not gets the one unreachable line, naming
    the certificate failure, and nothing is submitted."""
    site = make_site(tmp_path, munged, repo=REPO, groups=GROUPS)
    write_index(site.build)
    binhost = Binhost(tmp_path / "binhost", site.sandbox.pkgdir, tls=True).start()
    try:
        site.binhost = binhost
        trusting = _client(site, "solo1", "app-misc/solo")
        done = trusting.run(*_cli(site.config), "--group", "solo", env=binhost.client_env,
                            check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "app-misc/solo-1" in trusting.installed()
        assert any(p.startswith("/app-misc/solo/") for p in _fetched(site))

        stranger = _client(site, "solo2", "app-misc/solo")
        done = stranger.run(*_cli(site.config), "--pretend", "--group", "solo", check=False)
        assert done.returncode == 1
        lines = done.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith(
            f"cq-emerge: binhost cqbinhost ({binhost.url}): "), done.stderr
        assert "CERTIFICATE_VERIFY_FAILED" in lines[0]
        assert len(site.jobs_run()) == 1
    finally:
        binhost.stop()
        site.server.stop()
