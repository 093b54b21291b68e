"""cq-server: the command line of the queue's server.

Start-up is safe against signals: SIGHUP and SIGTERM that come before the server's own
handlers are installed are recorded and acted on once they are (a reload, a clean stop),
and the pid file (and systemd's READY=1, and --daemon's return) comes only then, so that
whoever reads it may signal the server at once.
"""

from __future__ import annotations

import os
import signal
import sys

EARLY_SIGNALS: list[int] = []  # what came before the server's handlers: replayed then

# As the program (not when a test imports the parser): first thing, before the slow imports.
if __name__ == "__main__" or os.path.basename(sys.argv[0]) in ("cq-server", "cq_server"):
    for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: EARLY_SIGNALS.append(signum))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import errno  # noqa: E402
import fcntl  # noqa: E402
import logging  # noqa: E402
import socket  # noqa: E402
import sqlite3  # noqa: E402
from pathlib import Path  # noqa: E402

from ..yamlfile import ConfigError  # noqa: E402
from . import logsetup, sdnotify, statedir  # noqa: E402
from .auth import AuthError, Munge  # noqa: E402
from .config import DEFAULT_STATE_DIR, ServerConfig, load_config  # noqa: E402
from .execution import HostDown  # noqa: E402
from .remote import RemoteExecutor  # noqa: E402
from .server import Server  # noqa: E402
from .statedir import DamagedStore  # noqa: E402
from .wire import DEFAULT_HOST, DEFAULT_PORT  # noqa: E402

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
    statedir.prepare(config.state_dir)
    statedir.check_store(config.state_dir / "cq.db")
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


class PidFile:
    """A pid file locked (flock) for as long as the server runs, so that a stale one is told
    from a live one without trusting the pid in it; opened without following a symbolic link.
    The pid is written only once the server listens with its signal handlers installed."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_CREAT | statedir.NOFOLLOW, 0o644)
        except OSError as e:
            raise OSError(e.errno, f"cannot open the pid file: {e.strerror}"
                                   + (" (a symbolic link: refused)" if e.errno == errno.ELOOP
                                      else ""),
                          str(path)) from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self.fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(self.fd)
            raise OSError(errno.EEXIST, f"already running as pid {holder} (pid file {path})"
                          ) from None
        os.ftruncate(self.fd, 0)  # a dead server's pid may be reused: none until ready

    def write(self) -> None:
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)

    def remove(self) -> None:
        try:
            if os.stat(self.path).st_ino == os.fstat(self.fd).st_ino:  # still ours
                os.unlink(self.path)
        except OSError:
            pass
        os.close(self.fd)


class Launcher:
    """--daemon: the command returns only when the detached server is ready (exit 0), or
    with the one line that says why it is not (its exit status)."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()

    def wait(self, child: int) -> int:
        os.close(self.write_fd)
        with open(self.read_fd, "rb") as pipe:
            answer = pipe.read().decode(errors="replace")
        os.waitpid(child, 0)  # the intermediate process, which exits at once
        code, _, message = answer.partition(" ")
        if not code:
            print("cq-server: the server exited while starting (see its log)",
                  file=sys.stderr)
            return 1
        if message:
            print(f"cq-server: {message}", file=sys.stderr)
        return int(code)

    def tell(self, code: int, message: str = "") -> None:
        if self.write_fd is not None:
            try:
                os.write(self.write_fd, f"{code} {message}".encode())
                os.close(self.write_fd)
            except OSError:
                pass
            self.write_fd = None


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    launcher: Launcher | None = None
    try:
        config = configure(args)
        if args.check_config or args.check_hosts:
            print(f"cq-server: configuration OK ({args.config or 'built-in defaults'})")
            return check_hosts(config) if args.check_hosts else 0
        pid_file = PidFile(args.pid_file) if args.pid_file else None
        preflight(config)
        if args.daemon:
            import daemon

            launcher = Launcher()
            child = os.fork()
            if child:
                return launcher.wait(child)
            os.close(launcher.read_fd)
            context = daemon.DaemonContext(
                working_directory="/", umask=0o022, detach_process=True,
                files_preserve=[launcher.write_fd] + ([pid_file.fd] if pid_file else []),
                signal_map={signal.SIGTTIN: None, signal.SIGTTOU: None, signal.SIGTSTP: None})
            with context:
                setup_log(level, args, syslog=args.syslog or not args.log_file)
                return run(config, args, pid_file, launcher)
        setup_log(level, args, syslog=args.syslog)
        return run(config, args, pid_file, None)
    except ConfigError as e:
        return _fail(launcher, 2, str(e))
    except (DamagedStore, sqlite3.DatabaseError) as e:
        return _fail(launcher, 2, str(e) if isinstance(e, DamagedStore) else
                     f"job store {config.state_dir / 'cq.db'} is damaged ({e}): move it aside")
    except OSError as e:
        return _fail(launcher, 1, f"{e.strerror or e}" + (f": {e.filename}" if e.filename
                                                          else ""))


def setup_log(level: int, args, syslog: bool) -> None:
    try:
        logsetup.setup(level, args.log_file, syslog=syslog)
    except OSError as e:
        raise OSError(e.errno, f"cannot open the log file {args.log_file}: {e.strerror}"
                      + (f" ({e.filename})" if e.filename else "")) from None


def _fail(launcher: Launcher | None, code: int, message: str) -> int:
    """One line (a line per problem) on stderr, or through the launcher to --daemon's tty."""
    if launcher is not None and launcher.write_fd is not None:
        log.error("%s", message)
        launcher.tell(code, message)
    else:
        print(*(f"cq-server: {line}" for line in message.splitlines()), sep="\n", file=sys.stderr)
    return code


def run(config: ServerConfig, args, pid_file: PidFile | None, launcher: Launcher | None
        ) -> int:
    munge = Munge(config.munge_socket)
    try:
        munge.encode(b"")
    except AuthError as e:
        log.warning("%s: requests will be refused until munged answers", e)
    server = Server(config, munge, reload_config=(lambda: configure(args)) if args.config
                    else None)

    def ready() -> None:
        """Listening, with the handlers installed: now it may be signalled."""
        if pid_file:
            pid_file.write()
        sdnotify.notify(f"READY=1\nMAINPID={os.getpid()}")
        if launcher:
            launcher.tell(0)
        for sig in EARLY_SIGNALS:  # to the loop's handlers now
            os.kill(os.getpid(), sig)
        EARLY_SIGNALS.clear()

    try:
        asyncio.run(server.serve(on_ready=ready,
                                 on_stop=lambda: sdnotify.notify("STOPPING=1")))
    except OSError as e:
        log.error("%s", e)
        raise
    finally:
        if pid_file:
            pid_file.remove()
    return 1 if server.failed else 0


if __name__ == "__main__":
    sys.exit(main())
