#!/usr/bin/env python3
"""Benchmark of the per-group build roots (not a test): what one cq-emerge build job costs
in its group's build root, against the old job on the same packages in the same run.

The sandbox has two libraries, each an application's build-time (and run-time) dependency
(DEPEND "dev-libs/liba:= dev-libs/libb", the build records which liba it saw), and per
repetition two identical applications to build. As at a real site, the build host has the
libraries installed and their binary packages are in PKGDIR. The jobs are exactly those of
`cq-emerge --pretend --json` for a client that needs the applications (argv and environment
from build_jobs), run the way cq-server runs them: the argv with the build host's
environment plus the job's.

Each repetition measures, in this order:
- create: `cq-build-root create GROUP` after removing the root (a prefix root here; a real
  Gentoo build host makes a chroot once, from a stage3);
- fresh: the first job in that new root, which installs the libraries from their binary
  packages, then builds;
- warm: the job of the second application, in the root that already has the libraries;
- wrapper: `cq-build-root run GROUP -- true` (lock, config rewrite from the host, entry);
- portage: Python starting and loading Portage's config, which the wrapper does first;
- plain: the old job, `emerge --buildpkgonly --oneshot =PKG::repo` with the group's USE on
  the build host itself, for the warm job's package (the floor: no root, no deps to install).

Prints each figure in wall and in CPU seconds (user + system of the command and all it
waited for: the steadier one on a shared machine), its median over the repetitions and its
ratio to plain, then the breakdown: wrapper, deps installed from binaries (fresh - warm),
the rest (warm - wrapper - plain: emerge's own extra work in the root: reading PKGDIR's
index for --usepkg, resolving the pinned deps, merging the package into the root's vdb). Fails if a job fails, builds
against another liba than the plan's, or changes the build host's installed packages.

    .venv/bin/python bench/buildroot.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from cq_portage.sandbox.prefix import Prefix, Sandbox  # noqa: E402
from cq_portage.sandbox.repository import Ebuild  # noqa: E402

GROUP = "bench"
GROUP_USE = "ssl"
LIBS = [Ebuild("dev-libs/liba-1", iuse=("ssl",), slot="0/1"), Ebuild("dev-libs/libb-1")]
DEPS = "dev-libs/liba:= dev-libs/libb"
FIGURES = ("create", "fresh", "warm", "wrapper", "portage", "plain")
# What every cq-build-root command pays before its own work: Python, Portage, its config.
LOAD_PORTAGE = "import portage; portage.settings['PKGDIR']"


def application(name: str) -> Ebuild:
    return Ebuild(f"app-misc/{name}-1", depend=DEPS, rdepend=DEPS,
                  records=("dev-libs/liba",))


def build_root(*args: str) -> list[str]:
    return [str(Path(sys.executable).parent / "cq-build-root"), *args]


@dataclass(frozen=True)
class Cost:
    wall: float
    cpu: float  # user + system of the command and everything it waited for


def timed(what: str, run: Callable[[], subprocess.CompletedProcess]) -> Cost:
    """Wall time and CPU time of one command. CPU time is the steadier figure on a machine
    that others share; wall time is what a job costs its queue."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = run()
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{what} failed (exit {done.returncode}):\n{done.stdout[-2000:]}\n"
                         f"{done.stderr[-2000:]}")
    return Cost(wall, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)


def prepare(folder: Path, repeat: int) -> tuple[Sandbox, Prefix, dict[str, dict]]:
    """The sandbox, the build host with the libraries installed (and their binaries in
    PKGDIR), and the build jobs cq-emerge makes for a client needing every application:
    cpv -> job as --pretend --json prints it."""
    sandbox = Sandbox(folder / "sandbox").create()
    apps = [application(f"{kind}{r}") for r in range(repeat) for kind in ("fresh", "warm")]
    sandbox.repository.add(*LIBS, *apps)
    build = sandbox.add_prefix("build")
    build.emerge("--buildpkg", "--oneshot", *(lib.cpv.rsplit("-", 1)[0] for lib in LIBS),
                 env={"USE": GROUP_USE})
    client = sandbox.add_prefix("client")
    client.write_world(*(app.cpv.rsplit("-", 1)[0] for app in apps))
    config = folder / "cq-portage.yaml"
    config.write_text(yaml.safe_dump({
        "server": {"host": "127.0.0.1", "port": 1},  # --pretend submits nothing
        "groups": {GROUP: {"use": GROUP_USE}}}))
    done = client.run(sys.executable, "-m", "cq_portage.emerge.cli", "--config", str(config),
                      "--pretend", "--json", "--group", GROUP)
    document = json.loads(done.stdout)
    actions = {e["cpv"]: e["action"] for e in document["plans"][0]["packages"]}
    if any(actions.get(lib.cpv) != "binary" for lib in LIBS):
        raise SystemExit(f"the plan should take the libraries as binaries: {actions}")
    jobs = {job["cpv"]: job for job in document["jobs"]}
    if set(jobs) != {app.cpv for app in apps}:
        raise SystemExit(f"expected one job per application, got {sorted(jobs)}")
    return sandbox, build, jobs


