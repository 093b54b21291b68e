"""cq-emerge on this host (or for several groups, building only): plan, ask, submit to the cq
server, wait, install, report."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TextIO

from cq_portage.cq.client import ClientError
from cq_portage.emerge.background import start_update
from cq_portage.emerge.common import (EXIT_FAILURE, EXIT_NO, EXIT_OK, Output, confirm,
                                      make_client, make_plans)
from cq_portage.emerge.display import Palette, jobs_text, plan_text
from cq_portage.emerge.jobs import build_jobs
from cq_portage.emerge.logs import prune_logs
from cq_portage.emerge.pending import STATE_DIR, Busy, Pending, state_name
from cq_portage.emerge.profiles import Config, GroupProfile
from cq_portage.emerge.update import Summary, Update


def run_local(config: Config, groups: list[GroupProfile], output: Output, *, ask: bool = False,
              detach: bool = False, stdout: TextIO = sys.stdout,
              stderr: TextIO = sys.stderr) -> int:
    planned = make_plans(groups, output, stderr, config.binhost.unreachable)
    if planned is None:
        return EXIT_FAILURE
    planner, plans, errors = planned
    state_dir = Path(planner.settings["EROOT"]) / STATE_DIR
    prune_logs(state_dir / "logs", config.keep_logs_days)
    if errors:  # nothing half-done: fix the resolution first
        return EXIT_FAILURE
    jobs = build_jobs(plans)
    install = plans[0] if len(plans) == 1 else None
    names = ", ".join(g.name for g in groups)
    if not any(plan.entries for plan in plans):
        if output.json:
            json.dump({"groups": [g.name for g in groups], "ok": True, "packages": []}, stdout)
            stdout.write("\n")
        elif not output.quiet:
            stdout.write(f"Nothing to merge: {names} already up to date.\n")
        return EXIT_OK
    if not output.quiet and not output.json:
        palette = Palette(output.colour)
        for plan in plans:
            stdout.write(plan_text(plan, palette, output.verbose) + "\n")
        stdout.write(jobs_text(jobs, palette, output.verbose) + "\n")
        if install is None:
            stdout.write(f">>> Several groups ({names}): building only; each group's hosts "
                         "install with their own cq-emerge run.\n")
    if ask and not confirm(len(jobs), len(install.entries) if install else 0, output.colour):
        stdout.write("\nQuitting.\n\n")
        return EXIT_NO
    client = make_client(config.server)
    lock_name = install.group.name if install else state_name("build", groups)
    progress = output.progress(stdout)
    try:
        with Pending.open(state_dir, lock_name) as pending:
            update = Update(client, jobs, pending, progress, install, state_dir / "logs")
            update.submit()
            if detach:
                return _detach(update, config, groups, state_dir, stdout)
            summary = update.wait_and_install()
    except (Busy, ClientError, RuntimeError) as e:
        stderr.write(f"cq-emerge: {e}\n")
        return EXIT_FAILURE
    finally:
        client.close()
    report(summary, output, stdout, stderr)
    return EXIT_OK if summary.ok else EXIT_FAILURE


def _detach(update: Update, config: Config, groups: list[GroupProfile], state_dir: Path,
            stdout: TextIO) -> int:
    """Leave the waiting and installing to a background cq-emerge of the same groups: it
    finds the jobs just submitted in the pending state and reuses them. If it cannot run
    (the host goes down), the next cq-emerge run picks them up the same way."""
    update.pending.close()  # the background run takes the group's lock
    log_file = state_dir / "logs" / f"background-{'+'.join(g.name for g in groups)}.log"
    start_update(config.path, [g.name for g in groups], log_file, "detached")
    ids = sorted(set(update.ids.values()))
    stdout.write(f">>> submitted {update.summary.submitted} build(s), reused "
                 f"{update.summary.reused}; jobs {' '.join(map(str, ids)) or 'none'}\n"
                 f">>> waiting and installing in the background: {log_file}\n")
    return EXIT_OK


def report(summary: Summary, output: Output, stdout: TextIO, stderr: TextIO) -> None:
    if output.json:
        json.dump({"group": summary.group, "ok": summary.ok, "submitted": summary.submitted,
                   "reused": summary.reused, "install_logs": summary.install_logs,
                   "packages": [i.to_json() for i in summary.items]}, stdout, indent=2)
        stdout.write("\n")
        return
    if not output.quiet:
        stdout.write(f">>> {'group ' + summary.group if summary.group else 'builds'}: "
                     f"{summary.line()}\n")
    for item in summary.items:
        if item.went_wrong:
            stderr.write(f"!!! {item.cpv}: {item.state} {item.detail}\n")
