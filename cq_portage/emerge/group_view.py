"""A group's view of Portage trees loaded once: the group's own config over shared databases.

The config is built as emerge builds it, with the group's variables exported into its
environment, plus the group's package.use lines; the installed-package database, the
repositories' metadata caches and PKGDIR index stay shared, which is what makes planning
many groups cheaper than running emerge once per group.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Iterable, Mapping

import portage
from _emerge.Package import Package
from _emerge.RootConfig import RootConfig
from portage._sets import load_default_config
from portage.dep import Atom, match_from_list
from portage.exception import InvalidAtom

from cq_portage.emerge.profiles import GroupProfile, PackageUse


def group_trees(base: portage._trees_dict, base_environ: Mapping[str, str],
                group: GroupProfile) -> portage._trees_dict:
    """The shared trees, with the target root's config replaced by the group's."""
    target = base._target_eroot
    environ = _group_environ(base_environ, group)
    base_settings = base[target]["vartree"].settings
    settings = portage.config(
        config_root=base_settings["PORTAGE_CONFIGROOT"], target_root=base_settings["ROOT"],
        sysroot=base_settings["SYSROOT"], eprefix=base_settings["EPREFIX"], env=environ)
    _add_package_use(settings, group.package_use)
    settings.lock()
    trees = portage._trees_dict(base)
    trees._running_eroot, trees._target_eroot = base._running_eroot, target
    root_trees: dict = {"virtuals": settings.getvirtuals()}
    root_trees["vartree"] = _with_settings(base[target]["vartree"], settings)
    root_trees["porttree"] = _porttree_for(base[target]["porttree"], settings)
    root_trees["bintree"] = base[target]["bintree"]
    root_trees["root_config"] = RootConfig(settings, root_trees,
                                           load_default_config(settings, root_trees))
    trees[target] = root_trees
    if base._running_eroot != target and "root_config" not in base[base._running_eroot]:
        running = base[base._running_eroot]
        running["root_config"] = RootConfig(
            running["vartree"].settings, running,
            load_default_config(running["vartree"].settings, running))
    return trees


def _group_environ(base: Mapping[str, str], group: GroupProfile) -> dict[str, str]:
    """The process environment with the group's variables exported on top, the way
    `USE=... ABI_X86=... emerge` sees them (USE is incremental, so it adds to make.conf)."""
    return {**base, **group.portage_env()}


def _add_package_use(settings: portage.config, lines: Iterable[PackageUse]) -> None:
    """Add a group's package.use lines after the user's own (so they win), in the config's
    private USE manager: the only way to add package.use without writing a file."""
    # A config built from scratch owns its UseManager; clones would share it.
    pusedict = settings._use_manager._pusedict
    for line in lines:
        try:
            atom = Atom(line.atom, allow_wildcard=True, allow_repo=True)
        except InvalidAtom:
            raise ValueError(f"invalid atom in package_use: {line.atom!r}") from None
        per_cp = pusedict.setdefault(atom.cp, {})
        per_cp[atom] = tuple(per_cp.get(atom, ())) + line.flags


def matching_package_use(pkg: Package, lines: Iterable[PackageUse]) -> tuple[str, ...]:
    flags: list[str] = []
    for line in lines:
        if match_from_list(Atom(line.atom, allow_wildcard=True, allow_repo=True), [pkg]):
            flags.extend(line.flags)
    return tuple(flags)


def _with_settings(tree, settings: portage.config):
    """A shallow copy of a tree that shares its database but carries another config."""
    clone = copy.copy(tree)
    clone.settings = settings
    return clone


def _porttree_for(tree, settings: portage.config):
    """The repositories seen through a group's config. The metadata caches (the costly part)
    and the directory listings are shared; what depends on the config is fresh: the config
    that computes a package's USE (doebuild_settings) and the visibility-dependent match
    caches. A frozen base (as emerge freezes it) gives a frozen view."""
    base = tree.dbapi
    portdb = copy.copy(base)
    portdb.settings = settings
    portdb.doebuild_settings = portage.config(clone=settings)
    portdb._doebuild_settings_lock = asyncio.Lock()
    # Fresh match caches; the copy keeps the base's _aux_cache and _better_cache (repo per
    # package), and a frozen base's listings are shared: the repositories alone decide them.
    # (Their cpvs name the dbapi that listed them first; the depgraph links each to the
    # group's own before it makes a Package of it: _emerge.depgraph._pkg.)
    portdb.xcache = {level: {} for level in base.xcache}
    if base.frozen:
        portdb.xcache["cp-list"] = base.xcache["cp-list"]
    clone = _with_settings(tree, settings)
    clone.dbapi = portdb
    return clone
