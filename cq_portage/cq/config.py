"""cq-server's configuration: a YAML file, then command-line flags on top."""

from __future__ import annotations

import grp
import math
import os
import pwd
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..yamlfile import Checker, ConfigError, Node, load
from .auth import Authorizer
from .environment import DEFAULT_DENY, EnvPolicy
from .hosts import DEFAULT_HOSTS, LOCAL, BuildHost, SshSettings
from .job import RunAs
from ..ssh import SshTarget
from .wire import DEFAULT_HOST, DEFAULT_PORT, BadRequest, Limits, parse_labels

DEFAULT_STATE_DIR = Path("/var/lib/cq")
REQUESTER = "requester"
MAX_MEMORY = 256 << 20  # default bound on what unauthenticated input may make the server hold
# Upper bounds: past them a value is a typo, or one that overflows later (a socket option, a
# timer, a date) and would crash a running server instead of being refused by --check-config.
BOUNDS = {"max_request_bytes": 16 << 20, "max_args": 1 << 20, "max_env": 1 << 16,
          "max_string_bytes": 16 << 20, "max_after": 1 << 16, "max_memory_bytes": 64 << 30,
          "hook_timeout": 3600, "stop_grace_seconds": 86400, "keep_finished_days": 36500,
          "connect_timeout": 3600, "check_seconds": 3600, "retry_seconds": 86400}


@dataclass(frozen=True)
class ServerConfig:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    state_dir: Path = DEFAULT_STATE_DIR
    munge_socket: str | None = None  # None: libmunge's default socket
    authorizer: Authorizer = field(default_factory=Authorizer.default)
    run_as: RunAs | str = RunAs()  # RunAs(), a fixed user, or REQUESTER
    env_policy: EnvPolicy = EnvPolicy()
    limits: Limits = Limits()
    incoming_hook: tuple[str, ...] | None = None
    hook_timeout: float = 10.0
    stop_grace: float = 30.0  # SIGTERM: how long a running job may take to finish
    keep_days: float = 30.0  # how long finished jobs stay queryable
    max_memory: int = MAX_MEMORY  # bytes of requests held before they are handled
    hosts: tuple[BuildHost, ...] = DEFAULT_HOSTS  # where jobs run, one at a time on each
    ssh: SshSettings = SshSettings()

    def with_overrides(self, **values) -> "ServerConfig":
        return replace(self, **{k: v for k, v in values.items() if v is not None})


def _run_as(spec: str) -> RunAs | str:
    if spec in ("server", ""):
        return RunAs()
    if spec == REQUESTER:
        return REQUESTER
    user, _, group = spec.partition(":")
    try:
        pw = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except KeyError:
        raise ValueError(f"unknown user {user!r}") from None
    gid = pw.pw_gid
    if group:
        try:
            gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
        except KeyError:
            raise ValueError(f"unknown group {group!r}") from None
    return RunAs(pw.pw_uid, gid)


def load_config(path: str | Path | None) -> ServerConfig:
    """The defaults, or the file at `path`; every problem is a ConfigError naming file:line."""
    if path is None:
        return ServerConfig()
    data, c = load(path), Checker(path)
    c.mapping(data, "the server config", {
        "listen", "state_dir", "munge_socket", "allow", "run_as", "environment", "limits",
        "incoming_hook", "hook_timeout", "stop_grace_seconds", "keep_finished_days",
        "build_hosts", "ssh"})
    values: dict = {}
    if "listen" in data:
        listen = c.mapping(data["listen"], "listen", {"host", "port"})
        values["host"] = c.get(listen, "host", str)
        port = c.get(listen, "port", int)
        if port is not None and not 0 < port < 65536:
            raise c.error(listen, "port", f"port {port} is not between 1 and 65535")
        values["port"] = port
    if (state_dir := c.get(data, "state_dir", str)) is not None:
        values["state_dir"] = Path(state_dir)
    values["munge_socket"] = c.get(data, "munge_socket", str)
    if "allow" in data:
        allow = c.mapping(data["allow"], "allow", {"users", "groups"})
        try:
            values["authorizer"] = Authorizer.from_names(
                c.get(allow, "users", list, []), c.get(allow, "groups", list, []))
        except ValueError as e:
            raise c.error(data, "allow", str(e)) from None
    if (spec := c.get(data, "run_as", (str, int))) is not None:
        try:
            values["run_as"] = _run_as(str(spec))
        except ValueError as e:
            raise c.error(data, "run_as", f"run_as: {e}") from None
        if values["run_as"] != RunAs() and os.getuid() != 0:
            raise c.error(data, "run_as", "run_as needs the server to run as root")
    if "environment" in data:
        env = c.mapping(data["environment"], "environment", {"deny"})
        deny = c.get(env, "deny", list, [])
        if not all(isinstance(d, str) and d for d in deny):
            raise c.error(env, "deny", "environment.deny must be a list of names or patterns")
        values["env_policy"] = EnvPolicy(DEFAULT_DENY + tuple(deny))
    if "limits" in data:
        lim = c.mapping(data["limits"], "limits",
                        {"max_request_bytes", "max_args", "max_env", "max_string_bytes",
                         "max_after", "max_memory_bytes"})
        for key in lim:
            _bounded(c, lim, key, c.get(lim, key, int), 1, f"limits.{key}")
        if "max_memory_bytes" in lim:
            values["max_memory"] = lim.pop("max_memory_bytes")
        values["limits"] = Limits(**lim)
        if values.get("max_memory", MAX_MEMORY) < 4 * values["limits"].max_request_bytes:
            raise c.error(data, "limits", "limits.max_memory_bytes must be at least 4 times "
                                          "limits.max_request_bytes")
    if (hook := c.get(data, "incoming_hook", (str, list))) is not None:
        argv = (hook,) if isinstance(hook, str) else tuple(map(str, hook))
        program = shutil.which(argv[0]) if argv else None  # a bare name is looked up in PATH
        if not program:
            raise c.error(data, "incoming_hook", f"incoming_hook {argv[0] if argv else ''!r} "
                                                 "is not an executable file (or not in PATH)")
        values["incoming_hook"] = (program, *argv[1:])
    for key, name in (("hook_timeout", "hook_timeout"), ("stop_grace_seconds", "stop_grace"),
                      ("keep_finished_days", "keep_days")):
        if (value := c.get(data, key, (int, float))) is not None:
            values[name] = float(_bounded(c, data, key, value, 0, key))
    if "ssh" in data:
        values["ssh"] = _ssh_settings(c, data["ssh"])
    if "build_hosts" in data:
        values["hosts"] = _build_hosts(c, data, values.get("ssh", SshSettings()))
        if values.get("run_as", RunAs()) != RunAs() and any(h.ssh for h in values["hosts"]):
            raise c.error(data, "run_as", "run_as applies to the local build host only: jobs "
                          "on SSH build hosts run as the user of their url (keep run_as: "
                          "server, or use local build hosts only)")
    return ServerConfig().with_overrides(**values)


