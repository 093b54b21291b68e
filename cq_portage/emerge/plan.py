"""What `emerge --update --deep --newuse --usepkg --binpkg-respect-use=y` would merge for a
group, from Portage's own API: Portage's resolver decides each package's binary or build, with
all of its rules for rejecting a binary package (USE, IUSE, sub-slots of built slot-operator
deps, --usepkg-exclude, user patches, SLOT, KEYWORDS, changed deps); nothing here second-guesses it.

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

import contextlib
import functools
import io
import logging
import os
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import portage
import portage.const
import portage.output
from _emerge.actions import display_missing_pkg_set
from _emerge.create_depgraph_params import create_depgraph_params
from _emerge.depgraph import backtrack_depgraph
from _emerge.main import parse_opts
from _emerge.Package import Package
from _emerge.stdout_spinner import stdout_spinner
from portage.dep import Atom
from portage.exception import PackageSetNotFound, ParseError, PortageException
from portage.versions import vercmp

from cq_portage.emerge.binhost import (BUILD as ON_UNREACHABLE_BUILD, FAIL, INSTALL_VARS,
                                       BinhostUnreachable, cached_index, fetch_failures)
from cq_portage.emerge.forked import cpu_count, map_forked
from cq_portage.emerge.group_view import group_trees, matching_package_use
from cq_portage.emerge.profiles import GroupProfile

log = logging.getLogger(__name__)

# Emerge's own options for the plan, parsed by emerge's own parser.
UPDATE_OPTIONS = ("--update", "--deep", "--newuse", "--usepkg", "--binpkg-respect-use=y",
                  "--pretend")
_ROOT_VARS = (("config_root", "PORTAGE_CONFIGROOT"), ("target_root", "ROOT"),
              ("sysroot", "SYSROOT"), ("eprefix", "EPREFIX"))

BUILD = "build"
BINARY = "binary"


@dataclass(frozen=True)
class PlanEntry:
    """One package to merge. `use` is the enabled USE within IUSE, USE_EXPAND flags as
    Portage stores them (abi_x86_64); `action` is BINARY when Portage's resolver took a
    binary package (instance `binary_build_id`), else BUILD."""

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
    depends: tuple[str, ...] = ()  # cpvs of earlier entries it needs (build or run time)
    # cp:SLOT/SUB_SLOT its slot-operator (:=) deps resolved to: what a build is made against
    built_against: tuple[str, ...] = ()
    # cpvs that must be merged in the same emerge: a library whose new sub-slot forces
    # rebuilds, and those rebuilds (installing one without the others is a slot conflict)
    merge_with: tuple[str, ...] = ()

    @property
    def qualified_cpv(self) -> str:
        return f"{self.cpv}::{self.repo}"

    @property
    def atom(self) -> str:
        return f"={self.qualified_cpv}"

    @property
    def instance_atom(self) -> str:
        """The instance the plan took, or its build made, by build id when it has one."""
        if self.binary_build_id:
            return f"={self.cpv}-{self.binary_build_id}::{self.repo}"
        return self.atom


@dataclass(frozen=True)
class Plan:
    """A group's merge list, in merge order."""

    group: GroupProfile
    entries: tuple[PlanEntry, ...]
    use_expand: tuple[str, ...] = ()  # lower-case USE_EXPAND prefixes, for display
    uninstalls: tuple[str, ...] = ()  # installed packages a blocker makes emerge remove
    # With FEATURES=getbinpkg: this host's cached copies of the binhosts' indexes (an
    # install drops them to see a build that just ended, see binhost.py) and the variables
    # the install exports so that its emerge sees the binhosts as the plan did.
    binhost_indexes: tuple[str, ...] = ()
    install_env: tuple[tuple[str, str], ...] = ()
    # needs() of the entries asked so far (builds, when jobs are made)
    _needs: dict[str, tuple[PlanEntry, ...]] = field(default_factory=dict, init=False,
                                                     repr=False, compare=False)

    @functools.cached_property
    def _by_cpv(self) -> dict[str, PlanEntry]:
        return {e.cpv: e for e in self.entries}

    def needs(self, entry: PlanEntry) -> tuple[PlanEntry, ...]:
        """The entries `entry` needs, directly or through others, in merge order (asked
        several times per build while jobs are made: computed once)."""
        if (known := self._needs.get(entry.cpv)) is not None:
            return known
        by_cpv = self._by_cpv
        found: set[str] = set()
        stack = list(entry.depends)
        while stack:
            cpv = stack.pop()
            if cpv not in found and cpv in by_cpv:
                found.add(cpv)
                stack.extend(by_cpv[cpv].depends)
        needs = self._needs[entry.cpv] = tuple(e for e in self.entries if e.cpv in found)
        return needs

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


