"""cq-emerge --pretend: plan each group, print the plans and the deduplicated build jobs."""

from __future__ import annotations

import json
import sys
from typing import TextIO

from cq_portage.emerge.binhost import FAIL
from cq_portage.emerge.common import EXIT_FAILURE, EXIT_OK, Output, make_plans
from cq_portage.emerge.display import Palette, jobs_text, plan_text
from cq_portage.emerge.jobs import build_jobs
from cq_portage.emerge.plan_json import plan_to_json
from cq_portage.emerge.profiles import GroupProfile


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
