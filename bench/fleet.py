#!/usr/bin/env python3
"""Benchmark of fleet mode (not a test): H hosts of one group with overlapping needs, each a
real sshd on 127.0.0.1 serving its own sandbox prefix, one shared PKGDIR, a real cq-server
(real munged, real emerge builds) with cq-emerge-hook.

Each host has its own world file and installed state (some packages missing, some an older
version, some up to date), drawn from one generated repository. Two fresh copies of the same
starting state are built in the same run:

- baseline: every host updates itself, one after the other (`cq-emerge -g GROUP` on each;
  a later host finds what an earlier one had built as binary packages);
- fleet: one `cq-emerge -g GROUP` on an admin host updates all of them over SSH.

Prints the builds each ran against the unique package instances the hosts need (must be
equal: the run fails otherwise), the wall times and their ratio; both runs must leave every
host with the same installed packages. Builds are counted twice: as build jobs (a job's own
package is its argv[-1]) and as the packages its emerge built from source, read from the
job logs: emerge runs in the group's build root and builds anything the root needs that has
no binary package, which no job counts.

    .venv/bin/python bench/fleet.py [--hosts 8] [--apps 16] [--libs 6] [--world 4] [--repeat 1]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests/emerge")]

from fleet_helpers import Fleet, make_fleet  # noqa: E402
from site_helpers import Site, edited_config, make_site  # noqa: E402

from cq_portage.emerge.install_log import EMERGING  # noqa: E402
from cq_portage.sandbox.munge import Munged  # noqa: E402
from cq_portage.sandbox.prefix import write_vdb_entry  # noqa: E402
from cq_portage.sandbox.repository import Ebuild  # noqa: E402

GROUP = "bweb"
SSH_TIMEOUT = 60  # seconds
PROFILE = {"use": "ssl"}


def generate(apps: int, libs: int, rng: random.Random) -> dict[str, list[Ebuild]]:
    """Package name -> its versions (1.0, then 1.1): libraries, some with an ssl flag, and
    applications depending on one or two of them."""
    packages: dict[str, list[Ebuild]] = {}
    lib_names = [f"bench-libs/lib{i}" for i in range(libs)]
    for i, name in enumerate(lib_names):
        iuse = ("ssl",) if i % 2 == 0 else ()
        packages[name] = [Ebuild(f"{name}-{v}", iuse=iuse) for v in ("1.0", "1.1")]
    for i in range(apps):
        name = f"bench-apps/app{i}"
        deps = " ".join(rng.sample(lib_names, rng.randint(1, 2)))
        packages[name] = [Ebuild(f"{name}-{v}", rdepend=deps) for v in ("1.0", "1.1")]
    return packages


def host_states(hosts: int, packages: dict[str, list[Ebuild]], world_size: int,
                rng: random.Random) -> list[tuple[list[str], dict[str, Ebuild]]]:
    """Per host: its world, and what is installed (name -> version): each package of the
    world's closure is missing, at 1.0 (to update) or at 1.1 (up to date), at random."""
    apps = [name for name in packages if name.startswith("bench-apps/")]
    states = []
    for _ in range(hosts):
        world = sorted(rng.sample(apps, world_size))
        closure = set(world)
        for app in world:
            closure.update(packages[app][0].rdepend.split())
        installed = {}
        for name in sorted(closure):
            choice = rng.random()
            if choice < 0.45:
                installed[name] = packages[name][0]
            elif choice < 0.6:
                installed[name] = packages[name][1]
        states.append((world, installed))
    return states


