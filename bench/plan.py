"""Benchmark: planning G groups in one cq-emerge run against G runs of real
`emerge -puDN --usepkg --binpkg-respect-use=y @world` (one per group, with that group's
flags), in the same run: the options the plan itself resolves with (ARCHITECTURE.md).

A generated repository of PACKAGES packages with a layered dependency graph (USE-conditional
dependencies, multilib packages, version bumps, two-slot packages) and about INSTALLED
installed packages (recorded in var/db/pkg, see write_vdb_entry). Both sides must produce
identical package lists (cpv + enabled USE, in order) or the benchmark fails.

    .venv/bin/python bench/plan.py [--packages 2000] [--installed 300] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests/emerge")]

from emerge_helpers import parse_emerge, write_config  # noqa: E402

from cq_portage.emerge.forked import cpu_count  # noqa: E402
from cq_portage.sandbox.prefix import Sandbox, write_vdb_entry  # noqa: E402
from cq_portage.sandbox.repository import MULTILIB_IUSE, Ebuild  # noqa: E402

CATEGORIES = ("app-misc", "dev-libs", "dev-lang", "net-libs", "sys-libs", "media-libs",
              "x11-libs", "dev-python", "net-misc", "sys-apps")
FLAGS = ("ssl", "http2", "X", "ldap", "sqlite", "gui", "ipv6", "zlib", "doc", "test-x")
GROUPS = {  # group profile, and the same flags exported for real emerge
    "web": ({"use": "ssl http2 -X"}, {"USE": "ssl http2 -X"}),
    "db": ({"use": "-X ldap sqlite"}, {"USE": "-X ldap sqlite"}),
    "multilib": ({"use": "zlib", "abi_x86": "64 32"}, {"USE": "zlib", "ABI_X86": "64 32"}),
    "desktop": ({"use": "X gui ipv6"}, {"USE": "X gui ipv6"}),
}


def generate(count: int, rng: random.Random) -> tuple[list[Ebuild], list[list[Ebuild]]]:
    """Packages in dependency layers: each depends on 0-4 packages of lower layers, some
    only under a USE flag. Returns every ebuild, and per package its versions (old first)."""
    packages: list[list[Ebuild]] = []
    names: list[str] = []
    for index in range(count):
        category = CATEGORIES[index % len(CATEGORIES)]
        name = f"{category}/pkg{index:04d}"
        iuse = tuple(("+" if rng.random() < 0.3 else "") + f
                     for f in rng.sample(FLAGS, rng.randint(0, 4)))
        if rng.random() < 0.15:
            iuse += MULTILIB_IUSE
        deps = []
        if names:
            low = max(0, len(names) - 400)  # mostly recent layers: deep but not flat
            for dep in rng.sample(names[low:], min(len(names) - low, rng.randint(0, 4))):
                plain = [f.lstrip("+") for f in iuse if not f.startswith("abi_")]
                if plain and rng.random() < 0.25:
                    deps.append(f"{rng.choice(plain)}? ( {dep} )")
                else:
                    deps.append(dep)
        rdepend = " ".join(deps)
        versions = [Ebuild(f"{name}-1.0", iuse=iuse, rdepend=rdepend, depend=rdepend)]
        if rng.random() < 0.2:  # a version bump since the hosts last updated
            versions.append(Ebuild(f"{name}-1.1", iuse=iuse, rdepend=rdepend, depend=rdepend))
        if rng.random() < 0.03:  # a second slot
            versions.append(Ebuild(f"{name}-2.0", iuse=iuse, slot="2", rdepend=rdepend,
                                   depend=rdepend))
        packages.append(versions)
        names.append(name)
    return [e for versions in packages for e in versions], packages


def default_use(ebuild: Ebuild) -> set[str]:
    use = {f[1:] for f in ebuild.iuse if f.startswith("+")}
    if "abi_x86_64" in {f.lstrip("+") for f in ebuild.iuse}:
        use.add("abi_x86_64")
    return use


def install(prefix, packages: list[list[Ebuild]], target: int, rng: random.Random) -> list[str]:
    """Pick world packages until their dependency closure (default USE) reaches `target`;
    record the oldest version of each as installed. Returns the world atoms."""
    by_name = {versions[0].cpv.rsplit("-", 1)[0]: versions for versions in packages}
    installed: dict[str, Ebuild] = {}
    world: list[str] = []
    candidates = list(by_name)
    rng.shuffle(candidates)
    for name in candidates:
        if len(installed) >= target:
            break
        closure = _closure(name, by_name, set(installed))
        if len(installed) + len(closure) > target * 1.05:
            continue
        world.append(name)
        installed.update((n, by_name[n][0]) for n in closure)
    for counter, ebuild in enumerate(installed.values(), 1):
        write_vdb_entry(prefix, ebuild, default_use(ebuild), counter)
    prefix.write_world(*world)
    return world


def _closure(name: str, by_name: dict[str, list[Ebuild]], known: set[str]) -> list[str]:
    """`name` and what it pulls in with default USE, leaving out what is `known` already."""
    found: list[str] = []
    seen = set(known)
    stack = [name]
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        found.append(current)
        ebuild = by_name[current][0]
        use = default_use(ebuild)
        condition = None
        for token in ebuild.rdepend.replace("(", " ").replace(")", " ").split():
            if token.endswith("?"):  # conditional groups hold one atom each
                condition = token[:-1]
                continue
            if condition is None or condition in use:
                stack.append(token)
            condition = None
    return found


def timed(argv: list[str], env: dict) -> tuple[float, subprocess.CompletedProcess]:
    """Seconds `argv` took, and how it ended; a failure ends the benchmark with its output."""
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"{argv[0]} failed:\n{done.stdout}{done.stderr}")
    return time.perf_counter() - start, done


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packages", type=int, default=2000)
    parser.add_argument("--installed", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (best kept)")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--keep", metavar="DIR", help="build the sandbox in DIR and keep it")
    args = parser.parse_args()
    rng = random.Random(args.seed)

    with tempfile.TemporaryDirectory(prefix="cq-bench-") as scratch:
        tmp = args.keep or scratch
        sandbox = Sandbox(Path(tmp)).create()
        ebuilds, packages = generate(args.packages, rng)
        sandbox.repository.add(*ebuilds)
        prefix = sandbox.add_prefix("client")
        world = install(prefix, packages, args.installed, rng)
        installed = len(list((prefix.path / "var/db/pkg").glob("*/*")))
        config = write_config(Path(tmp), {n: {**g, "packages": ["@world"]}
                                          for n, (g, _) in GROUPS.items()})
        print(f"repository: {len(ebuilds)} ebuilds in {args.packages} packages; "
              f"installed: {installed} ({len(world)} in world)")

        emerge = [str(Path(sys.executable).parent / "emerge"), "--color=n", "--nospinner",
                  "--pretend", "--verbose", "--update", "--deep", "--newuse",
                  "--usepkg", "--binpkg-respect-use=y", "@world"]  # as the plan resolves
        cq = [sys.executable, "-m", "cq_portage.emerge.cli", "--config", str(config),
              "--pretend", "--json"]
        names = list(GROUPS)
        runs = [(count, jobs) for count in (1, 2, 4) for jobs in (1, None)
                if count > 1 or jobs is None]
        emerge_times: dict[str, list[float]] = {n: [] for n in names}
        cq_times: dict[tuple, list[float]] = {run: [] for run in runs}
        emerge_lists, cq_lists = {}, {}
        # Rounds interleave both sides, so load from elsewhere hits them alike; the first
        # round warms the page cache and is not counted.
        for _ in range(args.repeat + 1):
            for name in names:
                seconds, done = timed(emerge, prefix.env(**GROUPS[name][1]))
                emerge_times[name].append(seconds)
                emerge_lists[name] = [(x.cpv, x.use) for x in parse_emerge(done.stdout)]
            for count, jobs in runs:
                argv = cq + [a for n in names[:count] for a in ("--group", n)]
                argv += [f"--jobs={jobs}"] if jobs else []
                seconds, done = timed(argv, prefix.env())
                cq_times[(count, jobs)].append(seconds)
                cq_lists[(count, jobs)] = {
                    p["group"]: [(x["cpv"], frozenset(x["use"])) for x in p["packages"]]
                    for p in json.loads(done.stdout)["plans"]}

        print(f"\n{'groups':>6} {'cq jobs':>7} {'emerge -puDN x G':>18} {'cq-emerge -p':>14}"
              f" {'ratio':>7} {'median':>7} {'packages per group':>20}")
        for count, jobs in runs:
            chosen = names[:count]
            plans = cq_lists[(count, jobs)]
            for name in chosen:
                if plans[name] != emerge_lists[name]:
                    print(f"MISMATCH for group {name}: cq-emerge {len(plans[name])} packages, "
                          f"emerge {len(emerge_lists[name])}")
                    return 1
            baseline = sum(min(emerge_times[n][1:]) for n in chosen)
            ours = min(cq_times[(count, jobs)][1:])
            # The ratio within each round (both sides under the same load), then the median.
            median = statistics.median(
                cq_times[(count, jobs)][r] / sum(emerge_times[n][r] for n in chosen)
                for r in range(1, args.repeat + 1))
            sizes = "/".join(str(len(plans[n])) for n in chosen)
            shown_jobs = jobs or min(count, cpu_count())
            print(f"{count:>6} {shown_jobs:>7} {baseline:>17.2f}s {ours:>13.2f}s"
                  f" {ours / baseline:>7.2f} {median:>7.2f} {sizes:>20}")
        print(f"\nratio = cq-emerge time / sum of the G times of emerge -puDN --usepkg "
              f"--binpkg-respect-use=y, best of {args.repeat} after a warm-up (median: of "
              f"the ratios within each round), {cpu_count()} "
              f"CPUs, load average {os.getloadavg()[0]:.1f}; target for 4 groups: <= 0.35.\n"
              "cq jobs = groups resolved at once (--jobs; default one per CPU). "
              "Package lists (cpv, USE, order) identical to emerge's.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
