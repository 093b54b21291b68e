"""Plans -> build jobs: one per package instance that needs a build, duplicates merged.

A job builds one package in its group's build root (`cq-build-root run GROUP -- ...`, see
cq_portage/buildroot): the root first gets the plan's versions of everything the package
needs (from their binary packages: the jobs that build them run before, `after`), then the
package is built against exactly those, with `emerge --buildpkg`. Every USE decision of the
plan travels as package.use lines (CQ_PACKAGE_USE): exported USE or USE_EXPAND variables would
override package.use (USE_ORDER), so a job exports only the group's other variables.

Two requests are the same work when they would produce the same binary package: same
version from the same repository, same enabled USE (USE_EXPAND flags such as abi_x86_32
included), same sub-slots of its slot-operator deps (which its binary package records), same
other build variables (CFLAGS and the like) and the same build command; not the group or its
root. The dedupe key spells exactly that out, sorted, so it is stable across hosts and runs.
"""

from __future__ import annotations

import hashlib
import heapq
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from portage.versions import cpv_getkey

from cq_portage.emerge.plan import Plan, PlanEntry

ATOM_PLACEHOLDER = "{atom}"
PACKAGE_PLACEHOLDER = "{package}"
BUILD_ROOT_COMMAND = ("cq-build-root", "run")
PACKAGE_USE_VAR = "CQ_PACKAGE_USE"  # package.use lines the build root applies to the job


@dataclass(frozen=True)
class BuildJob:
    """What the build host runs for one package instance, and who asked for it."""

    key: str
    cpv: str
    repo: str
    use: tuple[str, ...]
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...]  # first requesting group's variables and USE lines
    groups: tuple[str, ...]
    labels: tuple[str, ...] = ()  # what the build host must have (the group's build_labels)
    after: tuple[str, ...] = ()  # keys of the builds that must have ended well before

    @property
    def environment(self) -> dict[str, str]:
        return dict(self.env)

    def to_json(self) -> dict:
        return {"key": self.key, "cpv": self.cpv, "repo": self.repo, "use": list(self.use),
                "argv": list(self.argv), "env": self.environment, "groups": list(self.groups),
                "labels": list(self.labels), "after": list(self.after)}


def entry_environment(plan: Plan, entry: PlanEntry) -> dict[str, str]:
    """The group's variables, with the entry's package_use flags put before the group's USE
    (later USE words win, so this keeps the plan's precedence: group USE over package_use).
    What an install exports so that emerge computes the plan's USE."""
    env = plan.group.portage_env()
    if entry.package_use:
        env["USE"] = " ".join((*entry.package_use, env.get("USE", ""))).strip()
    return env


def _use_expanded(variable: str, use_expand: Iterable[str]) -> bool:
    return variable == "USE" or variable.lower() in use_expand


def _pin(entry: PlanEntry) -> str:
    """A package.use line giving `entry` exactly its planned USE (every IUSE flag)."""
    enabled = set(entry.use)
    return " ".join((entry.atom, *(f if f in enabled else f"-{f}" for f in sorted(entry.iuse))))


def package_use_lines(plan: Plan, entry: PlanEntry) -> str:
    """The group's flags for any package the build pulls in (its USE and USE_EXPAND
    variables as `*/*` lines, then its package_use), then a pin for every package the job
    names, so the build root's own config cannot make another instance than planned."""
    lines = []
    for variable, value in plan.group.portage_env().items():
        if variable == "USE":
            lines.append(f"*/* {value}")
        elif _use_expanded(variable, plan.use_expand):  # an exported one replaces
            lines.append(f"*/* {variable}: -* {value}".rstrip())
    lines.extend(str(line) for line in plan.group.package_use)
    lines.extend(_pin(e) for e in (*plan.needs(entry), entry))
    return "\n".join(lines)


def build_environment(plan: Plan, entry: PlanEntry) -> dict[str, str]:
    env = {k: v for k, v in plan.group.portage_env().items()
           if not _use_expanded(k, plan.use_expand)}
    env[PACKAGE_USE_VAR] = package_use_lines(plan, entry)
    return env


def build_command(plan: Plan, entry: PlanEntry) -> tuple[str, ...]:
    """The group's build command (run inside its root) with the atoms of what the entry
    needs, then its own, in place of "{atom}" or at the end; "{package}" in an argument
    becomes the entry's CATEGORY/PN:SLOT."""
    atoms = tuple(e.atom for e in (*plan.needs(entry), entry))
    package = f"{cpv_getkey(entry.cpv)}:{entry.slot}"
    command = tuple(arg.replace(PACKAGE_PLACEHOLDER, package)
                    for arg in plan.group.build_command)
    if ATOM_PLACEHOLDER in command:
        at = command.index(ATOM_PLACEHOLDER)
        return (*command[:at], *atoms, *command[at + 1:])
    return (*command, *atoms)


