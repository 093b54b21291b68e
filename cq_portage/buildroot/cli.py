"""cq-build-root: create, update, run in, remove and list the per-group build roots."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from .commands import PACKAGE_USE_ENV, Tool
from .host import eprefix
from .roots import EXIT_USAGE, KINDS, ROOTS_ENV, ROOTS_UNDER_EPREFIX, BuildRootError, \
    default_kind, roots_dir
from .runner import Stopped

log = logging.getLogger("cq-build-root")


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (and status 2), as every other error here."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="cq-build-root",
        description="Per-group build roots with their own installed packages (vdb): a "
        "chroot on a Gentoo build host, a prefix on a prefix host. Build jobs run inside "
        "with `run GROUP -- COMMAND`; the built binary packages land in the host's PKGDIR. "
        "Exit status: the command's for run (killed by signal N: 128+N), 1 failure, 2 "
        "usage or config error.")
    parser.add_argument("--roots", metavar="DIR",
                        help=f"where the roots live (default: ${ROOTS_ENV}, else "
                        f"EPREFIX/{ROOTS_UNDER_EPREFIX})")
    parser.add_argument("--verbose", "-v", action="store_true")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                     parser_class=_Parser)
    create = commands.add_parser("create", help="make a group's root and its Portage config")
    create.add_argument("group", metavar="GROUP")
    create.add_argument("--kind", choices=KINDS,
                        help="chroot or prefix (default: prefix on a prefix host, else "
                        "chroot)")
    create.add_argument("--seed", metavar="TARBALL|DIR",
                        help="a stage3 tarball to extract, or a folder to copy (/ copies this "
                        "host without /proc, /sys, /dev, /run, /tmp, /home, PKGDIR, "
                        "DISTDIR, the repositories, ...); a chroot needs one")
    update = commands.add_parser("update", help="rewrite a root's Portage config from the "
                                 "host's (run does it too)")
    update.add_argument("group", metavar="GROUP")
    run = commands.add_parser(
        "run", help="run a command in a group's root",
        description="Run COMMAND in GROUP's root, one command per root at a time. "
        f"${PACKAGE_USE_ENV} (package.use lines) is written to the root's "
        "package.use/zz-cq-portage for it. A prefix root is made when missing.")
    run.add_argument("group", metavar="GROUP")
    run.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- COMMAND [ARG]...")
    remove = commands.add_parser("remove", help="delete a group's root")
    remove.add_argument("group", metavar="GROUP")
    listing = commands.add_parser("list", help="GROUP KIND PATH, one line each")
    listing.add_argument("--json", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0) and EXIT_USAGE
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="cq-build-root: %(message)s")
    try:
        return dispatch(args)
    except BuildRootError as e:
        print(f"cq-build-root: {e}", file=sys.stderr)
        return e.status
    except Stopped as e:
        print(f"cq-build-root: stopped by {e} before the command started", file=sys.stderr)
        return e.status
    except KeyboardInterrupt:
        return 130
    except OSError as e:
        print(f"cq-build-root: {e.filename + ': ' if e.filename else ''}{e.strerror or e}",
              file=sys.stderr)
        return 1


def dispatch(args: argparse.Namespace) -> int:
    prefix = eprefix()
    tool = Tool(roots=roots_dir(args.roots, prefix), default_kind=default_kind(prefix))
    if args.command == "create":
        marker = tool.create(args.group, args.kind, args.seed)
        print(f"{args.group} {marker.kind} {tool.root(args.group).path}")
    elif args.command == "update":
        tool.update(args.group)
    elif args.command == "run":
        command = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
        return tool.run(args.group, command)
    elif args.command == "remove":
        tool.remove(args.group)
    elif args.command == "list":
        roots = tool.list()
        if args.json:
            print(json.dumps(roots, indent=1))
        else:
            for root in roots:
                print(f"{root['group']} {root['kind']} {root['path']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
