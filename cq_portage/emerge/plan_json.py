"""Plans as JSON and back: what `cq-emerge --pretend --json` prints is enough for another
host (fleet mode's admin host) to rebuild the Plan, and from it the same build jobs, dedupe
keys and install scripts, without a Portage of its own.

Each plan carries its group's profile as the planning host saw it (its own config wins) and
its USE_EXPAND prefixes; each entry its IUSE, package_use flags, plan dependencies and the
dedupe key of its build, which the reader recomputes to catch a cq-portage of another
version on the other side.
"""

from __future__ import annotations

from typing import Any

from cq_portage.emerge.jobs import entry_key
from cq_portage.emerge.plan import BINARY, BUILD, Plan, PlanEntry
from cq_portage.emerge.profiles import GroupProfile, PackageUse


class PlanFormatError(ValueError):
    """A plan document that cannot be read back; the message says what is wrong."""


def profile_to_json(group: GroupProfile) -> dict:
    return {"use": list(group.use),
            "abi_x86": None if group.abi_x86 is None else list(group.abi_x86),
            "env": dict(group.env), "packages": list(group.packages),
            "package_use": [str(line) for line in group.package_use],
            "build_command": list(group.build_command),
            "build_labels": list(group.build_labels)}


def plan_to_json(plan: Plan) -> dict:
    return {"group": plan.group.name,
            "profile": profile_to_json(plan.group),
            "use_expand": list(plan.use_expand),
            "packages": [{"cpv": e.cpv, "repo": e.repo, "slot": e.slot, "use": list(e.use),
                          "iuse": list(e.iuse), "action": e.action,
                          "build_id": e.binary_build_id, "operation": e.operation,
                          "replaces": e.replaces, "package_use": list(e.package_use),
                          "depends": list(e.depends),
                          "built_against": list(e.built_against),
                          "merge_with": list(e.merge_with),
                          "key": None if e.action == BINARY else entry_key(plan, e)}
                         for e in plan.entries],
            "uninstalls": list(plan.uninstalls),
            "binhost_indexes": list(plan.binhost_indexes),
            "install_env": dict(plan.install_env)}


def profile_from_json(name: str, doc: dict) -> GroupProfile:
    abi = doc.get("abi_x86")
    return GroupProfile(name=name, use=tuple(doc.get("use", ())),
                        abi_x86=None if abi is None else tuple(abi),
                        env=dict(doc.get("env", {})),
                        packages=tuple(doc.get("packages", ("@world",))),
                        package_use=tuple(PackageUse(atom, tuple(flags)) for atom, *flags
                                          in map(str.split, doc.get("package_use", []))),
                        build_command=tuple(doc["build_command"]),
                        build_labels=tuple(doc.get("build_labels", ())))


def plan_from_json(doc: Any) -> Plan:
    """The Plan a plan_to_json() document describes; PlanFormatError if it is not one
    (fields missing: a cq-emerge too old to say them) or its keys differ from ours."""
    try:
        group = profile_from_json(doc["group"], doc["profile"])
        entries = tuple(PlanEntry(
            cpv=p["cpv"], repo=p["repo"], slot=p["slot"], use=tuple(p["use"]),
            iuse=tuple(p["iuse"]), action=p["action"], operation=p["operation"],
            replaces=p.get("replaces"), binary_build_id=p.get("build_id"),
            package_use=tuple(p.get("package_use", ())), depends=tuple(p["depends"]),
            built_against=tuple(p["built_against"]), merge_with=tuple(p["merge_with"]))
            for p in doc["packages"])
        plan = Plan(group=group, entries=entries, use_expand=tuple(doc["use_expand"]),
                    uninstalls=tuple(doc.get("uninstalls", ())),
                    binhost_indexes=tuple(map(str, doc.get("binhost_indexes", ()))),
                    install_env=tuple((str(k), str(v)) for k, v in
                                      dict(doc.get("install_env", {})).items()))
        said = [p["key"] for p in doc["packages"]]
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise PlanFormatError(f"not a plan of this cq-emerge version ({type(e).__name__}: "
                              f"{e}); is cq-portage up to date there?") from None
    for entry, key in zip(plan.entries, said):
        if entry.action not in (BINARY, BUILD):
            raise PlanFormatError(f"unknown action {entry.action!r} for {entry.cpv}")
        if entry.action == BUILD and key != entry_key(plan, entry):
            raise PlanFormatError(f"the build key of {entry.cpv} differs from this host's "
                                  "(another cq-portage version there?)")
    return plan
