#!/usr/bin/env python3
"""Benchmark of cq-client per job (not a test): real munged, real cq-server process.

Scripts run `cq-client -- CMD` once a job, so each job pays a whole process. This times, in
interleaved rounds (so the machine's load falls on all alike), one process each of:

  bare       python -c pass: the interpreter's own start-up (site included)
  floor      a process that only imports pyzmq, pymunge and the generated protobuf module:
             what any Python client pays before doing anything
  cq-client  the installed console script: cq-client -- /bin/true, end to end (submit,
             wait, the server runs the job)
  C client   the original C cq_client against the same server, if --c-client names one
             (its answer comes when the job ends). It gets munged's socket in $MUNGE_SOCKET:
             the original uses libmunge's default socket, so a build for this bench needs
             munge_ctx_set(ctx, MUNGE_OPT_SOCKET, getenv("MUNGE_SOCKET")) before its
             munge_encode (README "Benchmarks" says how it was built here)

and prints the medians and cq-client's ratio to the floor and to bare start-up. Byte code is
compiled first (an installed package ships it), and the children may write it.
"""

from __future__ import annotations

import argparse
import compileall
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cq_portage.sandbox.munge import Munged  # noqa: E402
from cq_portage.sandbox.server import CqServer  # noqa: E402

FLOOR = "import zmq, pymunge; import cq_portage.cq.cq_pb2"


def once(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=200, help="processes of each kind")
    p.add_argument("--c-client", help="path of the original C cq_client, to time it too")
    args = p.parse_args()

    python = sys.executable
    script = shutil.which("cq-client", path=str(Path(python).parent)) or "cq-client"
    compileall.compile_dir(str(ROOT / "cq_portage" / "cq"), quiet=1)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = str(ROOT)  # this tree's code, e.g. a checkout of an older commit

    with tempfile.TemporaryDirectory(prefix="cq-bench-cli-") as tmp, \
            Munged(Path(tmp) / "munge") as munged, \
            CqServer(Path(tmp) / "server", munged.socket) as server:
        target = ["-h", "127.0.0.1", "-p", str(server.port)]
        env["MUNGE_SOCKET"] = munged.socket  # read by the C client built for this bench
        kinds = {
            "bare": [python, "-c", "pass"],
            "floor": [python, "-c", FLOOR],
            "cq-client": [script, *target, "--munge-socket", munged.socket, "-q",
                          "--", "/bin/true"],
        }
        if args.c_client:
            kinds["C client"] = [args.c_client, *target, "/bin/true"]
        for argv in kinds.values():  # warm caches; a failing command stops here
            once(argv, env)
        times: dict[str, list[float]] = {k: [] for k in kinds}
        for _ in range(args.rounds):
            for kind, argv in kinds.items():
                times[kind].append(once(argv, env))

    med = {k: statistics.median(v) * 1000 for k, v in times.items()}
    load = os.getloadavg()[0]
    print(f"cq-client per job: {args.rounds} interleaved rounds, load average {load:.1f} "
          f"on {os.cpu_count()} CPUs (medians)")
    for kind, ms in med.items():
        print(f"  {kind:<10} {ms:7.1f} ms")
    print(f"  cq-client / floor      {med['cq-client'] / med['floor']:.2f}")
    print(f"  cq-client / bare       {med['cq-client'] / med['bare']:.2f}")
    print(f"  floor / bare           {med['floor'] / med['bare']:.2f}")
    if args.c_client:
        print(f"  cq-client / C client   {med['cq-client'] / med['C client']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
