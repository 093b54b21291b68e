"""What `emerge --update --deep --newuse` would merge for a group, from Portage's own API.

One `Planner` loads Portage once (configuration, installed-package database, repositories,
PKGDIR index) and resolves any number of groups against it: each group gets its own
`portage.config` built with the group's variables in its environment (as if they had been
exported before running emerge) and its package.use lines added to that config's USE
manager, while the trees' databases are shared. Nothing under /etc/portage is touched.

Portage is imported here, so PORTAGE_OVERRIDE_EPREFIX must already be in the environment of
this process when this module is first imported; ROOT and PORTAGE_CONFIGROOT are read from
the environment given to the Planner, the way emerge reads them.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import io
import logging
import os
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import portage
import portage.output
from _emerge.actions import display_missing_pkg_set
from _emerge.create_depgraph_params import create_depgraph_params
from _emerge.depgraph import backtrack_depgraph
from _emerge.main import parse_opts
from _emerge.Package import Package
from _emerge.RootConfig import RootConfig
from _emerge.stdout_spinner import stdout_spinner
from portage._sets import load_default_config
from portage.dep import Atom, match_from_list
from portage.exception import InvalidAtom, PackageSetNotFound, PortageException
from portage.versions import vercmp

from cq_portage.emerge.forked import cpu_count, map_forked
from cq_portage.emerge.profiles import GroupProfile, PackageUse

log = logging.getLogger(__name__)

# Emerge's own options for the plan, parsed by emerge's own parser.
UPDATE_OPTIONS = ("--update", "--deep", "--newuse", "--pretend")
_ROOT_VARS = (("config_root", "PORTAGE_CONFIGROOT"), ("target_root", "ROOT"),
              ("sysroot", "SYSROOT"), ("eprefix", "EPREFIX"))

BUILD = "build"
BINARY = "binary"


@dataclass(frozen=True)
class PlanEntry:
    """One package to merge. `use` is the enabled USE within IUSE, USE_EXPAND flags as
    Portage stores them (abi_x86_64); `action` is BINARY when PKGDIR has an instance of this
    version built with exactly this USE, else BUILD."""

    cpv: str
    repo: str
    slot: str
    use: tuple[str, ...]
    iuse: tuple[str, ...]
    action: str
    operation: str  # new, new-slot, update, downgrade, reinstall
    replaces: str | None = None
    binary_build_id: int | None = None
    package_use: tuple[str, ...] = ()  # flags of the group's package_use lines matching it

    @property
    def atom(self) -> str:
        return f"={self.cpv}"


@dataclass(frozen=True)
class Plan:
    """A group's merge list, in merge order."""

    group: GroupProfile
    entries: tuple[PlanEntry, ...]
    use_expand: tuple[str, ...] = ()  # lower-case USE_EXPAND prefixes, for display
    uninstalls: tuple[str, ...] = ()  # installed packages a blocker makes emerge remove

    @property
    def builds(self) -> tuple[PlanEntry, ...]:
        return tuple(e for e in self.entries if e.action == BUILD)


class PlanError(Exception):
    """Resolution failed for a group; `report` is emerge's own explanation."""

    def __init__(self, group: str, report: str):
        self.group = group
        self.report = report.strip("\n")
        super().__init__(f"cannot plan group {group!r}:\n{self.report}")

    def __reduce__(self):  # pickled back from a planning child
        return (PlanError, (self.group, self.report))


@dataclass
class _Setup:
    """Portage's configuration and trees as emerge loads them, shared by every group."""

    environ: dict[str, str]
    trees: portage._trees_dict
    settings: portage.config = field(init=False)

    def __post_init__(self) -> None:
        self.settings = self.trees[self.trees._target_eroot]["vartree"].settings