def build_argv(plan: Plan, entry: PlanEntry) -> tuple[str, ...]:
    return (*BUILD_ROOT_COMMAND, plan.group.name, "--", *build_command(plan, entry))


def dedupe_key(entry: PlanEntry, env: Mapping[str, str], command: Iterable[str],
               use_expand: Iterable[str], labels: Iterable[str] = ()) -> str:
    """cpv::repo, the enabled USE, the sub-slots it is built against, the variables that
    change a build but not USE, the build command, and the build host labels if any
    (another architecture is another package). The USE variables and package.use lines are
    left out, their effect is the enabled USE; so are the group and its root."""
    use_expand = tuple(use_expand)
    other = sorted((k, v) for k, v in env.items()
                   if k != PACKAGE_USE_VAR and not _use_expanded(k, use_expand))
    labels = sorted(labels)
    return " ".join([entry.qualified_cpv,
                     "USE=" + ",".join(sorted(entry.use)),
                     *(["AGAINST=" + ",".join(entry.built_against)]
                       if entry.built_against else []),
                     *(f"{k}={shlex.quote(v)}" for k, v in other),
                     "CMD=" + shlex.join(command),
                     *(["LABELS=" + ",".join(labels)] if labels else [])])


def wire_key(key: str) -> str:
    """The dedupe key as sent to the server: readable, and short whatever the variables."""
    return f"{key.split(' ', 1)[0]} {hashlib.sha256(key.encode()).hexdigest()[:32]}"


def entry_key(plan: Plan, entry: PlanEntry, env: Mapping[str, str] | None = None) -> str:
    """The dedupe key of the build a plan entry needs (`env`: its build_environment)."""
    return dedupe_key(entry, build_environment(plan, entry) if env is None else env,
                      plan.group.build_command, plan.use_expand, plan.group.build_labels)


def build_jobs(plans: Iterable[Plan]) -> list[BuildJob]:
    """The deduplicated build jobs of all plans, in an order that keeps every plan's own
    merge order (a topological order of "comes before in some plan", ties broken by first
    appearance); should plans disagree (a cycle), first appearance decides."""
    jobs: dict[str, BuildJob] = {}
    first_seen: dict[str, int] = {}
    order_after: dict[str, set[str]] = {}
    for plan in plans:
        envs = {e.cpv: build_environment(plan, e) for e in plan.builds}  # once an entry
        keys = {e.cpv: entry_key(plan, e, envs[e.cpv]) for e in plan.builds}
        previous: str | None = None
        for entry in plan.builds:
            key = keys[entry.cpv]
            after = tuple(keys[e.cpv] for e in plan.needs(entry) if e.cpv in keys)
            if key in jobs:
                job = jobs[key]
                jobs[key] = replace(job, groups=tuple(dict.fromkeys((*job.groups,
                                                                     plan.group.name))),
                                    after=tuple(dict.fromkeys((*job.after, *after))))
            else:
                first_seen[key] = len(first_seen)
                order_after[key] = set()
                jobs[key] = BuildJob(key=key, cpv=entry.cpv, repo=entry.repo, use=entry.use,
                                     argv=build_argv(plan, entry),
                                     env=tuple(sorted(envs[entry.cpv].items())),
                                     groups=(plan.group.name,),
                                     labels=plan.group.build_labels, after=after)
            order_after[key].update(after)
            if previous is not None and previous != key:
                order_after[key].add(previous)
            previous = key
    order = _ordered(first_seen, order_after)
    # Should plans disagree about an order (a cycle), a job never waits for a later one.
    position = {key: at for at, key in enumerate(order)}
    return [replace(jobs[key], after=tuple(a for a in jobs[key].after
                                           if position[a] < position[key]))
            for key in order]


def _ordered(first_seen: dict[str, int], after: dict[str, set[str]]) -> list[str]:
    waiting = {key: set(before) for key, before in after.items()}
    users: dict[str, list[str]] = {key: [] for key in after}
    for key, before in after.items():
        for dependency in before:
            users[dependency].append(key)
    ready = [(first_seen[k], k) for k, before in waiting.items() if not before]
    heapq.heapify(ready)
    order: list[str] = []
    done: set[str] = set()
    while len(order) < len(first_seen):
        if not ready:  # a cycle: release the earliest-seen waiting job
            key = min((k for k in waiting if k not in done), key=first_seen.__getitem__)
            waiting[key].clear()
            heapq.heappush(ready, (first_seen[key], key))
        _, key = heapq.heappop(ready)
        if key in done:
            continue
        order.append(key)
        done.add(key)
        for user in users[key]:
            waiting[user].discard(key)
            if not waiting[user] and user not in done:
                heapq.heappush(ready, (first_seen[user], user))
    return order