def run_job(build: Prefix, job: dict) -> subprocess.CompletedProcess:
    """As cq-server runs it: the job's argv, the server's (build host's) environment plus
    the job's variables."""
    return subprocess.run(job["argv"], env={**build.env(), **job["env"]}, cwd=build.path,
                          text=True, capture_output=True, timeout=600)


def one_repetition(r: int, sandbox: Sandbox, build: Prefix,
                   jobs: dict[str, dict]) -> dict[str, Cost]:
    root_path = build.path / "var/lib/cq-portage/roots" / GROUP
    run = dict(env=build.env(), cwd=build.path, text=True, capture_output=True, timeout=600)
    if root_path.exists():
        subprocess.run(build_root("remove", GROUP), check=True, **run)
    fresh, warm = (jobs[f"app-misc/{kind}{r}-1"] for kind in ("fresh", "warm"))
    figures = {
        "create": timed("create", lambda: subprocess.run(build_root("create", GROUP),
                                                         **run)),
        "fresh": timed(f"the job of {fresh['cpv']}", lambda: run_job(build, fresh)),
        "warm": timed(f"the job of {warm['cpv']}", lambda: run_job(build, warm)),
        "wrapper": timed("run -- true", lambda: subprocess.run(
            build_root("run", GROUP, "--", "true"), **run)),
        "portage": timed("loading Portage", lambda: subprocess.run(
            [sys.executable, "-c", LOAD_PORTAGE], **run)),
        "plain": timed("the plain emerge", lambda: build.emerge(
            "--buildpkgonly", "--oneshot", f"={warm['cpv']}::{sandbox.repo_name}",
            env={"USE": GROUP_USE}, check=False)),
    }
    root = Prefix(GROUP, root_path, sandbox.repository, sandbox.pkgdir)
    for job in (fresh, warm):
        seen = root.built_against(job["cpv"]).get("-d dev-libs/liba")
        if seen != LIBS[0].cpv:
            raise SystemExit(f"{job['cpv']} was built against {seen}, not {LIBS[0].cpv}")
    built = [i for i in sandbox.binary_instances() if i.cpv == warm["cpv"]]
    if len(built) != 2:  # the warm job's and the plain emerge's
        raise SystemExit(f"expected two binary packages of {warm['cpv']}, found {len(built)}")
    return figures


def report(measure: str, rows: list[dict[str, float]]) -> None:
    """One table (seconds per repetition, median, ratio to plain) and the breakdown."""
    print(f"\n{measure} seconds\n{'rep':>6}" + "".join(f"{name:>9}" for name in FIGURES))
    for r, row in enumerate(rows, 1):
        print(f"{r:>6}" + "".join(f"{row[n]:>9.2f}" for n in FIGURES))
    median = {n: statistics.median(row[n] for row in rows) for n in FIGURES}
    plain = median["plain"]
    print(f"{'median':>6}" + "".join(f"{median[n]:>9.2f}" for n in FIGURES))
    print(f"{'ratio':>6}" + "".join(f"{median[n] / plain:>9.2f}" for n in FIGURES))
    parts = {"wrapper (run -- true)": median["wrapper"],
             "  of which starting Python and loading Portage": median["portage"],
             "deps from binaries (fresh - warm)": median["fresh"] - median["warm"],
             "emerge's extra in the root (warm - wrapper - plain)":
                 median["warm"] - median["wrapper"] - plain}
    print(f"per job, medians, next to the plain emerge ({plain:.2f} s = 1.00):")
    for name, seconds in parts.items():
        print(f"  {name:<52} {seconds:>6.2f} s  {seconds / plain:>5.2f}")
    print(f"  warm job / plain = {median['warm'] / plain:.2f}; first job in a new root / "
          f"plain = {median['fresh'] / plain:.2f} (+ create {median['create']:.2f} s, once "
          "per root)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="repetitions (median shown)")
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")

    with tempfile.TemporaryDirectory(prefix="cq-bench-buildroot-") as scratch:
        start = time.perf_counter()
        sandbox, build, jobs = prepare(Path(scratch), args.repeat)
        host_before = build.installed()
        example = jobs["app-misc/warm0-1"]
        print("build-root benchmark: one build job per application, with 2 build-time "
              f"deps installed from binaries\n(set-up {time.perf_counter() - start:.1f} s)"
              f"\njob: {' '.join(example['argv'])}")
        rows = []
        for r in range(args.repeat):
            rows.append(one_repetition(r, sandbox, build, jobs))
            print(f"repetition {r + 1} of {args.repeat} done", file=sys.stderr)
        if build.installed() != host_before:
            raise SystemExit("the build host's installed packages changed")
        for measure in ("wall", "cpu"):
            report(measure, [{n: getattr(c, measure) for n, c in row.items()} for row in rows])
        print(f"\ntotal {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
