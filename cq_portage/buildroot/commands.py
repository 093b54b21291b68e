"""The five commands, one code path for both kinds: only enter.py knows the difference."""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import config, seed
from .enter import Entry, entry_for
from .host import HostPortage, exact_atoms
from .lock import locked
from .remove import check_unmounted, remove_tree
from .roots import (BUILT_PREFIX, CREATING, EXIT_USAGE, MARKER, BuildRoot, BuildRootError, Marker,
                    list_roots, write_marker)
from .runner import Forwarder, run

log = logging.getLogger(__name__)

PACKAGE_USE_ENV = "CQ_PACKAGE_USE"  # a job's package.use lines, pinned inside the root
STAGE3_HINT = "STAGE3.tar.xz"


@dataclass
class Tool:
    roots: Path
    default_kind: str
    host: HostPortage = field(default_factory=HostPortage)

    def root(self, group: str) -> BuildRoot:
        return BuildRoot(group, self.roots)

    # -- create / update -------------------------------------------------------------
    def create(self, group: str, kind: str | None, seed_from: str | None) -> Marker:
        root = self.root(group)
        kind = kind or self.default_kind
        if kind == "chroot" and not seed_from:
            raise BuildRootError(f"a chroot build root needs a seed: cq-build-root create "
                                 f"{group} --seed {STAGE3_HINT} (or a folder; / copies "
                                 "this host)")
        source = Path(seed_from).absolute() if seed_from else None
        if source is not None and not source.exists():
            raise BuildRootError(f"seed {seed_from} does not exist")
        with locked(root.lock_path, group):
            if root.exists():
                raise BuildRootError(f"the build root of {group} exists ({root.path}): "
                                     f"`cq-build-root update {group}` rewrites its config, "
                                     f"`remove {group}` deletes it")
            return self._create(root, kind, source)

    def _create(self, root: BuildRoot, kind: str, source: Path | None) -> Marker:
        """Seed, configure, then write the marker: a root without one is a create that
        died, which the next create (or run) deletes and does again."""
        if root.path.exists():
            self._remove_leftover(root)
        root.path.mkdir(parents=True)
        (root.path / CREATING).write_text("")
        try:
            if source is not None and source.is_dir():
                seed.copy_tree(source, root.path, self._shared_paths())
            elif source is not None:
                seed.extract(source, root.path)
            os.chmod(root.path, 0o755)
            self._configure(root.path, kind)
            marker = write_marker(root.path, kind, str(source) if source else None)
            (root.path / CREATING).unlink()
        except BaseException:
            remove_tree(root.path, last=(CREATING,))
            raise
        log.info("created the %s build root of %s in %s", kind, root.group, root.path)
        return marker

    def _remove_leftover(self, root: BuildRoot) -> None:
        if not root.is_ours():
            raise BuildRootError(f"{root.path} exists and is not a build root (no {MARKER}): "
                                 "move it away, or choose another --roots")
        check_unmounted(root.path)
        (root.path / CREATING).touch()  # a removal that stops half-way can be done again
        remove_tree(root.path, last=(MARKER, CREATING))

    def _shared_paths(self) -> list[Path]:
        return [self.roots, self.host.pkgdir, self.host.distdir,
                *self.host.repositories().values()]

    def _configure(self, path: Path, kind: str) -> Entry:
        entry = entry_for(kind, path, self.host)
        config.make_skeleton(path, self.host)
        config.write_config(path, entry.inside, self.host)
        return entry

    def update(self, group: str) -> Marker:
        root = self.root(group)
        with locked(root.lock_path, group):
            marker = root.marker()
            self._configure(root.path, marker.kind)
            return marker

    # -- run ---------------------------------------------------------------------------
    def run(self, group: str, argv: list[str]) -> int:
        root = self.root(group)
        if not argv:
            raise BuildRootError("no command: cq-build-root run GROUP -- COMMAND [ARG]...")
        for category, pf, repo in exact_atoms(argv):
            if not self.host.has_ebuild(category, pf, repo):
                raise BuildRootError(f"build host's ::{repo} has no ={category}/{pf}; "
                                     "sync the build host")
        env = dict(os.environ)
        pins = env.pop(PACKAGE_USE_ENV, "")
        with Forwarder() as forwarder, locked(root.lock_path, group) as lock_fd:
            if not root.exists():
                if self.default_kind != "prefix":
                    raise BuildRootError(
                        f"no build root for group {group} in {self.roots}: create it "
                        f"with `cq-build-root create {group} --seed {STAGE3_HINT}`",
                        EXIT_USAGE)
                self._create(root, "prefix", None)  # cheap: a few folders and files
            # The host's config as it is now: a root never builds with a stale copy.
            entry = self._configure(root.path, root.marker().kind)
            config.pin_package_use(root.path, pins)
            entry.prepare()
            sys.stdout.flush()
            sys.stderr.flush()
            started = time.time()
            status = run(argv, entry.popen_args(env), entry, lock_fd, forwarder)
            if status == 0:
                _say_built(root.path, argv, started)
            return status

    # -- remove / list -------------------------------------------------------------------
    def remove(self, group: str) -> Path:
        root = self.root(group)
        with locked(root.lock_path, group):
            if not root.path.exists():
                raise BuildRootError(f"no build root for group {group} in {self.roots}")
            self._remove_leftover(root)
            # The lock file stays: a waiter holds it open, and deleting it would let a
            # third command lock a new file while the waiter locks the old one.
            return root.path

    def list(self) -> list[dict]:
        return [{"group": root.group, "kind": marker.kind, "path": str(root.path),
                 "seed": marker.seed, "created": marker.created}
                for root, marker in list_roots(self.roots)]


def _say_built(root: Path, argv: list[str], started: float) -> None:
    """After a build, name the binary package the root now holds of the last `=CAT/PF::REPO`
    argument (its vdb's BUILD_ID: the instance emerge --buildpkg just made, or the one it
    took), so that clients install exactly that instance: `cq-build-root: built
    =CAT/PF-BUILD_ID::REPO`, the job's last line. Nothing when there is no such atom, or
    when the command merged none since `started` (a build_command that only makes a binary
    package leaves an older merge's BUILD_ID: naming it would install a stale instance)."""
    atoms = exact_atoms(argv)
    if not atoms:
        return
    category, pf, repo = atoms[-1]
    path = root / "var/db/pkg" / category / pf / "BUILD_ID"
    try:
        if path.stat().st_mtime < started:
            return
        build_id = int(path.read_text())
    except (OSError, ValueError):
        return
    print(f"{BUILT_PREFIX}={category}/{pf}-{build_id}::{repo}", file=sys.stderr, flush=True)
