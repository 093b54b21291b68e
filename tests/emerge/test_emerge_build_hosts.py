"""Real emerge build jobs, made by cq-emerge, spread by one cq-server over two build hosts:
this machine (`local`) and a real sshd on 127.0.0.1 (`far`) whose sessions act on the same
build prefix (its config and PKGDIR) but keep their own build roots, as a second build host
sharing PKGDIR over NFS would."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator

import pytest

from cq_portage.buildroot.roots import ROOTS_ENV
from cq_portage.cq.job import JobInfo, JobState
from cq_portage.emerge.install_log import EMERGING
from cq_portage.sandbox.prefix import Prefix
from cq_portage.sandbox.repository import Ebuild
from cq_portage.sandbox.sshd import Sshd
from fleet_helpers import login_env
from site_helpers import Site, make_site

LIB = "dev-libs/common-1"
APPS = ("app-misc/left-1", "app-misc/right-1")
# Both apps need the library to build and to run: their jobs wait for its job (`after`).
REPO = [Ebuild(LIB), *(Ebuild(app, depend="dev-libs/common", rdepend="dev-libs/common")
                       for app in APPS)]
GROUPS = {"apps": {"packages": ["app-misc/left", "app-misc/right"]}}
BOUND_SECONDS = 300  # the whole run: plan, three builds, installs; a hang fails the test


@pytest.fixture
def ssh_build_host(tmp_path) -> Iterator[Callable[[Prefix], dict]]:
    """make_site's build_config: build hosts `local` and `far`, an sshd serving the build
    prefix with its own build roots folder; the sshd is stopped afterwards."""
    started: list[Sshd] = []

    def serve(build: Prefix) -> dict:
        env = login_env(build, **{ROOTS_ENV: str(tmp_path / "far-roots")})
        sshd = Sshd(tmp_path / "far", set_env=env).start()
        started.append(sshd)
        far = {"url": sshd.url, "key_file": str(sshd.client_key),
               "known_hosts": str(sshd.known_hosts), "labels": ["far"]}
        return {"build_hosts": {"local": None, "far": far}}

    yield serve
    for sshd in started:
        sshd.stop()


def _far_takes_jobs(site: Site) -> None:
    """Until `far` has run a job (a host is listed up before its runner first reached it):
    else the first builds could all go to `local`."""
    with site.server.client() as client:
        probe = client.submit(["true"], labels=["far"]).job_id
        assert client.wait(probe).ok and client.status(probe).host == "far"


def _build_jobs(site: Site) -> tuple[dict[str, JobInfo], Counter, dict[str, set[str]]]:
    """Each build job by the cpv it builds (a second one for a cpv fails), how many times
    the job logs say emerge built each cpv, and which binaries each job merged."""
    jobs: dict[str, JobInfo] = {}
    built: Counter = Counter()
    binaries: dict[str, set[str]] = {}
    with site.server.client() as client:
        for job in (j for j in client.list() if j.args[-1].startswith("=")):
            cpv = job.args[-1].removeprefix("=").removesuffix("::cqtest")
            assert cpv not in jobs, f"{cpv} has two build jobs"
            jobs[cpv] = job
            emerged = [m for m in map(EMERGING.match, client.log(job.id)[0].decode()
                                      .splitlines()) if m]
            built.update(m["cpv"] for m in emerged if not m["binary"])
            binaries[cpv] = {m["cpv"] for m in emerged if m["binary"]}
    return jobs, built, binaries


def test_builds_after_a_library_spread_over_a_local_and_an_ssh_build_host(
        tmp_path, munged, ssh_build_host):
    site = make_site(tmp_path, munged, repo=REPO, groups=GROUPS, build_config=ssh_build_host)
    try:
        _far_takes_jobs(site)
        host = site.client("host")
        done = site.cq_emerge(host, "--group", "apps", timeout=BOUND_SECONDS)
        assert done.returncode == 0, done.stdout + done.stderr

        jobs, built, binaries = _build_jobs(site)
        assert sorted(jobs) == sorted((LIB, *APPS))
        assert built == Counter({LIB: 1, APPS[0]: 1, APPS[1]: 1}), built
        assert all(j.state == JobState.DONE and j.exit_status == 0 for j in jobs.values())
        lib = jobs[LIB]
        for app in APPS:
            assert jobs[app].after == (lib.id,)
            assert jobs[app].started >= lib.finished, (app, jobs[app], lib)
        # The library's end frees both apps at once: the host that ran it starts one in the
        # same commit and wakes the other, idle, which starts the other at once (a build
        # takes seconds): one app per host, whichever host built the library. (Each host
        # has its own root for the group: neither app build waits for the other's lock.)
        assert {jobs[app].host for app in APPS} == {"local", "far"}, jobs
        # The other host's root never built the library: its app build merged the binary
        # from the shared PKGDIR; the library's host still has it merged in its root.
        for app in APPS:
            assert binaries[app] == ({LIB} if jobs[app].host != lib.host else set()), binaries
        assert {LIB, *APPS} <= set(host.installed())
    finally:
        site.server.stop()
