"""A root's first files: a stage3 tarball extracted, or a folder (the host's "/" included)
copied, both with GNU tar so owners, modes, device nodes and xattrs are kept."""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

from .roots import EXIT_FAILED, BuildRootError

log = logging.getLogger(__name__)

# Never copied from the host's "/": kernel and runtime filesystems, scratch, people's homes.
# Their folders stay, empty, as the stage3 has them (mount points, /tmp).
HOST_ONLY = ("proc", "sys", "dev", "run", "tmp", "var/tmp", "home", "root", "mnt", "media",
             "lost+found")
_TAR_KEEP = ("--numeric-owner", "--xattrs", "--xattrs-include=*")


def extract(tarball: Path, dest: Path) -> None:
    """Extract a stage3 (tar.xz, .gz, .bz2, .zst: tar recognises each by its content)."""
    if not tarball.is_file():
        raise BuildRootError(f"seed {tarball} is neither a tarball nor a folder")
    _tar(["tar", "--extract", f"--file={tarball}", f"--directory={dest}",
          "--preserve-permissions", "--same-owner", *_TAR_KEEP], f"extracting {tarball}")


def copy_tree(source: Path, dest: Path, host_paths: list[Path]) -> None:
    """Copy folder `source` into `dest`. `host_paths` (the roots dir, PKGDIR, DISTDIR, the
    repositories) are shared with the root at run time, never copied; from "/" neither is
    HOST_ONLY. Excluded folders are kept, empty, with their owner and mode."""
    source = source.resolve()
    skip = excluded(source, host_paths)
    excludes = [f"--exclude=./{p}/*" for p in skip]
    log.debug("copying %s to %s without %s", source, dest, skip)
    pack = subprocess.Popen(["tar", "--create", "--file=-", f"--directory={source}",
                             "--anchored", *excludes, *_TAR_KEEP, "."],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _tar(["tar", "--extract", "--file=-", f"--directory={dest}", "--preserve-permissions",
              "--same-owner", *_TAR_KEEP], f"copying {source}", stdin=pack.stdout)
    finally:
        pack.stdout.close()
        _, err = pack.communicate()
    # tar exits 1 when a file changed while it read it: a live "/" always has some.
    if pack.returncode not in (0, 1):
        raise BuildRootError(f"copying {source} failed: {_last_line(err)}", EXIT_FAILED)


def excluded(source: Path, host_paths: list[Path]) -> list[Path]:
    """The folders below `source` whose contents a copy leaves out, relative to it."""
    source = source.resolve()
    skip = [Path(p) for p in HOST_ONLY] if source == Path("/") else []
    for path in host_paths:
        path = path.resolve()
        if path != source and path.is_relative_to(source):
            skip.append(path.relative_to(source))
    return skip


def _tar(argv: list[str], what: str, stdin=None) -> None:
    if not shutil.which("tar"):
        raise BuildRootError("tar is needed to seed a root: install app-arch/tar", EXIT_FAILED)
    done = subprocess.run(argv, stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if done.returncode != 0:
        raise BuildRootError(f"{what} failed: {_last_line(done.stderr)}", EXIT_FAILED)


def _last_line(err: bytes) -> str:
    lines = [line for line in err.decode(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else "tar failed without a message"
