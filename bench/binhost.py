#!/usr/bin/env python3
"""Benchmark of package delivery (not a test): from a build's completion to the package
being installed on N clients over HTTP (nginx serving the build host's PKGDIR, clients with
their own PKGDIR, binrepos.conf and FEATURES=getbinpkg), against N clients sharing the
build host's PKGDIR (the NFS case), in the same run and the same rounds.

Each round a sync brings a new version of one package; all 2N clients run cq-emerge at once
against a busy build host, so their requests merge into one build, and each installs it as
soon as the build ends. The build's completion is the gpkg's mtime in the build host's
PKGDIR; a client's install is the mtime of its var/db/pkg entry. The HTTP clients' traffic
is nginx's own count of bytes sent (indexes and packages), per client, against the size of
the package. Real munged, cq-server, build roots, emerge and nginx.

    .venv/bin/python bench/binhost.py [--clients 3] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests/emerge")]

from site_helpers import Site, make_site  # noqa: E402

from cq_portage.sandbox.binhost import Binhost, write_index  # noqa: E402
from cq_portage.sandbox.munge import Munged  # noqa: E402
from cq_portage.sandbox.prefix import Prefix  # noqa: E402
from cq_portage.sandbox.repository import Ebuild  # noqa: E402

PACKAGE = "bench-apps/payload"
GROUP = "bench"
HOLD_SECONDS = 4  # the build host is busy while every client submits


def clients(site: Site, binhost: Binhost, count: int) -> tuple[list[Prefix], list[Prefix]]:
    http, shared = [], []
    for i in range(count):
        prefix = site.sandbox.add_prefix(f"http{i}", pkgdir=site.sandbox.root / f"http{i}-pkgs")
        binhost.configure_client(prefix)
        http.append(prefix)
        shared.append(site.client(f"shared{i}"))
    for prefix in http + shared:
        prefix.write_world(PACKAGE)
    return http, shared


def one_round(site: Site, binhost: Binhost, http: list[Prefix], shared: list[Prefix],
              version: int) -> dict:
    site.sandbox.repository.add(Ebuild(f"{PACKAGE}-{version}"))
    before = len(binhost.requests())
    site.hold_queue(HOLD_SECONDS)
    runs = [subprocess.Popen([sys.executable, "-m", "cq_portage.emerge.cli", "--config",
                              str(site.config), "--group", GROUP, "--quiet"], env=p.env(),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for p in http + shared]
    outputs = [run.communicate(timeout=900)[0] for run in runs]
    failed = [p.name for p, run in zip(http + shared, runs) if run.returncode != 0]
    if failed:
        raise SystemExit(f"cq-emerge failed on {failed}:\n" + "\n".join(outputs))
    pf = f"{PACKAGE.split('/')[1]}-{version}"
    gpkg = max(site.sandbox.pkgdir.glob(f"{PACKAGE}/{pf}-*.gpkg.tar"),
               key=lambda p: p.stat().st_mtime)
    built = gpkg.stat().st_mtime

    def latencies(prefixes: list[Prefix]) -> list[float]:
        return [(p.path / "var/db/pkg" / PACKAGE.split("/")[0] / pf).stat().st_mtime - built
                for p in prefixes]

    requests = binhost.requests()[before:]
    sent = {"index": sum(b for path, _, b in requests if "/Packages" in path),
            "package": sum(b for path, _, b in requests if path.endswith(".gpkg.tar"))}
    return {"version": version, "size": gpkg.stat().st_size, "http": latencies(http),
            "shared": latencies(shared), "sent": sent,
            "builds": sum(1 for j in site.jobs_run() if j.startswith(f"={PACKAGE}-{version}"))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=3, help="clients of each kind")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cq-bench-binhost-") as tmp:
        root = Path(tmp)
        with Munged(root / "munge") as munged:
            site = make_site(root, munged, repo=[], groups={GROUP: {"packages": [PACKAGE]}})
            write_index(site.build)
            binhost = Binhost(root / "binhost", site.sandbox.pkgdir).start()
            try:
                http, shared = clients(site, binhost, args.clients)
                rounds = [one_round(site, binhost, http, shared, v)
                          for v in range(1, args.rounds + 1)]
            finally:
                binhost.stop()
                site.server.stop()
    n = args.clients
    print(f"{n} clients over HTTP (nginx) and {n} sharing PKGDIR, {args.rounds} rounds; "
          "seconds from the build's gpkg to each client's installed package")
    print(f"{'round':>5} {'builds':>6} {'HTTP median':>11} {'HTTP max':>8} "
          f"{'shared median':>13} {'shared max':>10} {'bytes/client':>12} {'pkg size':>8}")
    for r in rounds:
        per_client = (r["sent"]["index"] + r["sent"]["package"]) / n
        print(f"{r['version']:>5} {r['builds']:>6} {statistics.median(r['http']):>11.2f} "
              f"{max(r['http']):>8.2f} {statistics.median(r['shared']):>13.2f} "
              f"{max(r['shared']):>10.2f} {per_client:>12.0f} {r['size']:>8}")
    http_all = [x for r in rounds for x in r["http"]]
    shared_all = [x for r in rounds for x in r["shared"]]
    index = sum(r["sent"]["index"] for r in rounds) / n / len(rounds)
    package = sum(r["sent"]["package"] for r in rounds) / n / len(rounds)
    size = statistics.mean(r["size"] for r in rounds)
    print(f"median over all: HTTP {statistics.median(http_all):.2f} s, shared "
          f"{statistics.median(shared_all):.2f} s (ratio "
          f"{statistics.median(http_all) / max(statistics.median(shared_all), 1e-3):.2f}); "
          f"per HTTP client and round: {package:.0f} bytes of package ({package / size:.2f}x "
          f"its {size:.0f} bytes) and {index:.0f} bytes of index")
    return 0


if __name__ == "__main__":
    sys.exit(main())
