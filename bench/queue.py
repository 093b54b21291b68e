#!/usr/bin/env python3
"""Benchmark of the command queue (not a test): real munged, real cq-server process.

Prints jobs/s run serially against the floor of starting the same commands directly with
subprocess, detached submissions/s accepted durably by M concurrent in-process clients, and
submit latency (p50/p99) at an empty queue and at a deep queue, each with its ratio.

The limits are measured in the same run, on the same disk and munged: a serial job costs a
spawn and one commit (its end and the next start share it: SQLite WAL, synchronous=FULL), so
its durable floor is 1 / (spawn + commit); the job store's own end+start commit (its rows
and the indexes a change of state touches) is timed too, the floor this store can reach. A
submission costs one MUNGE encode (client) and one decode (server), so munged's own
encode+decode rate with M threads bounds submissions.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cq_portage.cq import statedir  # noqa: E402
from cq_portage.cq.auth import Munge  # noqa: E402
from cq_portage.cq.job import JobState, Result, Status  # noqa: E402
from cq_portage.cq.serverjob import Job  # noqa: E402
from cq_portage.cq.store import Store, Submission  # noqa: E402
from cq_portage.sandbox.munge import Munged  # noqa: E402
from cq_portage.sandbox.server import CqServer  # noqa: E402


def floor(n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        subprocess.run(["/bin/true", str(i)], check=True)
    return n / (time.perf_counter() - start)


def commit_rate(folder: Path, n: int = 1000) -> float:
    """Durable commits per second in `folder`: the commit SQLite makes for the store (WAL,
    synchronous=FULL, one row changed), what a job's end and the next start cost at least on
    its disk."""
    db = sqlite3.connect(folder / "commit-probe.db", isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        db.executemany("INSERT INTO t (v) VALUES (?)", [("x",)] * 100)
        start = time.perf_counter()
        for i in range(n):
            db.execute("BEGIN IMMEDIATE")
            db.execute("UPDATE t SET v = ? WHERE id = ?", (str(i), i % 100 + 1))
            db.execute("COMMIT")
        return n / (time.perf_counter() - start)
    finally:
        db.close()


def store_commit_rate(folder: Path, n: int = 1000) -> float:
    """The job store's own commits of a job's end and the next start (what the server makes
    per serial job) per second, through a queue of n jobs: commit_rate's one row, plus the
    job rows and the indexes that a change of state touches."""
    folder.mkdir()
    statedir.create_store(folder / "cq.db")
    store = Store(folder / "cq.db")
    try:
        store.submit([Submission(Job(command="/bin/true", argv=("/bin/true", str(i)), env=(),
                                     requester_uid=0, requester_gid=0)) for i in range(n)])
        ended = store.finish_and_start(None, folder / "logs")  # the first start: untimed
        start = time.perf_counter()
        for _ in range(n - 1):  # each an end and a start, as between two serial jobs
            ended.result = Result(JobState.DONE, Status.RAN, 0)
            ended = store.finish_and_start(ended, folder / "logs")
        return (n - 1) / (time.perf_counter() - start)
    finally:
        store.close()


def munge_rate(socket: str, clients: int, n: int = 6000) -> float:
    """munged's own rate: credentials encoded and decoded (one pair a submission) per
    second by `clients` threads, as the bench's clients and the server's decoders do."""
    per = max(1, n // clients)

    def work(c: int, ready: threading.Barrier) -> None:
        munge = Munge(socket)
        ready.wait()
        for i in range(per):
            munge.decode(munge.encode(b"x" * 160))

    return per * clients / at_once(work, clients)


def at_once(work, clients: int) -> float:
    """Seconds `clients` threads of work(c, ready) take once all passed ready.wait()."""
    ready = threading.Barrier(clients + 1)
    threads = [threading.Thread(target=work, args=(c, ready)) for c in range(clients)]
    for t in threads:
        t.start()
    ready.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    return time.perf_counter() - start


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

    def work(c: int, ready: threading.Barrier) -> None:
        with server.client(timeout=60) as client:
            ready.wait()
            for i in range(per):
                client.submit(["/bin/true", "fill", str(c), str(i)])

    return per * clients / at_once(work, clients)


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
        commits = commit_rate(Path(tmp))
        store_commits = store_commit_rate(Path(tmp) / "store", args.jobs)  # run_rate's depth
        munged_rate = munge_rate(munged.socket, args.clients)
        with CqServer(Path(tmp) / "run", munged.socket) as server:
            ran = run_rate(server, args.jobs, args.clients)
        # run_as: requester, the requester being the server's own user (root's jobs)
        with CqServer(Path(tmp) / "requester", munged.socket, {"run_as": "requester"}
                      ) as server:
            ran_requester = run_rate(server, args.jobs // 4, args.clients)
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
    durable = 1 / (1 / direct + 1 / commits)  # a spawn and a commit, one after the other
    stored = 1 / (1 / direct + 1 / store_commits)
    print(f"  load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; this disk "
          f"{commits:.0f} durable commits/s, the job store {store_commits:.0f} end+start "
          f"commits/s; munged {munged_rate:.0f} encode+decode pairs/s "
          f"({args.clients} threads)")
    print(f"  jobs run serially         {ran:8.0f} jobs/s   floor (subprocess) {direct:6.0f}/s"
          f"   ratio {ran / direct:.2f}")
    print(f"                                              durable floor (spawn + commit) "
          f"{durable:6.0f}/s   ratio {ran / durable:.2f}")
    print(f"                                     spawn + the job store's own commit "
          f"{stored:6.0f}/s   ratio {ran / stored:.2f}")
    print(f"  the same, run_as requester {ran_requester:7.0f} jobs/s                    "
          f"        ratio to run_as server {ran_requester / ran:.2f}")
    print(f"  detached submissions      {accepted:8.0f} /s       (durable: fsync'd before the "
          f"answer)   munged's rate ratio {accepted / munged_rate:.2f}")
    print(f"  submit latency, empty     p50 {p50e:6.2f} ms   p99 {p99e:6.2f} ms")
    print(f"  submit latency, {args.queued} queued p50 {p50d:6.2f} ms   p99 {p99d:6.2f} ms"
          f"   ratio p50 {p50d / p50e:.2f}, p99 {p99d / p99e:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
