"""Plans -> build jobs: one per package instance that needs a build, duplicates merged.

Two requests are the same work when they would produce the same binary package: same
version from the same repository, same enabled USE (USE_EXPAND flags such as abi_x86_32
included), same other build variables (CFLAGS and the like) and the same build command.
The dedupe key spells exactly that out, sorted, so it is stable across hosts and runs.
"""

from __future__ import annotations

import heapq
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from cq_portage.emerge.plan import Plan, PlanEntry

ATOM_PLACEHOLDER = "{atom}"


@dataclass(frozen=True)
class BuildJob:
    """What the build host runs for one package instance, and who asked for it."""

    key: str
    cpv: str
    repo: str
    use: tuple[str, ...]
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...]  # first requesting group's variables, flags pinned
    groups: tuple[str, ...]
    labels: tuple[str, ...] = ()  # what the build host must have (the group's build_labels)

    @property
    def environment(self) -> dict[str, str]:
        return dict(self.env)

    def to_json(self) -> dict:
        return {"key": self.key, "cpv": self.cpv, "repo": self.repo, "use": list(self.use),
                "argv": list(self.argv), "env": self.environment, "groups": list(self.groups),
                "labels": list(self.labels)}


def entry_environment(plan: Plan, entry: PlanEntry) -> dict[str, str]:
    """The group's variables, with the entry's package_use flags put before the group's USE
    (later USE words win, so this keeps the plan's precedence: group USE over package_use)."""
    env = plan.group.portage_env()
    if entry.package_use:
        env["USE"] = " ".join((*entry.package_use, env.get("USE", ""))).strip()
    return env


def build_environment(plan: Plan, entry: PlanEntry) -> dict[str, str]:
    """The job's variables: the group's, then every IUSE flag of the package pinned to the
    plan's value, so the build host's own make.conf or package.use cannot make an instance
    other than the one the client planned (and --binpkg-respect-use would then refuse).
    USE_EXPAND flags are pinned through their variable ("-*" resets its incremental value):
    Portage takes them from ABI_X86 and the like, not from USE."""
    env = entry_environment(plan, entry)
    enabled = set(entry.use)
    plain, expanded = [], {}
    for flag in sorted(entry.iuse):
        prefix = next((p for p in plan.use_expand if flag.startswith(p + "_")), None)
        if prefix is None:
            plain.append(flag if flag in enabled else f"-{flag}")
        elif flag in enabled:
            expanded.setdefault(prefix.upper(), []).append(flag[len(prefix) + 1:])
        else:
            expanded.setdefault(prefix.upper(), [])
    words = env.get("USE", "").split()
    last = {word.lstrip("-"): word for word in words}  # what the group's USE already says
    plain = [pin for pin in plain if last.get(pin.lstrip("-")) != pin]
    if plain:
        env["USE"] = " ".join((*words, *plain))
    for variable, values in expanded.items():
        env[variable] = " ".join(("-*", *values))
    return env


def build_argv(command: Iterable[str], entry: PlanEntry) -> tuple[str, ...]:
    atom = f"={entry.cpv}::{entry.repo}"
    command = tuple(command)
    if ATOM_PLACEHOLDER in command:
        return tuple(atom if arg == ATOM_PLACEHOLDER else arg for arg in command)
    return (*command, atom)


def dedupe_key(entry: PlanEntry, env: Mapping[str, str], argv: Iterable[str],
               use_expand: Iterable[str], labels: Iterable[str] = ()) -> str:
    """cpv::repo, the enabled USE, the variables that change a build but not USE, argv, and
    the build host labels if any (another architecture is another package). USE and
    USE_EXPAND variables are left out: their effect is the enabled USE itself."""
    reflected = {"USE", *(name.upper() for name in use_expand)}
    other = sorted((k, v) for k, v in env.items() if k not in reflected)
    labels = sorted(labels)
    return " ".join([f"{entry.cpv}::{entry.repo}",
                     "USE=" + ",".join(sorted(entry.use)),
                     *(f"{k}={shlex.quote(v)}" for k, v in other),
                     "CMD=" + shlex.join(argv),
                     *(["LABELS=" + ",".join(labels)] if labels else [])])


def entry_key(plan: Plan, entry: PlanEntry) -> str:
    """The dedupe key of the build a plan entry needs."""
    env = build_environment(plan, entry)
    return dedupe_key(entry, env, build_argv(plan.group.build_command, entry), plan.use_expand,
                      plan.group.build_labels)


def build_jobs(plans: Iterable[Plan]) -> list[BuildJob]:
    """The deduplicated build jobs of all plans, in an order that keeps every plan's own
    merge order (a topological order of "comes before in some plan", ties broken by first
    appearance); should plans disagree (a cycle), first appearance decides."""
    jobs: dict[str, BuildJob] = {}
    first_seen: dict[str, int] = {}
    after: dict[str, set[str]] = {}
    for plan in plans:
        previous: str | None = None
        for entry in plan.builds:
            env = build_environment(plan, entry)
            argv = build_argv(plan.group.build_command, entry)
            key = dedupe_key(entry, env, argv, plan.use_expand, plan.group.build_labels)
            if key in jobs:
                job = jobs[key]
                if plan.group.name not in job.groups:
                    jobs[key] = BuildJob(**{**job.__dict__,
                                            "groups": (*job.groups, plan.group.name)})
            else:
                first_seen[key] = len(first_seen)
                after[key] = set()
                jobs[key] = BuildJob(key=key, cpv=entry.cpv, repo=entry.repo, use=entry.use,
                                     argv=argv, env=tuple(sorted(env.items())),
                                     groups=(plan.group.name,),
                                     labels=plan.group.build_labels)
            if previous is not None and previous != key:
                after[key].add(previous)
            previous = key
    return [jobs[key] for key in _ordered(first_seen, after)]


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
