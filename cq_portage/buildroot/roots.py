"""Where build roots live and what each one is: ROOTS/GROUP (the chroot's "/" or the
prefix's EPREFIX), its lock file ROOTS/GROUP.lock, its marker ROOTS/GROUP/.cq-build-root."""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOTS_ENV = "CQ_PORTAGE_ROOTS"
ROOTS_UNDER_EPREFIX = "var/lib/cq-portage/roots"
MARKER = ".cq-build-root"
CREATING = ".cq-build-root.creating"  # a root being made: the marker comes last
KINDS = ("chroot", "prefix")
# A successful build's last line names the instance it made: BUILT_PREFIX=CAT/PF-ID::REPO
BUILT_PREFIX = "cq-build-root: built "

EXIT_FAILED = 1
EXIT_USAGE = 2  # usage and config errors, a missing root

_GROUP = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # cq-emerge's group names


class BuildRootError(Exception):
    """A one-line problem for the user, with the exit status it means."""

    def __init__(self, message: str, status: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.status = status


def roots_dir(option: str | None, eprefix: str) -> Path:
    """--roots, else $CQ_PORTAGE_ROOTS, else EPREFIX/var/lib/cq-portage/roots."""
    chosen = option or os.environ.get(ROOTS_ENV)
    if chosen:
        return Path(chosen).absolute()
    return Path(eprefix or "/") / ROOTS_UNDER_EPREFIX


def default_kind(eprefix: str) -> str:
    """A prefix host builds in prefixes (its binaries are built for a prefix anyway); a
    real Gentoo host in chroots."""
    return "prefix" if eprefix.strip("/") else "chroot"


@dataclass(frozen=True)
class Marker:
    """What ROOTS/GROUP/.cq-build-root says about a root."""

    kind: str
    seed: str | None
    created: str  # ISO 8601, UTC


@dataclass(frozen=True)
class BuildRoot:
    group: str
    roots: Path

    def __post_init__(self) -> None:
        if not _GROUP.fullmatch(self.group) or self.group.endswith(".lock"):
            raise BuildRootError(f"invalid group name {self.group!r}: use letters, digits, "
                                 "'_', '.' and '-', starting with a letter or digit")

    @property
    def path(self) -> Path:
        return self.roots / self.group

    @property
    def lock_path(self) -> Path:
        return self.roots / f"{self.group}.lock"

    @property
    def marker_path(self) -> Path:
        return self.path / MARKER

    def exists(self) -> bool:
        return self.marker_path.is_file()

    def is_ours(self) -> bool:
        """A root, or what a create that died left: safe to delete. Anything else in its
        place (--roots pointing at a folder with other things in it) is never touched."""
        return self.exists() or (self.path / CREATING).is_file()

    def marker(self) -> Marker:
        try:
            data = json.loads(self.marker_path.read_text())
            marker = Marker(kind=data["kind"], seed=data.get("seed"), created=data["created"])
        except FileNotFoundError:
            raise BuildRootError(f"no build root for group {self.group} in {self.roots}")
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise BuildRootError(f"{self.marker_path} is damaged ({e}): remove the root "
                                 f"and create it again", EXIT_FAILED)
        if marker.kind not in KINDS:
            raise BuildRootError(f"{self.marker_path}: unknown kind {marker.kind!r}",
                                 EXIT_FAILED)
        return marker


def write_marker(path: Path, kind: str, seed: str | None) -> Marker:
    marker = Marker(kind=kind, seed=seed,
                    created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    (path / MARKER).write_text(json.dumps(asdict(marker), indent=1) + "\n")
    return marker


def list_roots(roots: Path) -> list[tuple[BuildRoot, Marker]]:
    """Every root under `roots` that has a readable marker, by group name."""
    if not roots.is_dir():
        return []
    found = []
    for entry in sorted(roots.iterdir()):
        if entry.is_dir() and (entry / MARKER).is_file():
            try:
                root = BuildRoot(entry.name, roots)
                found.append((root, root.marker()))
            except BuildRootError:
                continue  # not ours, or damaged: `list` shows roots it can use
    return found
