"""cq-server: the command line of the queue's server."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
from pathlib import Path

from ..yamlfile import ConfigError
from . import logsetup
from .auth import AuthError, Munge
from .config import DEFAULT_STATE_DIR, ServerConfig, load_config
from .remote import HostDown, RemoteExecutor
from .server import Server
from .wire import DEFAULT_HOST, DEFAULT_PORT

log = logging.getLogger("cq-server")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cq-server", add_help=False,
        description="Run submitted commands one at a time, for MUNGE-authenticated clients. "
                    "SIGHUP reloads the configuration; SIGTERM lets the running job finish "
                    "(within stop_grace_seconds) and exits, keeping the queue.")
    p.add_argument("--help", action="help", help="show this help and exit")
    p.add_argument("-h", "--host", help=f"address to listen on (default {DEFAULT_HOST})")
    p.add_argument("-p", "--port", type=int, help=f"port to listen on (default {DEFAULT_PORT})")
    p.add_argument("--config", type=Path, help="YAML configuration file")
    p.add_argument("--state-dir", type=Path,
                   help=f"job store and job logs (default {DEFAULT_STATE_DIR})")
    p.add_argument("--munge-socket", help="munged's socket (default: libmunge's default)")
    p.add_argument("--check-config", action="store_true",
                   help="check the configuration and the command line, then exit")
    p.add_argument("--check-hosts", action="store_true",
                   help="check the configuration, then whether every build host answers "
                        "(exit 1 if one does not)")
    p.add_argument("--daemon", action="store_true",
                   help="detach from the terminal (logs go to --log-file, else syslog)")
    p.add_argument("--pid-file", type=Path, help="write the server's pid here")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--log-file", type=Path, help="log to this file (logrotate-friendly)")
    out.add_argument("--syslog", action="store_true", help="log to syslog (facility daemon)")
    p.add_argument("-v", "--verbose", action="store_true", help="log debugging detail")
    p.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    return p


def configure(args) -> ServerConfig:
    config = load_config(args.config).with_overrides(
        host=args.host, port=args.port, state_dir=args.state_dir, munge_socket=args.munge_socket)
    if not 0 < config.port < 65536:
        raise ConfigError(f"port {config.port} is not between 1 and 65535")
    return config


def preflight(config: ServerConfig) -> None:
    """What can be checked before detaching, so that an admin sees it on the terminal."""
    config.state_dir.mkdir(parents=True, exist_ok=True)
    if not os.access(config.state_dir, os.W_OK | os.X_OK):
        raise PermissionError(13, "state dir is not writable", str(config.state_dir))
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    with socket.socket(family) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((config.host, config.port))
        except OSError as e:
            raise OSError(e.errno, f"cannot listen on {config.host}:{config.port}: "
                                   f"{e.strerror}") from None


def check_hosts(config: ServerConfig) -> int:
    """A line per build host: does it answer (connection, host key, login, a command)?"""
    down = 0
    for host in config.hosts:
        labels = f" [{' '.join(sorted(host.labels))}]" if host.labels else ""
        if host.ssh is None:
            print(f"  {host.name}{labels}: this machine")
            continue
        executor = RemoteExecutor(host, config.ssh)
        try:
            executor.check()
            print(f"  {host.name}{labels}: {host.url} answers")
        except HostDown as e:
            print(f"  {host.name}{labels}: {host.url} DOWN: {e}")
            down += 1
        finally:
            executor.close()
    return 1 if down else 0


def pid_lock(path: Path):
    from daemon.pidfile import TimeoutPIDLockFile

    lock = TimeoutPIDLockFile(str(path), acquire_timeout=0)
    pid = lock.read_pid()
    if pid is not None:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            lock.break_lock()  # left by a server that died
        else:
            raise OSError(17, f"already running as pid {pid} (pid file {path})")
    return lock


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    try:
        config = configure(args)
        if args.check_config or args.check_hosts:
            print(f"cq-server: configuration OK ({args.config or 'built-in defaults'})")
            return check_hosts(config) if args.check_hosts else 0
        lock = pid_lock(args.pid_file) if args.pid_file and args.daemon else None
        preflight(config)
        if args.daemon:
            import daemon

            context = daemon.DaemonContext(
                pidfile=lock, working_directory="/", umask=0o022,
                signal_map={signal.SIGTTIN: None, signal.SIGTTOU: None, signal.SIGTSTP: None})
            with context:
                logsetup.setup(level, args.log_file, syslog=args.syslog or not args.log_file)
                return serve(config, args)
        if args.pid_file:
            args.pid_file.write_text(f"{os.getpid()}\n")
        logsetup.setup(level, args.log_file, args.syslog)
        try:
            return serve(config, args)
        finally:
            if args.pid_file:
                args.pid_file.unlink(missing_ok=True)
    except ConfigError as e:
        print(f"cq-server: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"cq-server: {e.strerror or e}" + (f": {e.filename}" if e.filename else ""),
              file=sys.stderr)
        return 1


def serve(config: ServerConfig, args) -> int:
    munge = Munge(config.munge_socket)
    try:
        munge.encode(b"")
    except AuthError as e:
        log.warning("%s: requests will be refused until munged answers", e)
    server = Server(config, munge, reload_config=(lambda: configure(args)) if args.config
                    else None)
    try:
        asyncio.run(server.serve())
    except OSError as e:
        log.error("%s", e)
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
