"""What fleet mode prints: per-host plans and the union of build jobs (--pretend, --ask),
and the per-host summary at the end, as emerge-like lines or one JSON object."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TextIO

from cq_portage.emerge.display import Palette, jobs_text, plan_text
from cq_portage.emerge.jobs import BuildJob
from cq_portage.emerge.plan_json import plan_to_json
from cq_portage.emerge.common import Output
from cq_portage.emerge.remote import HostRun
from cq_portage.emerge.update import Summary


def print_plans(runs: list[HostRun], jobs: list[BuildJob],
                hosts_of: Mapping[str, list[str]], output: Output, stdout: TextIO) -> None:
    palette = Palette(output.colour)
    for run in runs:
        who = f"host {palette.bold(run.label)} (group {run.group})"
        if run.plan is None:
            if not output.quiet:
                stdout.write(f"\n{palette.red('!!!')} {who}: no plan: {run.error}\n")
            continue
        stdout.write(plan_text(run.plan, palette, output.verbose, output.quiet, who) + "\n")
    stdout.write(jobs_text(jobs, palette, output.verbose, output.quiet, hosts_of) + "\n")


def print_pretend_json(runs: list[HostRun], jobs: list[BuildJob],
                       hosts_of: Mapping[str, list[str]], stdout: TextIO) -> None:
    document = {
        "hosts": [{"host": run.label, "url": str(run.remote.target), "group": run.group,
                   "ok": run.error is None, "error": run.error,
                   **({"report": run.report} if run.report else {}),
                   "plan": plan_to_json(run.plan) if run.plan is not None else None}
                  for run in runs],
        "jobs": [{**job.to_json(), "hosts": hosts_of[job.key]} for job in jobs]}
    json.dump(document, stdout, indent=2)
    stdout.write("\n")


def say_nothing_to_merge(runs: list[HostRun], output: Output, stdout: TextIO) -> None:
    if output.quiet or output.json:
        return
    for run in runs:
        if run.plan is not None:
            stdout.write(f"Nothing to merge: host {run.label} (group {run.group}) already "
                         "up to date.\n")


def _host_line(run: HostRun) -> str:
    if run.plan is None:
        return f"not updated: {run.error}"
    if not run.plan.entries:
        return "already up to date"
    what = run.summary.counts() if run.summary else "not started"
    if run.error:
        what += f"; {run.error}"
    return f"{what} ({'updated' if run.ok else 'NOT updated'})"


def report(runs: list[HostRun], builds: Summary | None,
           hosts_of: Mapping[str, list[str]] | None, output: Output, stdout: TextIO,
           stderr: TextIO) -> None:
    """The per-host summary; failures also go to stderr, one line each."""
    if output.json:
        _report_json(runs, builds, hosts_of or {}, stdout)
    elif not output.quiet:
        if builds is not None:
            stdout.write(f">>> builds: {builds.line()}\n")
        for run in runs:
            stdout.write(f">>> host {run.label} (group {run.group}): {_host_line(run)}\n")
        done = sum(run.ok for run in runs)
        stdout.write(f">>> {done} of {len(runs)} host(s) fully updated\n")
    for run in runs:
        if run.summary is None:
            continue
        for item in run.summary.items:
            if item.went_wrong:
                stderr.write(f"!!! {run.label}: {item.cpv}: {item.state} {item.detail}\n")
        if run.plan is not None and run.error:
            stderr.write(f"!!! host {run.label}: {run.error}\n")


def _report_json(runs: list[HostRun], builds: Summary | None,
                 hosts_of: Mapping[str, list[str]], stdout: TextIO) -> None:
    hosts = [{"host": run.label, "url": str(run.remote.target), "group": run.group,
              "ok": run.ok, "error": run.error,
              "install_logs": run.summary.install_logs if run.summary else [],
              "packages": [i.to_json() for i in run.summary.items] if run.summary else []}
             for run in runs]
    document = {
        "ok": all(run.ok for run in runs) and (builds is None or builds.ok),
        "builds": {"submitted": builds.submitted if builds else 0,
                   "reused": builds.reused if builds else 0,
                   "jobs": [{"key": i.key, "cpv": i.cpv, "job_id": i.job_id,
                             "state": i.state, "detail": i.detail,
                             "hosts": hosts_of.get(i.key, [])}
                            for i in (builds.items if builds else [])]},
        "hosts": hosts}
    json.dump(document, stdout, indent=2)
    stdout.write("\n")