def _ssh_settings(c: Checker, node) -> SshSettings:
    ssh = c.mapping(node, "ssh", {"key", "known_hosts", "connect_timeout", "check_seconds",
                                  "retry_seconds"})
    values: dict = {}
    for key in ("key", "known_hosts"):
        if (path := c.get(ssh, key, str)) is not None:
            values[key] = Path(path)
    for key in ("connect_timeout", "check_seconds", "retry_seconds"):
        if (seconds := c.get(ssh, key, (int, float))) is not None:
            if seconds <= 0:
                raise c.error(ssh, key, f"ssh.{key} must be positive")
            values[key] = float(_bounded(c, ssh, key, seconds, 0, f"ssh.{key}"))
    return SshSettings(**values)


def _bounded(c: Checker, node, key: str, value: int | float, low: int, name: str):
    """`value` if it lies in [low, BOUNDS[key]] (and is a number: not .nan or .inf)."""
    high = BOUNDS[key]
    if not math.isfinite(value) or not low <= value <= high:
        raise c.error(node, key, f"{name} must be between {low} and {high}, not {value}")
    return value


def _build_hosts(c: Checker, data, ssh: SshSettings) -> tuple[BuildHost, ...]:
    """build_hosts: {NAME: {url: local | ssh://user@host[:port], labels: [...], key: PATH,
    known_hosts: PATH}}; the url defaults to local. Files are checked now: a host that cannot
    be reached is only found out when it is tried, but a typo in a path is a config error."""
    node = data["build_hosts"]
    if not isinstance(node, Node) or not node:
        raise c.error(data, "build_hosts", "build_hosts must be a mapping of host names to "
                                           "settings, with at least one host")
    hosts, local = [], None
    for name, settings in node.items():
        if not isinstance(name, str) or not name:
            raise c.error(node, name, f"build host name {name!r} must be text")
        spec = c.mapping(Node() if settings is None else settings, f"build host {name!r}",
                         {"url", "labels", "key", "known_hosts"})
        if isinstance(spec, Node) and not spec.line:
            spec.line = node.lines[name]
        labels = c.get(spec, "labels", list, [])
        try:
            labels = frozenset(parse_labels([str(label) for label in labels]))
        except BadRequest as e:
            raise c.error(spec, "labels", f"build host {name!r}: {e}") from None
        url = c.get(spec, "url", str, LOCAL)
        if url == LOCAL:
            if local is not None:
                raise c.error(node, name, f"build hosts {local!r} and {name!r} are both "
                                          "local: this machine runs one job at a time")
            local = name
            hosts.append(BuildHost(name, labels))
            continue
        try:
            target = SshTarget.parse(url)
        except ValueError as e:
            raise c.error(spec, "url", f"build host {name!r}: {e} (or 'local')") from None
        key = Path(c.get(spec, "key", str, str(ssh.key)))
        known_hosts = Path(c.get(spec, "known_hosts", str, str(ssh.known_hosts)))
        for what, path in (("key", key), ("known_hosts", known_hosts)):
            if not os.access(path, os.R_OK):
                raise c.error(spec if what in spec else node, what if what in spec else name,
                              f"build host {name!r}: {what} file {path} cannot be read"
                              + (" (host keys are verified: create it with ssh-keyscan, "
                                 "checking the keys)" if what == "known_hosts" else ""))
        hosts.append(BuildHost(name, labels, target, key, known_hosts))
    return tuple(hosts)


__all__ = ["ServerConfig", "ConfigError", "load_config", "REQUESTER"]
