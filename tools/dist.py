#!/usr/bin/env python3
"""The release tarball and its Manifest line (make dist, make manifest).

`sdist` builds setuptools' sdist (MANIFEST.in says what goes in) and writes it again with
every member's time, owner and mode fixed and the gzip header's time zeroed, so that the
same commit always gives the same bytes: the DIST line written from a local `make dist`
then matches the tarball uploaded to the release. The time is SOURCE_DATE_EPOCH if set,
else that of the last commit to setup.py, else 0. The overlay's Manifest is left out: it
holds the tarball's own hashes.

`manifest` writes the overlay's `DIST NAME SIZE BLAKE2B HEX SHA512 HEX` line for a tarball
into ebuild/app-admin/cq-portage/Manifest, replacing the line of the same name.
"""

from __future__ import annotations

import argparse
import ast
import gzip
import hashlib
import io
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MANIFEST = REPO / "ebuild" / "app-admin" / "cq-portage" / "Manifest"
DIST_NAME = "cq_portage"  # setuptools' normalised project name: the tarball's name


def version() -> str:
    """setup.py's version= literal."""
    tree = ast.parse((REPO / "setup.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "version":
            return ast.literal_eval(node.value)
    raise SystemExit("tools/dist.py: setup.py has no version=")


def tarball_name(ver: str | None = None) -> str:
    return f"{DIST_NAME}-{ver or version()}.tar.gz"


def source_date() -> int:
    """SOURCE_DATE_EPOCH, else the time of the last commit to setup.py (the version bump):
    committing the Manifest afterwards must not change the tarball it describes."""
    if os.environ.get("SOURCE_DATE_EPOCH", "").isdigit():
        return int(os.environ["SOURCE_DATE_EPOCH"])
    done = subprocess.run(["git", "log", "-1", "--format=%ct", "--", "setup.py"], cwd=REPO,
                          text=True, capture_output=True)
    return int(done.stdout.strip()) if done.returncode == 0 and done.stdout.strip() else 0


def normalise(raw: Path, out: Path, mtime: int) -> None:
    """Rewrite a .tar.gz with sorted members, fixed times, root owner and 0644/0755 modes."""
    with tarfile.open(raw, "r:gz") as src:
        members = sorted(src.getmembers(), key=lambda m: m.name)
        data = {m.name: src.extractfile(m).read() for m in members if m.isfile()}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as dst:
        for member in members:
            member.mtime, member.uid, member.gid = mtime, 0, 0
            member.uname = member.gname = ""
            member.pax_headers = {}
            executable = member.isdir() or member.mode & 0o111
            member.mode = 0o755 if executable else 0o644
            dst.addfile(member, io.BytesIO(data[member.name]) if member.isfile() else None)
    with open(out, "wb") as file, gzip.GzipFile(filename="", mode="wb", fileobj=file,
                                                 mtime=0, compresslevel=9) as gz:
        gz.write(buffer.getvalue())


def dirty() -> list[str]:
    """Uncommitted or untracked files, which would go into the tarball but not the tag."""
    done = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"],
                          cwd=REPO, text=True, capture_output=True)
    return done.stdout.splitlines() if done.returncode == 0 else []


def sdist(dist_dir: Path) -> Path:
    dist_dir.mkdir(parents=True, exist_ok=True)
    if changed := dirty():
        print(f"tools/dist.py: warning: {len(changed)} uncommitted or untracked file(s) go "
              "into the tarball; a release is made from a clean checkout of its tag",
              file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="cq-portage-sdist.") as tmp:
        done = subprocess.run([sys.executable, "setup.py", "-q", "sdist", "--formats=gztar",
                               "--dist-dir", tmp], cwd=REPO, text=True, capture_output=True)
        if done.returncode != 0:
            raise SystemExit(f"tools/dist.py: setup.py sdist failed:\n{done.stderr.strip()}")
        [raw] = Path(tmp).glob("*.tar.gz")
        out = dist_dir / tarball_name()
        if raw.name != out.name:
            raise SystemExit(f"tools/dist.py: setuptools made {raw.name}, expected {out.name}")
        normalise(raw, out, source_date())
    return out


def dist_line(tarball: Path) -> str:
    data = tarball.read_bytes()
    return (f"DIST {tarball.name} {len(data)} BLAKE2B {hashlib.blake2b(data).hexdigest()} "
            f"SHA512 {hashlib.sha512(data).hexdigest()}")


def write_manifest(tarball: Path, manifest: Path = MANIFEST) -> str:
    line = dist_line(tarball)
    old = manifest.read_text().splitlines() if manifest.exists() else []
    kept = [entry for entry in old
            if not (entry.startswith("DIST ") and entry.split()[1:2] == [tarball.name])]
    manifest.write_text("\n".join(sorted([*kept, line])) + "\n")
    return line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tools/dist.py", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    make = sub.add_parser("sdist", help="build dist/cq_portage-VERSION.tar.gz")
    make.add_argument("--dist-dir", type=Path, default=REPO / "dist")
    man = sub.add_parser("manifest", help="write the tarball's DIST line into the overlay")
    man.add_argument("tarball", type=Path, nargs="?",
                     help="default: dist/cq_portage-VERSION.tar.gz")
    man.add_argument("--manifest", type=Path, default=MANIFEST)
    args = parser.parse_args(argv)
    if args.command == "sdist":
        print(sdist(args.dist_dir))
        return 0
    tarball = args.tarball or REPO / "dist" / tarball_name()
    if not tarball.is_file():
        print(f"tools/dist.py: {tarball} does not exist: run `make dist` first", file=sys.stderr)
        return 2
    print(write_manifest(tarball, args.manifest))
    return 0


if __name__ == "__main__":
    sys.exit(main())
