"""make demo: cq-portage's main job on a self-contained sandbox.

A build host and two client hosts (Gentoo prefixes in one folder, sharing a PKGDIR), groups
web and db with different USE and ABI_X86, a throwaway munged and cq-server on 127.0.0.1.
Both clients run cq-emerge at the same time; then the demo shows what the build host built
(each package instance once) and what each client installed, and stops what it started.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import yaml

from cq_portage.sandbox.munge import Munged
from cq_portage.sandbox.prefix import Prefix, Sandbox
from cq_portage.sandbox.repository import MULTILIB_IUSE, Ebuild
from cq_portage.sandbox.server import CqServer

REPOSITORY = [
    Ebuild("sys-libs/zlib-1.3", iuse=MULTILIB_IUSE),
    Ebuild("dev-libs/openssl-3.2", iuse=("static",) + MULTILIB_IUSE, rdepend="sys-libs/zlib"),
    Ebuild("app-misc/ca-certificates-2024"),
    Ebuild("www-servers/nginx-1.26", iuse=("ssl", "http2", "X", "debug"),
           rdepend="ssl? ( dev-libs/openssl app-misc/ca-certificates )"),
    Ebuild("dev-db/postgresql-16.3", iuse=("ssl", "X", "perl") + MULTILIB_IUSE,
           rdepend="sys-libs/zlib ssl? ( dev-libs/openssl )"),
    Ebuild("app-admin/sudo-1.9", iuse=("ldap",)),
]
GROUPS = {
    "web": {"use": "ssl http2 -X", "packages": ["www-servers/nginx", "app-admin/sudo"]},
    "db": {"use": "ssl -X perl", "abi_x86": "64 32",
           "packages": ["dev-db/postgresql", "app-admin/sudo"]},
}
CLIENTS = {"web1": "web", "db1": "db"}


def say(text: str) -> None:
    print(f"\033[1m>>> {text}\033[0m" if sys.stdout.isatty() else f">>> {text}", flush=True)


def run_client(prefix: Prefix, config: Path, group: str, results: dict) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "cq_portage.emerge.cli", "--config",
                             str(config), "--group", group], env=prefix.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        print(f"[{prefix.name:<4}] {line}", end="", flush=True)
    results[prefix.name] = proc.wait()


def demo(root: Path) -> int:
    say(f"sandbox in {root}: a build host and clients "
        + ", ".join(f"{c} (group {g})" for c, g in CLIENTS.items()))
    sandbox = Sandbox(root / "sandbox").create()
    sandbox.repository.add(*REPOSITORY)
    build = sandbox.add_prefix("build")
    clients = {name: sandbox.add_prefix(name) for name in CLIENTS}
    with Munged(root / "munge") as munged:
        hook = str(Path(sys.executable).parent / "cq-emerge-hook")
        server = CqServer(root / "server", munged.socket, {"incoming_hook": [hook]},
                          env=build.env())
        with server:
            say(f"munged ({munged.socket}) and cq-server (127.0.0.1:{server.port}) started; "
                "its jobs build in the build host's prefix")
            config = root / "cq-portage.yaml"
            config.write_text(yaml.safe_dump({
                "server": {"host": "127.0.0.1", "port": server.port,
                           "munge_socket": munged.socket},
                "groups": GROUPS}, sort_keys=False))
            say("both clients run cq-emerge at the same time")
            results: dict[str, int] = {}
            threads = [threading.Thread(target=run_client, args=(clients[n], config, g, results))
                       for n, g in CLIENTS.items()]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            report(server, sandbox, clients)
    say("stopped cq-server and munged")
    failed = [name for name, code in results.items() if code != 0]
    if failed:
        say(f"cq-emerge failed on {', '.join(failed)}")
    return 1 if failed else 0


def report(server: CqServer, sandbox: Sandbox, clients: dict[str, Prefix]) -> None:
    with server.client() as client:
        jobs = [j for j in client.list() if j.args]
    say(f"the build host ran {len(jobs)} build jobs (requests for the same instance merged):")
    for j in sorted(jobs, key=lambda j: j.id):
        print(f"    job {j.id:<3} {j.args[-1]:<40} waiters {j.waiters}  exit {j.exit_status}")
    say("binary packages in the shared PKGDIR, one instance per flag set:")
    for i in sorted(sandbox.binary_instances(), key=lambda i: (i.cpv, i.build_id)):
        print(f"    {i.cpv:<32} build {i.build_id:<3} USE=\"{' '.join(sorted(i.use))}\"")
    for name, prefix in clients.items():
        say(f"{name} (group {CLIENTS[name]}) has installed:")
        for cpv, pkg in sorted(prefix.installed().items()):
            print(f"    {cpv:<32} build {pkg.build_id or '-':<3} "
                  f"USE=\"{' '.join(sorted(pkg.use))}\"")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--keep", type=Path, help="build the sandbox here and keep it")
    args = p.parse_args()
    if args.keep:
        shutil.rmtree(args.keep, ignore_errors=True)
        args.keep.mkdir(parents=True)
        return demo(args.keep.resolve())
    with tempfile.TemporaryDirectory(prefix="cq-portage-demo-") as tmp:
        return demo(Path(tmp))


if __name__ == "__main__":
    sys.exit(main())
