"""What every cq-emerge mode shares: exit codes, output settings, planning the groups, the
--ask prompt and the client of the cq server."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TextIO

from cq_portage.cq.client import Client
from cq_portage.emerge.binhost import FAIL
from cq_portage.emerge.profiles import GroupProfile, Server
from cq_portage.emerge.progress import Progress

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
EXIT_NO = 130  # as emerge answers "No" to --ask


@dataclass(frozen=True)
class Output:
    json: bool = False
    verbose: bool = False
    quiet: bool = False
    colour: bool = False
    jobs: int | None = None  # groups resolved at once; None: one per CPU

    def progress(self, stdout: TextIO) -> Progress:
        return Progress(stdout, "quiet" if self.quiet or self.json else "auto", self.colour)


def make_plans(groups: list[GroupProfile], output: Output, stderr: TextIO,
               unreachable: str = FAIL):
    """(planner, plans, errors), or None when Portage itself could not be loaded or a
    binhost could not be reached (said in one line; `unreachable` as Planner's)."""
    # Imported here: importing Portage must wait until the command line has been checked.
    from cq_portage.emerge.binhost import BinhostUnreachable
    from cq_portage.emerge.forked import ChildFailed
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


def confirm(builds: int, installs: int, colour: bool, where: str = "") -> bool:
    """emerge's --ask prompt: "Would you like to submit 2 builds and install 3 packages
    [on 2 hosts]?"; EOF or Ctrl-C is No."""
    import portage.output
    from _emerge.UserQuery import UserQuery

    if not colour:
        portage.output.nocolor()
    what = [f"submit {builds} build{'s' * (builds != 1)}"] if builds else []
    if installs:
        what.append(f"install {installs} package{'s' * (installs != 1)}{where}")
    try:
        return UserQuery({"--ask": True}).query(
            f"Would you like to {' and '.join(what)}?", False) == "Yes"
    except (EOFError, KeyboardInterrupt):
        return False


def make_client(server: Server) -> Client:
    return Client(server.host, server.port, munge_socket=server.munge_socket,
                  timeout=server.timeout)