class PortageSetupError(Exception):
    """Portage could not load its configuration (EPREFIX, ROOT, PORTAGE_CONFIGROOT)."""

    def __init__(self, problem: str, output: str = ""):
        self.problem = problem
        self.output = output.strip("\n")
        super().__init__(problem)


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

    def __init__(self, environ: Mapping[str, str] | None = None, unreachable: str = FAIL):
        """`unreachable`: what an unreachable binhost does to planning: FAIL (raise
        BinhostUnreachable) or BUILD (plan from the local PKGDIR, warning once)."""
        environ = dict(os.environ if environ is None else environ)
        self._unreachable = unreachable
        self._binhost_indexes: tuple[str, ...] = ()
        portage.output.nocolor()  # its messages end up in reports and logs, not a terminal
        kwargs = {k: environ[var] for k, var in _ROOT_VARS if environ.get(var)}
        with _captured() as output:
            try:
                trees = portage.create_trees(env=environ, **kwargs)
                for root_trees in trees.values():
                    # As emerge does before it resolves: memoizes metadata and matches for
                    # the run (without it every group re-reads the metadata cache).
                    root_trees["porttree"].dbapi.freeze()
                self._setup = _Setup(environ=environ, trees=trees)
            except Exception as error:  # noqa: BLE001 - a broken setup fails in many ways
                where = ", ".join(f"{var}={environ[var]}" for _, var in _ROOT_VARS
                                  if environ.get(var)) or f"EPREFIX={portage.const.EPREFIX}"
                raise PortageSetupError(f"{type(error).__name__}: {error} ({where})",
                                        output.getvalue()) from None
        _log_output(output)
        if not self.settings.profiles:
            raise PortageSetupError(
                "no profile: make.profile is missing or broken in "
                f"{self.settings['PORTAGE_CONFIGROOT'].rstrip('/')}/etc/portage",
                output.getvalue())
        self._bintree_populated = False

    @property
    def settings(self) -> portage.config:
        return self._setup.settings

    def plan(self, group: GroupProfile) -> Plan:
        self._populate_bintree()
        with _captured() as output:
            trees = group_trees(self._setup.trees, self._setup.environ, group)
            root = trees._target_eroot
            settings = trees[root]["vartree"].settings
            argv = [*shlex.split(settings.get("EMERGE_DEFAULT_OPTS", "")), *UPDATE_OPTIONS,
                    *group.packages]
            action, opts, files = parse_opts(argv, silent=True)
            params = create_depgraph_params(opts, action)
            spinner = stdout_spinner()
            spinner.mode = stdout_spinner.QUIET
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
        tasks = [task for task in graph.altlist() if isinstance(task, Package)]
        merges = [task for task in tasks if task.operation == "merge"]
        uninstalls = tuple(task.cpv for task in tasks if task.operation == "uninstall")
        use_expand = tuple(v.lower() for v in settings.get("USE_EXPAND", "").split())
        depends = _plan_dependencies(graph, merges)
        against = _built_against(graph, merges)
        merge_with = _merge_sets(graph, merges)
        return Plan(group=group,
                    entries=tuple(self._entry(pkg, trees, group, depends[pkg], against[pkg],
                                              merge_with[pkg]) for pkg in merges),
                    use_expand=use_expand, uninstalls=uninstalls,
                    binhost_indexes=self._binhost_indexes,
                    install_env=tuple((k, self._setup.environ[k]) for k in INSTALL_VARS
                                      if self._binhost_indexes and self._setup.environ.get(k)))

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
        self._warm_shared_caches()
        return map_forked(self.plan, groups, jobs, expected=(PlanError,))

    def _warm_shared_caches(self) -> None:
        """Load, once and before forking, what every group's resolution reads: the PKGDIR
        index, the installed packages' metadata and the repository metadata of their
        packages. Children inherit it instead of each reading it from disk again."""
        self._populate_bintree()
        root_trees = self._setup.trees[self._setup.trees._target_eroot]
        vardb, portdb = root_trees["vartree"].dbapi, root_trees["porttree"].dbapi
        with _captured() as output:
            for cpv in vardb.cpv_all():
                vardb.aux_get(cpv, list(vardb._aux_cache_keys))
            for cp in vardb.cp_all():
                for cpv in portdb.cp_list(cp):
                    portdb.aux_get(cpv, list(portdb._aux_cache_keys))
        _log_output(output)

    def _entry(self, pkg: Package, trees: portage._trees_dict, group: GroupProfile,
               depends: tuple[str, ...], built_against: tuple[str, ...],
               merge_with: tuple[str, ...]) -> PlanEntry:
        operation, replaces = _operation(pkg, trees[pkg.root]["vartree"].dbapi)
        binary = pkg.type_name == "binary"
        return PlanEntry(cpv=str(pkg.cpv), repo=pkg.repo, slot=pkg.slot,
                         use=tuple(sorted(pkg.use.enabled & pkg.iuse.all)),
                         iuse=tuple(sorted(pkg.iuse.all)),
                         action=BINARY if binary else BUILD, operation=operation,
                         replaces=replaces,
                         binary_build_id=(pkg.cpv.build_id or 0) if binary else None,
                         package_use=matching_package_use(pkg, group.package_use),
                         depends=depends, built_against=built_against,
                         merge_with=merge_with)

    def _populate_bintree(self) -> None:
        """Read PKGDIR's index, and with FEATURES=getbinpkg the binhosts' indexes (fresh
        ones: getbinpkg_refresh, as emerge's own populate before it resolves), so the
        resolver sees their instances as `emerge --getbinpkg` does. pretend=True as for
        `emerge -p`: the trust helper (getuto) is the install's business."""
        if self._bintree_populated:
            return
        bintree = self._setup.trees[self._setup.trees._target_eroot]["bintree"]
        getbinpkgs = "getbinpkg" in self.settings.features
        with _captured() as output:
            try:
                bintree.populate(getbinpkgs=getbinpkgs, getbinpkg_refresh=True, pretend=True)
            except ParseError as error:  # a sync-uri Portage cannot use
                raise BinhostUnreachable(f"binhost: {str(error).strip()}") from None
        _log_output(output)
        failures = fetch_failures(output.getvalue()) if getbinpkgs else []
        if failures and self._unreachable != ON_UNREACHABLE_BUILD:
            raise BinhostUnreachable(f"{failures[0]}; to plan from the local PKGDIR alone "
                                     "(building what it lacks) set binhost.unreachable: build")
        if failures:
            log.warning("%s: planning from the local PKGDIR only (binhost.unreachable: "
                        "build)", failures[0])
            with _captured() as output:
                bintree.populate(getbinpkgs=False)
            _log_output(output)
        elif getbinpkgs:
            repos = getattr(bintree, "_binrepos_conf", None) or {}
            self._binhost_indexes = tuple(
                str(cached_index(self.settings["EROOT"], repo.sync_uri))
                for repo in repos.values() if repo.sync_uri)
        self._bintree_populated = True


