"""cq-server's configuration: a YAML file, then command-line flags on top."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..yamlfile import Checker, ConfigError, load
from .auth import Authorizer
from .environment import DEFAULT_DENY, EnvPolicy
from .job import RunAs
from .wire import DEFAULT_HOST, DEFAULT_PORT, Limits

DEFAULT_STATE_DIR = Path("/var/lib/cq")
REQUESTER = "requester"


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
        "incoming_hook", "hook_timeout", "stop_grace_seconds", "keep_finished_days"})
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
                        {"max_request_bytes", "max_args", "max_env", "max_string_bytes"})
        for key in lim:
            if c.get(lim, key, int) <= 0:
                raise c.error(lim, key, f"{key} must be positive")
        values["limits"] = Limits(**lim)
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
            if value < 0:
                raise c.error(data, key, f"{key} must not be negative")
            values[name] = float(value)
    return ServerConfig().with_overrides(**values)


__all__ = ["ServerConfig", "ConfigError", "load_config", "REQUESTER"]
