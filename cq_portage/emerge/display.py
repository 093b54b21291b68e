"""Plans and jobs printed the way emerge prints a merge list ([ebuild]/[binary] lines)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from cq_portage.emerge.jobs import BuildJob
from cq_portage.emerge.plan import BINARY, Plan, PlanEntry

_OPERATION_LETTERS = {"new": "N", "new-slot": "NS", "update": "U", "downgrade": "UD",
                      "reinstall": "R"}


@dataclass(frozen=True)
class Palette:
    """ANSI colours like emerge's, or none at all (not a TTY, --color=n)."""

    enabled: bool

    def _wrap(self, code: str, text: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.enabled and text else text

    def green(self, text: str) -> str:
        return self._wrap("32;01", text)

    def blue(self, text: str) -> str:
        return self._wrap("34;01", text)

    def red(self, text: str) -> str:
        return self._wrap("31;01", text)

    def magenta(self, text: str) -> str:
        return self._wrap("35;01", text)

    def bold(self, text: str) -> str:
        return self._wrap("01", text)


def use_text(entry: PlanEntry, use_expand: tuple[str, ...], palette: Palette) -> str:
    """USE="a -b" ABI_X86="64 -32": enabled flags first, like emerge -v."""
    groups: dict[str, list[str]] = {"USE": []}
    enabled = set(entry.use)
    for flag in sorted(entry.iuse, key=lambda f: (f not in enabled, f)):
        prefix = next((p for p in use_expand if flag.startswith(p + "_")), None)
        name, value = ("USE", flag) if prefix is None else (prefix.upper(), flag[len(prefix) + 1:])
        shown = palette.red(value) if flag in enabled else palette.blue("-" + value)
        groups.setdefault(name, []).append(shown)
    return " ".join(f'{name}="{" ".join(flags)}"' for name, flags in groups.items() if flags)


def entry_line(entry: PlanEntry, use_expand: tuple[str, ...], palette: Palette,
               verbose: bool = False) -> str:
    kind = "binary" if entry.action == BINARY else "ebuild"
    letters = _OPERATION_LETTERS.get(entry.operation, "?")
    tag = f"[{kind}  {letters:<6}]"
    tag = palette.magenta(tag) if entry.action == BINARY else palette.green(tag)
    line = f"{tag} {palette.bold(entry.cpv)}::{entry.repo}"
    if verbose and entry.replaces:
        line += f" [{entry.replaces.split('/', 1)[1]}]"
    if verbose and entry.slot != "0":
        line += f":{entry.slot}"
    use = use_text(entry, use_expand, palette)
    return f"{line}  {use}" if use else line


def plan_text(plan: Plan, palette: Palette, verbose: bool = False, quiet: bool = False,
              who: str | None = None) -> str:
    """`who` names whose plan it is (fleet mode: a host of the group), default the group."""
    lines = []
    if not quiet:
        who = who or f"group {palette.bold(plan.group.name)}"
        lines.append(f"\nThese are the packages {who} would merge, in order:\n")
    lines += [entry_line(e, plan.use_expand, palette, verbose) for e in plan.entries]
    lines += [f"{palette.red('[uninstall     ]')} {cpv}  (blocked)" for cpv in plan.uninstalls]
    if not quiet:
        count, builds = len(plan.entries), len(plan.builds)
        lines.append(f"\nTotal: {count} package{'' if count == 1 else 's'} "
                     f"({builds} to build, {count - builds} binary)")
    return "\n".join(lines)


def jobs_text(jobs: list[BuildJob], palette: Palette, verbose: bool = False,
              quiet: bool = False, needed_by: Mapping[str, list[str]] | None = None) -> str:
    """`needed_by`: dedupe key -> the hosts needing the build (fleet mode), else groups."""
    lines = [] if quiet else [f"\nBuild jobs ({len(jobs)}, duplicates merged), in order:\n"]
    for job in jobs:
        env = " ".join(f"{k}={v!r}" for k, v in job.env)
        who = needed_by[job.key] if needed_by is not None else job.groups
        lines.append(f"{palette.green('[build]')} {palette.bold(job.cpv)}::{job.repo}  "
                     f"for {', '.join(who)}" + (f"  {env}" if env else ""))
        if verbose:
            lines.append(f"        key: {job.key}")
    return "\n".join(lines)
