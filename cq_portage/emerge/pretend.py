"""cq-emerge --pretend: plan each group, print the plans and the deduplicated build jobs."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import TextIO

from cq_portage.emerge.binhost import FAIL
from cq_portage.emerge.display import Palette, jobs_text, plan_text
from cq_portage.emerge.jobs import build_jobs
from cq_portage.emerge.plan_json import plan_to_json
from cq_portage.emerge.profiles import GroupProfile

EXIT_OK, EXIT_FAILURE = 0, 1


@dataclass(frozen=True)
class Output:
    json: bool = False
    verbose: bool = False
    quiet: bool = False
    colour: bool = False
    jobs: int | None = None  # groups resolved at once; None: one per CPU


def make_plans(groups: list[GroupProfile], output: Output, stderr: TextIO,
               unreachable: str = FAIL):
    """(planner, plans, errors), or None when Portage itself could not be loaded or a
    binhost could not be reached (said in one line; `unreachable` as Planner's)."""
    # Imported here: importing Portage must wait until the command line has been checked.
    from cq_portage.emerge.forked import ChildFailed
    from cq_portage.emerge.binhost import BinhostUnreachable
    from cq_portage.emerge.plan import Planner, PlanError, PortageSetupError

    try:
        planner = Planner(unreachable=unreachable)
        results = planner.plan_all(groups, jobs=output.jobs)
    except BinhostUnreachable as error:
        stderr.write(f"cq-emerge: {error}\n")
        return None
    except PortageSetupError as error:
        if error.output and output.verbose:
            stderr.write(error.output + "\n")
        stderr.write(f"cq-emerge: cannot load Portage's configuration: {error.problem}\n")
        return None
    except ChildFailed as error:
        stderr.write(f"!!! cq-emerge: {error}\n")
        return None
    plans = [r for r in results if not isinstance(r, PlanError)]
    errors = [r for r in results if isinstance(r, PlanError)]
    for error in errors:
        stderr.write(f"\n!!! cq-emerge: cannot plan group {error.group!r}:\n{error.report}\n")
    return planner, plans, errors


def run_pretend(groups: list[GroupProfile], output: Output, stdout: TextIO = sys.stdout,
                stderr: TextIO = sys.stderr, unreachable: str = FAIL) -> int:
    planned = make_plans(groups, output, stderr, unreachable)
    if planned is None:
        return EXIT_FAILURE
    _, plans, errors = planned
    jobs = build_jobs(plans)
    if output.json:
        document = {"plans": [plan_to_json(p) for p in plans],
                    "jobs": [job.to_json() for job in jobs]}
        if errors:
            document["errors"] = [{"group": e.group, "report": e.report} for e in errors]
        # One write: json.dump writes each token, a syscall apiece on an unbuffered stdout.
        stdout.write(json.dumps(document, indent=2) + "\n")
    else:
        palette = Palette(output.colour)
        for plan in plans:
            stdout.write(plan_text(plan, palette, output.verbose, output.quiet) + "\n")
        stdout.write(jobs_text(jobs, palette, output.verbose, output.quiet) + "\n")
    return EXIT_FAILURE if errors else EXIT_OK