class Planner:
    """Plans groups against one load of Portage (see the module doc)."""

    def __init__(self, environ: Mapping[str, str] | None = None):
        environ = dict(os.environ if environ is None else environ)
        portage.output.nocolor()  # its messages end up in reports and logs, not a terminal
        kwargs = {k: environ[var] for k, var in _ROOT_VARS if environ.get(var)}
        with _captured() as output:
            trees = portage.create_trees(env=environ, **kwargs)
        _log_output(output)
        self._setup = _Setup(environ=environ, trees=trees)
        self._bintree_populated = False

    @property
    def settings(self) -> portage.config:
        return self._setup.settings

    def plan(self, group: GroupProfile) -> Plan:
        trees = self._group_trees(group)
        root = trees._target_eroot
        settings = trees[root]["vartree"].settings
        argv = [*shlex.split(settings.get("EMERGE_DEFAULT_OPTS", "")), *UPDATE_OPTIONS,
                *group.packages]
        action, opts, files = parse_opts(argv, silent=True)
        params = create_depgraph_params(opts, action)
        spinner = stdout_spinner()
        spinner.mode = stdout_spinner.QUIET
        with _captured() as output:
            try:
                success, graph, _ = backtrack_depgraph(settings, trees, opts, params, action,
                                                       files, spinner)
                if not success:
                    graph.display_problems()
            except PackageSetNotFound as error:
                display_missing_pkg_set(trees[root]["root_config"], error.value)
                raise PlanError(group.name, output.getvalue()) from None
            except PortageException as error:
                raise PlanError(group.name, f"{output.getvalue()}\n!!! {error}") from None
        if not success:
            raise PlanError(group.name, output.getvalue())
        _log_output(output)
        merges, uninstalls = [], []
        for task in graph.altlist():
            if not isinstance(task, Package):
                continue
            if task.operation == "merge":
                merges.append(task)
            elif task.operation == "uninstall":
                uninstalls.append(task.cpv)
        use_expand = tuple(v.lower() for v in settings.get("USE_EXPAND", "").split())
        return Plan(group=group, entries=tuple(self._entry(pkg, trees, group) for pkg in merges),
                    use_expand=use_expand, uninstalls=tuple(uninstalls))

    def plan_all(self, groups: Iterable[GroupProfile], jobs: int | None = None
                 ) -> list[Plan | PlanError]:
        """Plans of several groups, in order, a PlanError in place of a failed one. With
        more than one group and CPU, groups are resolved in forked children that share
        this Planner's loaded Portage (see forked.py)."""
        groups = list(groups)
        jobs = min(len(groups), cpu_count() if jobs is None else jobs)
        if jobs <= 1:
            results: list[Plan | PlanError] = []
            for group in groups:
                try:
                    results.append(self.plan(group))
                except PlanError as error:
                    results.append(error)
            return results
        self._populate_bintree()  # once, before the children copy this process
        return map_forked(self.plan, groups, jobs, expected=(PlanError,))

    def _group_trees(self, group: GroupProfile) -> portage._trees_dict:
        """The shared trees, with the target root's config replaced by the group's."""
        base = self._setup.trees
        target = base._target_eroot
        environ = _group_environ(self._setup.environ, group)
        base_settings = self._setup.settings
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

    def _entry(self, pkg: Package, trees: portage._trees_dict, group: GroupProfile
               ) -> PlanEntry:
        iuse = tuple(sorted(pkg.iuse.all))
        use = tuple(sorted(pkg.use.enabled & pkg.iuse.all))
        operation, replaces = _operation(pkg, trees[pkg.root]["vartree"].dbapi)
        build_id = self._binary_instance(pkg, set(iuse), set(use))
        return PlanEntry(cpv=str(pkg.cpv), repo=pkg.repo, slot=pkg.slot, use=use, iuse=iuse,
                         action=BUILD if build_id is None else BINARY, operation=operation,
                         replaces=replaces, binary_build_id=build_id,
                         package_use=_matching_package_use(pkg, group.package_use))

    def _populate_bintree(self) -> None:
        if not self._bintree_populated:
            with _captured() as output:
                self._setup.trees[self._setup.trees._target_eroot]["bintree"].populate()
            _log_output(output)
            self._bintree_populated = True

    def _binary_instance(self, pkg: Package, iuse: set[str], use: set[str]) -> int | None:
        """BUILD_ID of a PKGDIR instance of pkg's version with the same IUSE and enabled
        USE (the check --binpkg-respect-use=y makes), or None."""
        self._populate_bintree()
        bindb = self._setup.trees[pkg.root]["bintree"].dbapi
        for instance in bindb.match(Atom(f"={pkg.cpv}")):
            bin_iuse_text, bin_use_text, repo = bindb.aux_get(instance,
                                                              ["IUSE", "USE", "repository"])
            bin_iuse = {flag.lstrip("+-") for flag in bin_iuse_text.split()}
            if repo and repo != pkg.repo or bin_iuse != iuse:
                continue
            if set(bin_use_text.split()) & bin_iuse == use:
                return getattr(instance, "build_id", None) or 0
        return None


def _group_environ(base: Mapping[str, str], group: GroupProfile) -> dict[str, str]:
    """The process environment with the group's variables exported on top, the way
    `USE=... ABI_X86=... emerge` sees them (USE is incremental, so it adds to make.conf)."""
    environ = dict(base)
    for key, value in group.portage_env().items():
        environ[key] = value
    return environ


def _add_package_use(settings: portage.config, lines: Iterable[PackageUse]) -> None:
    """Add a group's package.use lines after the user's own (so they win), in the config's
    private USE manager: the only way to add package.use without writing a file."""
    lines = list(lines)
    if not lines:
        return
    # A config built from scratch owns its UseManager; clones would share it.
    pusedict = settings._use_manager._pusedict
    for line in lines:
        try:
            atom = Atom(line.atom, allow_wildcard=True, allow_repo=True)
        except InvalidAtom:
            raise ValueError(f"invalid atom in package_use: {line.atom!r}") from None
        per_cp = pusedict.setdefault(atom.cp, {})
        per_cp[atom] = tuple(per_cp.get(atom, ())) + line.flags


def _matching_package_use(pkg: Package, lines: Iterable[PackageUse]) -> tuple[str, ...]:
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
    are shared; what depends on the config is fresh: the config that computes a package's
    USE (doebuild_settings) and the visibility-dependent match cache."""
    portdb = copy.copy(tree.dbapi)
    portdb.settings = settings
    portdb.doebuild_settings = portage.config(clone=settings)
    portdb._doebuild_settings_lock = asyncio.Lock()
    portdb.xcache = {}
    portdb._better_cache = None
    clone = _with_settings(tree, settings)
    clone.dbapi = portdb
    return clone


def _operation(pkg: Package, vardb) -> tuple[str, str | None]:
    in_slot = vardb.match(Atom(f"{pkg.cp}:{pkg.slot}"))
    if not in_slot:
        return ("new-slot" if vardb.match(Atom(pkg.cp)) else "new"), None
    installed = in_slot[-1]
    order = vercmp(pkg.version, installed.version)
    if order > 0:
        return "update", str(installed)
    if order < 0:
        return "downgrade", str(installed)
    return "reinstall", str(installed)


@contextlib.contextmanager
def _captured():
    """Collect what Portage prints (it writes to sys.stdout/sys.stderr at call time)."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
        yield buffer


def _log_output(buffer: io.StringIO) -> None:
    text = buffer.getvalue().strip()
    if text:
        log.debug("portage said:\n%s", text)
