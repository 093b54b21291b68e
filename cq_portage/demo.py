"""make demo: cq-portage's main job on a self-contained sandbox.

A build host and two client hosts (Gentoo prefixes in one folder), groups web and db with
different USE and ABI_X86, a throwaway munged and cq-server on 127.0.0.1. Packages reach the
clients over HTTP by default (--delivery binhost): nginx serves the build host's PKGDIR, the
build host signs each gpkg with a throwaway GnuPG key, and the clients, each with its own
PKGDIR, binrepos.conf and FEATURES=getbinpkg, require and check the signatures against a
keyring set up as getuto does. --delivery shared: the clients share the build host's PKGDIR
instead (the NFS case).
The packages have build-time dependencies (DEPEND, BDEPEND), slot-operator deps and multilib
USE deps, and both groups need libxml2 at build time with different USE: each group builds in
its own build root (a prefix here, a chroot on a real build host). Both clients run cq-emerge
at the same time; then a sync brings a zlib with a new sub-slot, and the second run rebuilds
what was built against the old one and installs it together with the new zlib. The demo shows
what the build host built (each package instance once) and what each client installed, and
stops what it started.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from cq_portage.sandbox.binhost import Binhost, write_index
from cq_portage.sandbox.munge import Munged
from cq_portage.sandbox.prefix import Prefix, Sandbox
from cq_portage.sandbox.repository import MULTILIB_IUSE, Ebuild
from cq_portage.sandbox.server import CqServer
from cq_portage.sandbox.signing import SigningKey, client_gnupg_home, stop_agent, trust

ZLIB_DEP = "sys-libs/zlib:=[abi_x86_32(-)?,abi_x86_64(-)?]"
REPOSITORY = [
    Ebuild("sys-libs/zlib-1.3", slot="0/1", iuse=MULTILIB_IUSE),
    Ebuild("dev-util/ninja-1.11"),
    Ebuild("dev-libs/libxml2-2.12", iuse=("icu",)),
    Ebuild("dev-libs/openssl-3.2", iuse=("static",) + MULTILIB_IUSE, depend=ZLIB_DEP,
           rdepend=ZLIB_DEP, records=("sys-libs/zlib",)),
    Ebuild("app-misc/ca-certificates-2024"),
    Ebuild("www-servers/nginx-1.26", iuse=("ssl", "http2", "X", "debug"),
           depend="dev-libs/libxml2 ssl? ( dev-libs/openssl:= )",
           rdepend="dev-libs/libxml2 ssl? ( dev-libs/openssl:= app-misc/ca-certificates )",
           bdepend="dev-util/ninja", records=("dev-libs/libxml2", "dev-util/ninja")),
    Ebuild("dev-db/postgresql-16.3", iuse=("ssl", "X", "perl") + MULTILIB_IUSE,
           depend=f"{ZLIB_DEP} dev-libs/libxml2 ssl? ( dev-libs/openssl )",
           rdepend=f"{ZLIB_DEP} dev-libs/libxml2 ssl? ( dev-libs/openssl )",
           records=("sys-libs/zlib", "dev-libs/libxml2")),
    Ebuild("app-admin/sudo-1.9", iuse=("ldap",)),
]
SYNC = [Ebuild("sys-libs/zlib-1.3.1", slot="0/2", iuse=MULTILIB_IUSE)]
GROUPS = {
    "web": {"use": "ssl http2 -X icu", "packages": ["www-servers/nginx", "app-admin/sudo"]},
    "db": {"use": "ssl -X perl -icu", "abi_x86": "64 32",
           "packages": ["dev-db/postgresql", "app-admin/sudo"]},
}
CLIENTS = {"web1": "web", "db1": "db"}


def say(text: str) -> None:
    print(f"\033[1m>>> {text}\033[0m" if sys.stdout.isatty() else f">>> {text}", flush=True)


def run_client(prefix: Prefix, config: Path, group: str) -> int:
    proc = subprocess.Popen([sys.executable, "-m", "cq_portage.emerge.cli", "--config",
                             str(config), "--group", group], env=prefix.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        print(f"[{prefix.name:<4}] {line}", end="", flush=True)
    return proc.wait()


def run_clients(clients: dict[str, Prefix], config: Path) -> dict[str, int]:
    """cq-emerge on every client at the same time: client name -> exit status."""
    with ThreadPoolExecutor(len(CLIENTS)) as pool:
        codes = {name: pool.submit(run_client, clients[name], config, group)
                 for name, group in CLIENTS.items()}
    return {name: code.result() for name, code in codes.items()}


def demo(root: Path, delivery: str = "binhost") -> int:
    say(f"sandbox in {root}: a build host and clients "
        + ", ".join(f"{c} (group {g})" for c, g in CLIENTS.items()))
    sandbox = Sandbox(root / "sandbox").create()
    sandbox.repository.add(*REPOSITORY)
    build = sandbox.add_prefix("build")
    if delivery == "shared":
        say("delivery: the clients share the build host's PKGDIR (as over NFS)")
        clients = {name: sandbox.add_prefix(name) for name in CLIENTS}
        return run_site(root, sandbox, build, clients)
    key = SigningKey.create(root / "build-gnupg")
    key.sign_on(build)
    write_index(build)
    homes = [key.home, client_gnupg_home(build)]
    try:
        with Binhost(root / "binhost", sandbox.pkgdir) as binhost:
            clients = {}
            for name in CLIENTS:
                clients[name] = sandbox.add_prefix(name, pkgdir=root / f"{name}-packages")
                binhost.configure_client(clients[name], signed=True)
                homes.append(trust(clients[name], key.public()))
            say(f"delivery: nginx serves the build host's PKGDIR at {binhost.url}; the build "
                f"host signs with key {key.fingerprint[-16:]}, the clients (own PKGDIRs, "
                "binrepos.conf, FEATURES=getbinpkg binpkg-request-signature) trust it as "
                "getuto would")
            code = run_site(root, sandbox, build, clients)
            requests = binhost.requests()
            packages = [r for r in requests if r[0].endswith(".gpkg.tar") and r[1] == 200]
            indexes = [r for r in requests if "/Packages" in r[0]]
            say(f"the binhost answered {len(packages)} package downloads "
                f"({sum(r[2] for r in packages) / 1024:.0f} KiB) and {len(indexes)} index "
                f"requests ({sum(r[2] for r in indexes) / 1024:.0f} KiB); every package "
                "was signature-checked before it was merged")
            return code
    finally:
        for home in homes:
            stop_agent(home)


def run_site(root: Path, sandbox: Sandbox, build: Prefix, clients: dict[str, Prefix]) -> int:
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
            results = run_clients(clients, config)
            report(server, sandbox, clients)
            say("a sync brings sys-libs/zlib-1.3.1 with a new sub-slot (0/2): what was built "
                "against zlib:0/1 must be rebuilt, and installed together with it")
            sandbox.repository.add(*SYNC)
            again = run_clients(clients, config)
            results = {name: results[name] or again[name] for name in results}
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
    say("binary packages in the build host's PKGDIR, one instance per flag set and zlib "
        "sub-slot:")
    for i in sorted(sandbox.binary_instances(), key=lambda i: (i.cpv, int(i.build_id or 0))):
        zlib = next((d for d in i.rdepend.split() if d.startswith("sys-libs/zlib:")), "")
        print(f"    {i.cpv:<32} build {i.build_id:<3} USE=\"{' '.join(sorted(i.use))}\""
              + (f"  built against {zlib.split('[')[0]}" if zlib else ""))
    for name, prefix in clients.items():
        say(f"{name} (group {CLIENTS[name]}) has installed:")
        for cpv, pkg in sorted(prefix.installed().items()):
            print(f"    {cpv:<32} build {pkg.build_id or '-':<3} "
                  f"USE=\"{' '.join(sorted(pkg.use))}\"")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--keep", type=Path, help="build the sandbox here and keep it")
    p.add_argument("--delivery", choices=("binhost", "shared"), default="binhost",
                   help="packages reach the clients from a signed HTTP binhost (default) or "
                        "a shared PKGDIR (NFS)")
    args = p.parse_args()
    if args.keep:
        shutil.rmtree(args.keep, ignore_errors=True)
        args.keep.mkdir(parents=True)
        return demo(args.keep.resolve(), args.delivery)
    with tempfile.TemporaryDirectory(prefix="cq-portage-demo-") as tmp:
        return demo(Path(tmp), args.delivery)


if __name__ == "__main__":
    sys.exit(main())
