#!/usr/bin/env python3
"""Benchmark of the command queue (not a test): real munged, real cq-server process.

Prints jobs/s run serially against the floor of starting the same commands directly with
subprocess, detached submissions/s accepted durably by M concurrent in-process clients, and
submit latency (p50/p99) at an empty queue and at a deep queue, each with its ratio.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cq_portage.sandbox.munge import Munged  # noqa: E402
from cq_portage.sandbox.server import CqServer  # noqa: E402


def floor(n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        subprocess.run(["/bin/true", str(i)], check=True)
    return n / (time.perf_counter() - start)


def latencies(server: CqServer, n: int, tag: str) -> list[float]:
    out = []
    with server.client() as client:
        for i in range(n):
            start = time.perf_counter()
            client.submit(["/bin/true", tag, str(i)])
            out.append(time.perf_counter() - start)
    return out


def fill(server: CqServer, total: int, clients: int) -> float:
    """Detached submissions by `clients` threads; returns accepted submissions per second."""
    per = total // clients
    barrier = threading.Barrier(clients + 1)

    def work(c: int) -> None:
        with server.client(timeout=60) as client:
            barrier.wait()
            for i in range(per):
                client.submit(["/bin/true", "fill", str(c), str(i)])

    threads = [threading.Thread(target=work, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    return per * clients / (time.perf_counter() - start)


def run_rate(server: CqServer, n: int, clients: int) -> float:
    """Jobs per second run serially: queue n jobs behind a blocker, time their run."""
    with server.client() as client:
        blocker = client.submit(["sleep", "2"]).job_id
        fill(server, n, clients)
        ids = [j.id for j in client.list() if j.id != blocker]
        first = min(ids)
        last = client.submit(["/bin/true", "last"]).job_id
        client.wait(last)
        started = client.status(first).started
        finished = client.status(last).finished
        count = last - first + 1
    return count / (finished - started)


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] * 1000


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--jobs", type=int, default=2000, help="jobs for the run rate (N)")
    p.add_argument("--clients", type=int, default=16, help="concurrent clients (M)")
    p.add_argument("--queued", type=int, default=50000, help="deep queue size")
    p.add_argument("--samples", type=int, default=500, help="latency samples")
    args = p.parse_args()

    with tempfile.TemporaryDirectory(prefix="cq-bench-") as tmp, \
            Munged(Path(tmp) / "munge", threads=4) as munged:
        direct = floor(args.jobs)
        with CqServer(Path(tmp) / "run", munged.socket) as server:
            ran = run_rate(server, args.jobs, args.clients)
        with CqServer(Path(tmp) / "submit", munged.socket) as server:
            with server.client() as client:
                client.submit(["sleep", "3600"])  # holds the queue: nothing else runs
            empty = latencies(server, args.samples, "empty")
            accepted = fill(server, args.queued - args.samples, args.clients)
            deep = latencies(server, args.samples, "deep")
            server.kill()

    p50e, p99e, p50d, p99d = pct(empty, 50), pct(empty, 99), pct(deep, 50), pct(deep, 99)
    print(f"cq queue benchmark: N={args.jobs} jobs, M={args.clients} clients, "
          f"{args.queued} queued")
    print(f"  jobs run serially         {ran:8.0f} jobs/s   floor (subprocess) {direct:6.0f}/s"
          f"   ratio {ran / direct:.2f}")
    print(f"  detached submissions      {accepted:8.0f} /s       (durable: fsync'd before the "
          f"answer)")
    print(f"  submit latency, empty     p50 {p50e:6.2f} ms   p99 {p99e:6.2f} ms")
    print(f"  submit latency, {args.queued} queued p50 {p50d:6.2f} ms   p99 {p99d:6.2f} ms"
          f"   ratio p50 {p50d / p50e:.2f}, p99 {p99d / p99e:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