def prepare(root: Path, munged, packages, states) -> Fleet:
    """A site (build prefix, cq-server) and one sshd-served prefix per host, in `root`."""
    site = make_site(root, munged)
    site.sandbox.repository.add(*[e for versions in packages.values() for e in versions])
    fleet = make_fleet(site, root / "fleet")
    for index, (world, installed) in enumerate(states):
        host = fleet.add_host(f"host{index}", *world)
        for counter, ebuild in enumerate(installed.values(), 1):
            use = {"ssl"} & set(ebuild.iuse)  # the group's USE: up to date means it
            write_vdb_entry(host.prefix, ebuild, use, counter)
    fleet.write_config({GROUP: {**PROFILE, "hosts": list(fleet.hosts)}})
    # The tests' 5 s liveness bound drops hosts of a machine loaded by others: this run
    # measures speed, so a slow answer is still an answer.
    edited_config(fleet.config, fleet.config,
                  lambda c: c["ssh"].update(connect_timeout=SSH_TIMEOUT))
    return fleet


def builds_run(site: Site) -> Counter:
    """The atoms of the build jobs the server ran: a job's own package is its argv[-1]."""
    return Counter(a for a in site.jobs_run() if a.startswith("=bench-"))


def built_from_source(site: Site) -> Counter:
    """Every package the server's jobs built from source, read from the jobs' logs: a job
    runs emerge in its group's build root, which builds whatever the root needs and has
    no binary package for, besides the job's own package."""
    built: Counter = Counter()
    with site.server.client() as client:
        for job in client.list():
            if job.args[-1].startswith("=bench-"):
                log = job_log(client, job.id).decode(errors="replace")
                built.update(f"={m['named']}" for line in log.splitlines()
                             if (m := EMERGING.match(line)) and not m["binary"])
    return built


def job_log(client, job_id: int) -> bytes:
    chunks, offset, end = [], 0, False
    while not end:
        chunk, offset, end = client.log(job_id, offset)
        chunks.append(chunk)
        if not chunk and not end:
            break
    return b"".join(chunks)


def build_seconds(site: Site) -> float:
    """Time the server spent running builds: the floor for any order of updates."""
    with site.server.client() as client:
        return sum(j.finished - j.started for j in client.list()
                   if j.args[-1].startswith("=bench-") and j.finished)


def installed_state(fleet: Fleet) -> dict[str, dict[str, frozenset]]:
    return {name: {cpv: p.use for cpv, p in host.prefix.installed().items()}
            for name, host in fleet.hosts.items()}


def unique_needed(fleet: Fleet) -> tuple[set, int]:
    """(the unique package instances the hosts' plans need built, the sum over hosts)."""
    done = fleet.cq_emerge("--group", GROUP, "--pretend", "--json")
    if done.returncode != 0:
        raise SystemExit(f"fleet --pretend failed:\n{done.stdout}\n{done.stderr}")
    needed, total = set(), 0
    for host in json.loads(done.stdout)["hosts"]:
        for entry in host["plan"]["packages"]:
            if entry["action"] == "build":
                needed.add((entry["cpv"], tuple(entry["use"])))
                total += 1
    return needed, total


def baseline(fleet: Fleet) -> float:
    """Every host updates itself, in turn (cq-emerge run there, locally)."""
    start = time.perf_counter()
    for name, host in fleet.hosts.items():
        done = fleet.cq_emerge_on(host, "--local", "--group", GROUP, "--quiet")
        if done.returncode != 0:
            raise SystemExit(f"baseline update of {name} failed:\n{done.stdout}\n{done.stderr}")
    return time.perf_counter() - start


def fleet_update(fleet: Fleet) -> float:
    start = time.perf_counter()
    done = fleet.cq_emerge("--group", GROUP, "--quiet", timeout=1800)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"fleet update failed:\n{done.stdout}\n{done.stderr}")
    return seconds


