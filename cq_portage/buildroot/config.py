"""A root's Portage config, made from the host's at create, update and every run: the same
make.conf, profile, repositories and package.* files, with the host's PKGDIR and DISTDIR
(shared: the binpkgs built in the root land in the host's PKGDIR) and the root's own
PORTAGE_TMPDIR, logs, vdb and world."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from .host import HostPortage

log = logging.getLogger(__name__)

PIN_FILE = "zz-cq-portage"  # in package.use/: a job's per-package USE, last so it wins
HOST_PACKAGE_USE = "00-build-host"  # the host's package.use when it is one file
# The host config dir's entries copied besides make.conf, make.profile and repos.conf.
COPIED = ("env", "profile", "patches", "sets", "bashrc")
# The root's own state, made when missing and never rewritten: the vdb is what the root is.
SKELETON = ("var/db/pkg", "var/lib/portage", "var/cache/edb", "var/log/portage", "var/tmp",
            "tmp", "etc/portage")
_STICKY_TMP = ("tmp", "var/tmp")
_GLOBAL_CONFIG = "usr/share/portage/config"


def make_skeleton(root: Path, host: HostPortage) -> None:
    for folder in SKELETON:
        (root / folder).mkdir(parents=True, exist_ok=True)
    for folder in _STICKY_TMP:
        os.chmod(root / folder, 0o1777)
    world = root / "var/lib/portage/world"
    if not world.exists():
        world.write_text("")
    # A prefix (or a seed without Portage) needs Portage's make.globals and default
    # repos.conf under its EPREFIX; a stage3 has its own, which stays.
    base = Path(host.eprefix or "/")
    for global_config in {host.global_config, base / _GLOBAL_CONFIG}:
        if global_config.is_dir() and global_config.is_relative_to(base):
            target = root / global_config.relative_to(base)
            if not target.exists():
                shutil.copytree(global_config, target, symlinks=True)


def write_config(root: Path, inside: str, host: HostPortage) -> None:
    """(Re)write ROOT/etc/portage from the host's. `inside` is the root's own EPREFIX as
    a command in it sees it: "" in a chroot, ROOT for a prefix. The new folder replaces
    the old one whole, so an interrupted rewrite leaves the previous config."""
    etc = root / "etc"
    new, old = etc / ".portage.cq-new", etc / ".portage.cq-old"
    for leftover in (new, old):
        if leftover.exists():
            shutil.rmtree(leftover)
    new.mkdir(parents=True)
    _write_make_conf(new / "make.conf", host, inside)
    _link_profile(new / "make.profile", host.profile)
    (new / "repos.conf").mkdir()
    (new / "repos.conf" / "cq-build-root.conf").write_text(host.repos_conf())
    for entry in sorted(host.config_dir.iterdir()) if host.config_dir.is_dir() else []:
        if entry.name.startswith("package.") or entry.name in COPIED:
            _copy(entry, new / entry.name)
    package_use = new / "package.use"
    if package_use.is_file():  # a folder, so that a job's pins can sit beside it
        host_file = package_use.with_name(".package.use")
        package_use.rename(host_file)
        package_use.mkdir()
        host_file.rename(package_use / HOST_PACKAGE_USE)
    package_use.mkdir(exist_ok=True)
    (package_use / PIN_FILE).write_text("")
    current = etc / "portage"
    if current.exists() or current.is_symlink():
        current.rename(old)
    new.rename(current)
    if old.exists():
        shutil.rmtree(old)
    log.debug("wrote %s from %s", current, host.config_dir)


def pin_package_use(root: Path, lines: str) -> None:
    """A job's package.use lines (CQ_PACKAGE_USE), or none: last of package.use/."""
    text = "".join(f"{line.strip()}\n" for line in lines.splitlines() if line.strip())
    (root / "etc/portage/package.use" / PIN_FILE).write_text(text)


def _write_make_conf(path: Path, host: HostPortage, inside: str) -> None:
    values = host.make_conf()
    values.update({
        "PKGDIR": str(host.pkgdir),
        "DISTDIR": str(host.distdir),
        "PORTAGE_TMPDIR": f"{inside}/var/tmp",
        "PORT_LOGDIR": f"{inside}/var/log/portage",
        "EMERGE_LOG_DIR": f"{inside}/var/log",
    })
    path.write_text(
        "# Written by cq-build-root from the build host's make.conf (as Portage read it),\n"
        "# with the host's PKGDIR and DISTDIR and this root's own tmp and logs.\n"
        "# `cq-build-root update GROUP` rewrites it; change the host's instead.\n"
        + "".join(f"{name}={quote(value)}\n" for name, value in values.items()))


def quote(value: str) -> str:
    """A make.conf double-quoted string that Portage reads back as `value` unexpanded."""
    for char in ("\\", '"', "$"):  # what Portage's getconfig reads specially
        value = value.replace(char, "\\" + char)
    return f'"{value}"'


def _link_profile(link: Path, profile: Path) -> None:
    if profile.is_symlink():
        # Absolute: a relative target would resolve against the root's own tree.
        link.symlink_to(os.path.realpath(profile))
    elif profile.is_dir():
        shutil.copytree(profile, link, symlinks=True)


def _copy(source: Path, target: Path) -> None:
    if source.is_dir():
        shutil.copytree(source, target, symlinks=True)
    else:
        shutil.copy2(source, target)
