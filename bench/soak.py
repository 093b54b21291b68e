#!/usr/bin/env python3
"""Soak of the command queue (not a test): real munged, a real cq-server process, for minutes.

N submitters (default 1,000, each its own connection, as many cron-fed hosts would be) submit
`/bin/true` jobs with a random pause of up to a second between submissions, while R readers
send a mix of STATUS, LIST, LOG and short WAIT requests. Halfway, the server is killed with
SIGKILL and started again. Prints the requests answered, the error rate, p50/p99 latency of
submissions and of reads, the server's RSS at the start, before the kill and at the end, and
the submissions acknowledged against those stored in the job store.
"""

from __future__ import annotations

import argparse
import random
import resource
import sqlite3
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import zmq  # noqa: E402

from cq_portage.cq.wire import Op, build_request  # noqa: E402
from cq_portage.sandbox.munge import Munged  # noqa: E402
from cq_portage.sandbox.server import CqServer  # noqa: E402

MiB = 1 << 20


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith("VmRSS:")).split()[1]) * 1024


def percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))] if values else float("nan")


class Tally:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.answered: Counter = Counter()
        self.errors: Counter = Counter()
        self.latency: dict[str, list[float]] = {"submit": [], "read": [], "wait": []}
        self.acknowledged: list[int] = []

    def ok(self, kind: str, seconds: float, job_id: int | None = None) -> None:
        with self.lock:
            self.answered[kind] += 1
            self.latency[kind if kind in ("submit", "wait") else "read"].append(seconds)
            if job_id is not None:
                self.acknowledged.append(job_id)

    def error(self, kind: str, e: Exception) -> None:
        with self.lock:
            self.errors[f"{kind}: {type(e).__name__}: {str(e)[:80]}"] += 1


def submitter(server: CqServer, n: int, stop: threading.Event, tally: Tally) -> None:
    rng = random.Random(n)
    with server.client(timeout=60) as client:
        i = 0
        while not stop.is_set():
            start = time.perf_counter()
            try:
                job = client.submit(["/bin/true", "soak", str(n), str(i)]).job_id
            except Exception as e:
                tally.error("submit", e)
            else:
                tally.ok("submit", time.perf_counter() - start, job)
            i += 1
            stop.wait(rng.uniform(0, 1.0))


def reader(server: CqServer, n: int, stop: threading.Event, tally: Tally) -> None:
    rng = random.Random(-n)
    with server.client(timeout=60) as client:
        while not stop.is_set():
            kind = rng.choice(["status", "list", "log", "wait"])
            start = time.perf_counter()
            try:
                job_id = rng.randint(1, max(1, len(tally.acknowledged)))
                if kind == "list":
                    client.list()
                elif kind == "wait":  # a long poll of 1 s at most
                    client._call(build_request(Op.WAIT, job_id=job_id, wait_seconds=1), 60)
                else:
                    try:
                        client.status(job_id) if kind == "status" else client.log(job_id)
                    except Exception as e:
                        if "no job" not in str(e):  # ids not stored yet are fine
                            raise
            except Exception as e:
                tally.error(kind, e)
            else:
                tally.ok(kind, time.perf_counter() - start)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=180)
    ap.add_argument("--submitters", type=int, default=1000)
    ap.add_argument("--readers", type=int, default=20)
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    zmq.Context.instance().set(zmq.MAX_SOCKETS, 4 * (args.submitters + args.readers) + 64)
    threading.stack_size(512 << 10)

    root = Path(tempfile.mkdtemp(prefix="cq-soak-"))
    munged = Munged(root / "munge", threads=8).start()
    server = CqServer(root / "server", munged.socket, {"stop_grace_seconds": 5}).start()
    tally, stop = Tally(), threading.Event()
    threads = [threading.Thread(target=submitter, args=(server, n, stop, tally), daemon=True)
               for n in range(args.submitters)]
    threads += [threading.Thread(target=reader, args=(server, n, stop, tally), daemon=True)
                for n in range(args.readers)]
    print(f"soak: {args.submitters} submitters, {args.readers} readers, {args.seconds:g}s, "
          f"kill -9 at half time")
    for t in threads:
        t.start()
    time.sleep(min(10, args.seconds / 6))  # everyone connected
    rss_start = rss(server.process.pid)
    started = time.monotonic()
    time.sleep(args.seconds / 2)
    rss_before_kill = rss(server.process.pid)
    server.kill()
    killed_at = time.monotonic()
    server.start(timeout=60)
    restart = time.monotonic() - killed_at
    time.sleep(max(0, args.seconds - (time.monotonic() - started)))
    rss_end = rss(server.process.pid)
    stop.set()
    for t in threads:
        t.join(90)
    elapsed = time.monotonic() - started
    server.stop(timeout=60)
    db = sqlite3.connect(server.state_dir / "cq.db")
    stored = {row[0] for row in db.execute("SELECT id FROM jobs")}
    db.close()
    munged.stop()

    answered = sum(tally.answered.values())
    errors = sum(tally.errors.values())
    acked = set(tally.acknowledged)
    print(f"requests answered: {answered} in {elapsed:.0f}s ({answered / elapsed:.0f}/s): "
          + ", ".join(f"{k} {v}" for k, v in sorted(tally.answered.items())))
    print(f"errors: {errors} ({100 * errors / max(1, answered + errors):.3f}%)")
    for line, count in tally.errors.most_common(5):
        print(f"  {count} x {line}")
    for kind, values in tally.latency.items():
        what = {"read": "status/list/log", "wait": "wait (long poll, 1 s at most)"}
        print(f"latency {what.get(kind, kind)}: p50 {1000 * percentile(values, 0.5):.1f} ms, "
              f"p99 {1000 * percentile(values, 0.99):.1f} ms")
    print(f"server RSS: start {rss_start / MiB:.0f} MiB, before the kill "
          f"{rss_before_kill / MiB:.0f} MiB, end {rss_end / MiB:.0f} MiB "
          f"(restarted in {restart:.1f}s)")
    print(f"kill -9 at half time: {len(acked)} submissions acknowledged, "
          f"{len(acked & stored)} of them stored, {len(acked - stored)} lost")
    return 1 if acked - stored else 0


if __name__ == "__main__":
    sys.exit(main())