def one_round(tmp: Path, munged, args, seed: int) -> dict:
    rng = random.Random(seed)
    packages = generate(args.apps, args.libs, rng)
    states = host_states(args.hosts, packages, args.world, rng)
    alone = prepare(tmp / "alone", munged, packages, states)
    fleet = prepare(tmp / "fleet", munged, packages, states)
    try:
        needed, total = unique_needed(fleet)
        alone_seconds = baseline(alone)
        fleet_seconds = fleet_update(fleet)
        result = {"needed": len(needed), "total": total,
                  "alone_builds": sum(builds_run(alone.site).values()),
                  "fleet_builds": builds_run(fleet.site),
                  "alone_source": built_from_source(alone.site),
                  "fleet_source": built_from_source(fleet.site),
                  "alone": alone_seconds, "fleet": fleet_seconds,
                  "floor": build_seconds(fleet.site), "floor_alone": build_seconds(alone.site),
                  "same_state": installed_state(alone) == installed_state(fleet),
                  "needed_atoms": {f"={cpv}::cqtest" for cpv, _ in needed}}
    finally:
        for site_fleet in (alone, fleet):
            site_fleet.stop()
            site_fleet.site.server.stop()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=8)
    parser.add_argument("--apps", type=int, default=16, help="applications in the repository")
    parser.add_argument("--libs", type=int, default=6, help="libraries they depend on")
    parser.add_argument("--world", type=int, default=4, help="applications in each world")
    parser.add_argument("--repeat", type=int, default=1, help="rounds, each from fresh state")
    parser.add_argument("--seed", type=int, default=6)
    args = parser.parse_args()

    failed = False
    with tempfile.TemporaryDirectory(prefix="cq-bench-fleet-") as scratch, \
            Munged(Path(scratch) / "munge", threads=4) as munged:
        print(f"fleet benchmark: {args.hosts} hosts of one group, {args.apps} applications "
              f"and {args.libs} libraries, {args.world} applications in each world\n")
        print(f"{'round':>5} {'needed':>7} {'unique':>7} {'builds: alone':>14} {'fleet':>6}"
              f" {'from source: alone':>19} {'fleet':>6}"
              f" {'each host alone':>16} {'fleet':>8} {'ratio':>6} {'building: alone':>16}"
              f" {'fleet':>6}")
        for round_ in range(args.repeat):
            tmp = Path(scratch) / f"round{round_}"
            r = one_round(tmp, munged, args, args.seed + round_)
            fleet_builds = sum(r["fleet_builds"].values())
            # One group: one instance per version, so each atom must have run exactly once.
            # And nothing else was built from source: a job's emerge built nothing more.
            once = Counter(r["needed_atoms"])
            ok = (fleet_builds == r["needed"] and r["same_state"]
                  and set(r["fleet_builds"]) == r["needed_atoms"]
                  and r["fleet_source"] == once)
            failed |= not ok
            print(f"{round_ + 1:>5} {r['total']:>7} {r['needed']:>7} {r['alone_builds']:>14}"
                  f" {fleet_builds:>6} {sum(r['alone_source'].values()):>19}"
                  f" {sum(r['fleet_source'].values()):>6}"
                  f" {r['alone']:>15.1f}s {r['fleet']:>7.1f}s"
                  f" {r['fleet'] / r['alone']:>6.2f} {r['floor_alone']:>15.1f}s"
                  f" {r['floor']:>5.1f}s"
                  + ("" if ok else "  MISMATCH"))
            if not r["same_state"]:
                print("  the hosts ended differently in the two runs")
            for run in ("alone", "fleet"):
                extra = r[f"{run}_source"] - once
                if extra:
                    print(f"  {run}: built from source beyond one build per needed instance: "
                          + ", ".join(f"{atom} x{n}" for atom, n in sorted(extra.items())))
            shutil.rmtree(tmp, ignore_errors=True)
        print("\nneeded = package builds summed over the hosts' plans; unique = distinct "
              "instances among them.\nbuilds = build jobs the server ran (fleet must equal "
              "unique); from source = packages those jobs' emerge\nbuilt, read from their "
              "logs (fleet must equal unique, each once); ratio = fleet wall time / the hosts updated one after the other;\n"
              "building = the server's time spent building in each run (one job at a "
              "time: the floor of\nany run; in fleet mode the hosts' installs share this "
              "machine's CPUs with it).")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