def _plan_dependencies(graph, merges: list[Package]) -> dict[Package, tuple[str, ...]]:
    """For each merge, the other merges it depends on in the depgraph, looking through
    packages that stay installed (A needs installed B, which needs updated C: A needs C).
    cq-emerge installs an entry only after these, and skips it when one of them failed."""
    digraph = graph._dynamic_config.digraph
    in_plan = {pkg: str(pkg.cpv) for pkg in merges}
    result = {}
    for pkg in merges:
        found, seen, stack = set(), {pkg}, list(digraph.child_nodes(pkg))
        while stack:
            node = stack.pop()
            if node in seen or not isinstance(node, Package):
                continue
            seen.add(node)
            if node in in_plan:
                found.add(in_plan[node])
            else:
                stack.extend(digraph.child_nodes(node))
        result[pkg] = tuple(sorted(found))
    return result


def _built_against(graph, merges: list[Package]) -> dict[Package, tuple[str, ...]]:
    """For each merge, the slot and sub-slot each of its slot-operator deps resolved to:
    the part of what a package is built against that its binary package records (and
    that makes Portage reject a binary built against another sub-slot)."""
    found: dict[Package, set[str]] = {pkg: set() for pkg in merges}
    for deps in graph._dynamic_config._slot_operator_deps.values():
        for dep in deps:
            if dep.parent in found and isinstance(dep.child, Package):
                child = dep.child
                found[dep.parent].add(f"{child.cp}:{child.slot}/{child.sub_slot}")
    return {pkg: tuple(sorted(against)) for pkg, against in found.items()}


def _merge_sets(graph, merges: list[Package]) -> dict[Package, tuple[str, ...]]:
    """For each merge, the other merges that must go in the same emerge: a package whose
    update forces slot-operator rebuilds and those rebuilds, as Portage reports them
    ("X causes rebuilds for Y"), joined transitively."""
    graph._compute_abi_rebuild_info()
    in_plan = {pkg: str(pkg.cpv) for pkg in merges}
    joined: dict[str, set[str]] = {cpv: {cpv} for cpv in in_plan.values()}
    for per_root in graph._forced_rebuilds.values():
        for cause, rebuilt in per_root.items():
            members = [in_plan[p] for p in (cause, *rebuilt) if p in in_plan]
            union = set().union(*(joined[m] for m in members)) if members else set()
            for member in union:
                joined[member] = union
    return {pkg: tuple(sorted(joined[cpv] - {cpv})) for pkg, cpv in in_plan.items()}


def _operation(pkg: Package, vardb) -> tuple[str, str | None]:
    in_slot = vardb.match(Atom(f"{pkg.cp}:{pkg.slot}"))
    if not in_slot:
        return ("new-slot" if vardb.match(Atom(pkg.cp)) else "new"), None
    installed = in_slot[-1]
    order = vercmp(pkg.version, installed.version)
    return ("update" if order > 0 else "downgrade" if order < 0 else "reinstall"), str(installed)


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
