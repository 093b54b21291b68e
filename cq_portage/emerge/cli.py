"""cq-emerge: plan a group's updates like `emerge -uDN`, build what is missing on the build
host, install from binary packages. Parse, validate into domain objects, dispatch."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from cq_portage.emerge.common import EXIT_USAGE, Output
from cq_portage.emerge.profile_yaml import CONFIG_ENV, DEFAULT_CONFIG, config_path, load_config
from cq_portage.emerge.profiles import Config, GroupProfile
from cq_portage.yamlfile import ConfigError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cq-emerge",
        description="Work out what `emerge --update --deep --newuse` would merge for each "
        "group, which of it already has a binary package with the group's USE, and which "
        "build jobs the build host must run; submit those to cq-server, and install each "
        "package from its binary package as soon as it is ready. Without --group, this "
        "host's groups (host: {groups: [...]} in the config). Exit status: 0 done, 1 "
        "something failed, 2 usage or config error.")
    parser.add_argument("--config", metavar="FILE",
                        help=f"group profiles (default: ${CONFIG_ENV}, else {DEFAULT_CONFIG})")
    which = parser.add_argument_group("groups")
    which.add_argument("--group", "-g", action="append", default=[], metavar="NAME",
                       help="plan for this group; repeat for several")
    which.add_argument("--all-groups", action="store_true",
                       help="plan for every group of the config file")
    where = parser.add_argument_group(
        "where", "A group may list its hosts (groups: {NAME: {hosts: [ssh://...]}}). Named "
        "with --group (or --all-groups) on a host that is not itself in the group (not in "
        "host: {groups: [...]}), such a group is updated in fleet mode: each host's plan "
        "comes from cq-emerge run there over SSH, the builds of every host are submitted "
        "once, and each build is installed over SSH on every host that needs it.")
    mode = where.add_mutually_exclusive_group()
    mode.add_argument("--fleet", action="store_true",
                      help="update the groups' hosts over SSH (fleet mode), whatever this "
                      "host is")
    mode.add_argument("--local", action="store_true",
                      help="update (or, for several groups, build for) this host only, even "
                      "for groups that list hosts")
    parser.add_argument("--pretend", "-p", action="store_true",
                        help="show the plans and build jobs; submit nothing")
    parser.add_argument("--ask", "-a", action="store_true",
                        help="show what would be done and ask before submitting")
    parser.add_argument("--detach", action="store_true",
                        help="submit the builds, then wait and install in the background")
    parser.add_argument("--postsync", nargs="*", metavar="ARG",
                        help="what Portage's postsync hook runs: update this host's groups in "
                        "the background (ARG: the repository NAME URI PATH of repo.postsync.d)")
    parser.add_argument("--host-groups", action="store_true",
                        help="print this host's groups (host: {groups: [...]}) on one line and "
                        "exit; none: an empty line, and why on stderr (the nightly job asks)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object (the plans and jobs, or the run's summary) "
                        "instead of emerge-like lines")
    parser.add_argument("--verbose", "-v", action="store_true",
                        help="show replaced versions, slots, dedupe keys and Portage's messages")
    parser.add_argument("--quiet", "-q", action="store_true",
                        help="with --pretend, only the package and job lines; otherwise "
                        "nothing but errors")
    parser.add_argument("--jobs", "-j", type=int, metavar="N",
                        help="resolve up to N groups at once (default: one per CPU)")
    parser.add_argument("--color", choices=("y", "n"),
                        help="colour output (default: only on a terminal, and not if NOCOLOR)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0) and EXIT_USAGE
    problem = usage_problem(args)
    if problem:
        parser.print_usage(sys.stderr)
        print(f"cq-emerge: error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    logging.basicConfig(level=logging.WARNING, format="cq-emerge: %(message)s",
                        stream=sys.stderr)
    if args.verbose:
        logging.getLogger("cq_portage").setLevel(logging.DEBUG)
    try:
        config = load_config(config_path(args.config))
        if args.host_groups:
            from cq_portage.emerge.postsync import print_host_groups

            return print_host_groups(config)
        if args.postsync is not None:
            from cq_portage.emerge.postsync import run_postsync

            return run_postsync(config, args.postsync)
        groups = config.select(args.group, args.all_groups)
    except ConfigError as error:
        for problem in error.problems:
            print(f"cq-emerge: {problem}", file=sys.stderr)
        return EXIT_USAGE
    # binhost: as exported variables, so that planning, forked planners, background runs
    # and install scripts all see the binhost the way emerge would
    os.environ.update(config.binhost.environment(os.environ))
    output = Output(json=args.json, verbose=args.verbose, quiet=args.quiet,
                    colour=_colour(args.color), jobs=args.jobs)
    fleet = fleet_mode(config, groups, args)
    if isinstance(fleet, str):
        parser.print_usage(sys.stderr)
        print(f"cq-emerge: error: {fleet}", file=sys.stderr)
        return EXIT_USAGE
    if fleet:  # the one mode that uses SSH: paramiko is loaded for it alone
        from cq_portage.emerge.fleet import run_fleet
        from cq_portage.ssh import quiet_paramiko

        quiet_paramiko(args.verbose)
        return run_fleet(config, groups, output, pretend=args.pretend, ask=args.ask)
    if args.pretend:
        from cq_portage.emerge.pretend import run_pretend  # each mode loads Portage itself

        return run_pretend(groups, output, unreachable=config.binhost.unreachable)
    from cq_portage.emerge.local import run_local

    return run_local(config, groups, output, ask=args.ask, detach=args.detach)


def fleet_mode(config: Config, groups: list[GroupProfile], args: argparse.Namespace
               ) -> bool | str:
    """Whether to update the groups' hosts over SSH, or why that cannot be done. A host
    that is in the group itself updates itself (a bare cq-emerge always does): fleet mode
    is for an admin host naming groups that list hosts, or for --fleet."""
    hostless = [g.name for g in groups if not g.hosts]
    if args.fleet:
        if hostless:
            return (f"--fleet: group {hostless[0]} lists no hosts (add hosts: "
                    f"[ssh://root@HOST, ...] to it in {config.path})")
    elif (args.local or hostless or not (args.group or args.all_groups)
          or any(g.name in config.host.groups for g in groups)):
        return False
    if args.detach:
        return "--detach is for updating this host; fleet mode waits for every host"
    return True


def usage_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with a parsed command line, as one sentence, or None."""
    if args.group and args.all_groups:
        return "--group and --all-groups exclude each other"
    if args.jobs is not None and args.jobs < 1:
        return "--jobs must be at least 1"
    if args.verbose and args.quiet:
        return "--verbose and --quiet exclude each other"
    if args.pretend and (args.ask or args.detach):
        return "--pretend submits nothing: it excludes --ask and --detach"
    if args.ask and args.json:
        return "--ask needs a person at a terminal: it excludes --json"
    return None


def _colour(choice: str | None) -> bool:
    if choice is not None:
        return choice == "y"
    no_colour = os.environ.get("NOCOLOR", "").lower() in ("1", "true", "yes")
    return sys.stdout.isatty() and not no_colour


if __name__ == "__main__":
    sys.exit(main())
