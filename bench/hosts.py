#!/usr/bin/env python3
"""Benchmark of several build hosts behind one cq-server (not a test): real munged, a real
cq-server process, real sshd processes on 127.0.0.1 as SSH build hosts.

Prints (1) what running a job over SSH costs: /bin/true jobs per second on one SSH build
host against OpenSSH's own client running `true` over one multiplexed connection (the
floor: sshd's cost of a session), and against local jobs; (2) how jobs spread: the wall time
of J jobs of S seconds each on H hosts against the same jobs on one host, as a ratio (ideal
1/H; each SSH job pays the session cost of (1) on top of its S seconds).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cq_portage.sandbox.munge import Munged  # noqa: E402
from cq_portage.sandbox.server import CqServer, wait_running  # noqa: E402
from cq_portage.sandbox.sshd import Sshd  # noqa: E402


def ssh_host(sshd: Sshd) -> dict:
    return {"url": sshd.url, "key_file": str(sshd.client_key), "known_hosts": str(sshd.known_hosts)}


def config(local: bool, sshds: list[Sshd]) -> dict:
    hosts = {"local": None} if local else {}
    hosts.update({f"ssh{i}": ssh_host(s) for i, s in enumerate(sshds)})
    return {"build_hosts": hosts}


def openssh_rate(sshd: Sshd, n: int, folder: Path) -> float:
    """`ssh host true` n times over one ControlMaster connection, per second."""
    ssh = ["ssh", "-i", str(sshd.client_key), "-o", f"UserKnownHostsFile={sshd.known_hosts}",
           "-o", "BatchMode=yes", "-o", f"ControlPath={folder}/mux", "-o", "ControlMaster=auto",
           "-o", "ControlPersist=60", "-p", str(sshd.port), f"{sshd.user}@127.0.0.1"]
    subprocess.run([*ssh, "true"], check=True)  # opens the master connection
    start = time.perf_counter()
    for _ in range(n):
        subprocess.run([*ssh, "true"], check=True)
    rate = n / (time.perf_counter() - start)
    subprocess.run([*ssh[:-1], "-O", "exit", ssh[-1]], capture_output=True)
    return rate


def run_rate(server: CqServer, n: int) -> float:
    """Jobs per second: n /bin/true jobs queued behind a blocker, timed from the server's
    own start and end stamps."""
    with server.client() as client:
        blocker = client.submit(["sleep", "1"]).job_id
        wait_running(client, blocker)
        ids = [client.submit(["/bin/true", str(i)]).job_id for i in range(n)]
        client.wait(ids[-1])
        started = client.status(ids[0]).started
        finished = client.status(ids[-1]).finished
    return n / (finished - started)


def spread(server: CqServer, jobs: int, seconds: float) -> float:
    """Wall time for `jobs` sleeps, from the first start to the last end."""
    with server.client() as client:
        # Told apart by a variable: identical queued jobs would merge (and GNU sleep adds up
        # all its arguments).
        ids = [client.submit(["sleep", str(seconds)], {"N": str(i)}).job_id
               for i in range(jobs)]
        for job_id in ids:
            client.wait(job_id)
        infos = [client.status(job_id) for job_id in ids]
    return max(i.finished for i in infos) - min(i.started for i in infos)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--jobs", type=int, default=200, help="/bin/true jobs for the rates (N)")
    p.add_argument("--hosts", type=int, default=4, help="build hosts for the spread (H)")
    p.add_argument("--sleepers", type=int, default=12, help="jobs for the spread (J)")
    p.add_argument("--seconds", type=float, default=1.0, help="each one's length (S)")
    args = p.parse_args()

    with tempfile.TemporaryDirectory(prefix="cq-bench-hosts-") as tmp, \
            Munged(Path(tmp) / "munge", threads=4) as munged:
        root = Path(tmp)
        sshds = [Sshd(root / f"sshd{i}").start() for i in range(args.hosts)]
        try:
            def server(name: str, local: bool, hosts: list[Sshd]) -> CqServer:
                return CqServer(root / name, munged.socket, config(local, hosts))

            with server("local", True, []) as s:
                local_rate = run_rate(s, args.jobs)
                one_host = spread(s, args.sleepers, args.seconds)
            with server("ssh", False, sshds[:1]) as s:
                ssh_rate = run_rate(s, args.jobs)
            floor = openssh_rate(sshds[0], min(args.jobs, 50), root)
            with server("many", True, sshds[:args.hosts - 1]) as s:
                many_hosts = spread(s, args.sleepers, args.seconds)
        finally:
            for sshd in sshds:
                sshd.stop()

    print(f"cq build hosts benchmark: N={args.jobs} jobs, J={args.sleepers} jobs of "
          f"{args.seconds:g} s on H={args.hosts} hosts (1 local, {args.hosts - 1} SSH)")
    print(f"  /bin/true over SSH, one host  {ssh_rate:7.1f} jobs/s   OpenSSH, multiplexed "
          f"{floor:5.1f}/s   ratio {ssh_rate / floor:.2f}   ({1000 / ssh_rate:.0f} ms a job; "
          f"local jobs: {local_rate:.0f}/s)")
    print(f"  {args.sleepers} jobs on {args.hosts} hosts          {many_hosts:7.2f} s"
          f"        on one host {one_host:6.2f} s   ratio {many_hosts / one_host:.2f}"
          f" (ideal {1 / args.hosts:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
