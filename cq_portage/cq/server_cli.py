"""cq-server: the command line of the queue's server."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from ..yamlfile import ConfigError
from .auth import Munge
from .config import DEFAULT_STATE_DIR, load_config
from .server import Server
from .wire import DEFAULT_HOST, DEFAULT_PORT

log = logging.getLogger("cq-server")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cq-server", add_help=False,
        description="Run submitted commands one at a time, for MUNGE-authenticated clients.")
    p.add_argument("--help", action="help", help="show this help and exit")
    p.add_argument("-h", "--host", help=f"address to listen on (default {DEFAULT_HOST})")
    p.add_argument("-p", "--port", type=int, help=f"port to listen on (default {DEFAULT_PORT})")
    p.add_argument("--config", type=Path, help="YAML configuration file")
    p.add_argument("--state-dir", type=Path,
                   help=f"job store and job logs (default {DEFAULT_STATE_DIR})")
    p.add_argument("--munge-socket", help="munged's socket (default: libmunge's default)")
    p.add_argument("-v", "--verbose", action="store_true", help="log debugging detail")
    p.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        config = load_config(args.config).with_overrides(
            host=args.host, port=args.port, state_dir=args.state_dir,
            munge_socket=args.munge_socket)
        if config.port is not None and not 0 < config.port < 65536:
            raise ConfigError(f"port {config.port} is not between 1 and 65535")
        server = Server(config, Munge(config.munge_socket))
        asyncio.run(server.serve())
    except ConfigError as e:
        print(f"cq-server: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"cq-server: {e.strerror or e}" + (f": {e.filename}" if e.filename else ""),
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
