"""cq-server's configuration: a YAML file, then command-line flags on top."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
from collections.abc import Collection
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from ..sshconfig import SshSettings, SshTarget, file_path, read_section
from ..yamlfile import Checker, Entries, compose, read, seconds
from .auth import Authorizer
from .environment import DEFAULT_DENY, EnvPolicy
from .hosts import DEFAULT_HOSTS, LOCAL, BuildHost
from .job import RunAs
from .wire import DEFAULT_HOST, DEFAULT_PORT, BadRequest, Limits, parse_labels

DEFAULT_STATE_DIR = Path("/var/lib/cq")
REQUESTER = "requester"
MAX_MEMORY = 256 << 20  # default bound on what unauthenticated input may make the server hold
# Upper bounds: past them a value is a typo, or one that overflows later (a socket option, a
# timer, a date) and would crash a running server instead of being refused by --check-config.
BOUNDS = {"max_request_bytes": 16 << 20, "max_args": 1 << 20, "max_env": 1 << 16,
          "max_string_bytes": 16 << 20, "max_after": 1 << 16, "max_memory_bytes": 64 << 30,
          "hook_timeout": 3600, "stop_grace_seconds": 86400, "keep_finished_days": 36500}
# What only cq-server reads in ssh: (besides key_file's old name `key`): how often its runners
# check a host that runs a job, and retry one that is down.
SSH_KEYS = {"check_seconds": seconds(3600), "retry_seconds": seconds(86400)}


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
    """The defaults, or the file at `path`; its problems are one ConfigError, a line each."""
    if path is None:
        return ServerConfig()
    path = Path(path)
    c = Checker(path)
    root = compose(read(path), path)
    if root is None:
        return ServerConfig()
    top = c.mapping(root, "the server config", {
        "listen", "state_dir", "munge_socket", "allow", "run_as", "environment", "limits",
        "incoming_hook", "hook_timeout", "stop_grace_seconds", "keep_finished_days",
        "build_hosts", "ssh"})
    if top is None:
        c.check()
    values: dict = {}
    if listen := _section(c, top, "listen", {"host", "port"}):
        values["host"] = c.get(listen, "host", str)
        port = c.get(listen, "port", int)
        if port is not None and not 0 < port < 65536:
            c.error(listen["port"][1], f"port {port} is not between 1 and 65535")
        else:
            values["port"] = port
    if (state_dir := c.get(top, "state_dir", str)) is not None:
        values["state_dir"] = Path(state_dir)
    values["munge_socket"] = c.get(top, "munge_socket", str)
    if allow := _section(c, top, "allow", {"users", "groups"}):
        users, groups = c.get(allow, "users", list), c.get(allow, "groups", list)
        try:
            values["authorizer"] = Authorizer.from_names(users or [], groups or [])
        except ValueError as e:
            c.error(top["allow"][0], str(e))
    if (spec := c.get(top, "run_as", (str, int))) is not None:
        try:
            values["run_as"] = _run_as(str(spec))
        except ValueError as e:
            c.error(top["run_as"][1], f"run_as: {e}")
        else:
            if values["run_as"] != RunAs() and os.getuid() != 0:
                c.error(top["run_as"][1], "run_as needs the server to run as root")
    if env := _section(c, top, "environment", {"deny"}):
        deny = c.get(env, "deny", list)
        if deny is not None and not all(isinstance(d, str) and d for d in deny):
            c.error(env["deny"][1], "environment.deny must be a list of names or patterns")
        elif deny is not None:
            values["env_policy"] = EnvPolicy(DEFAULT_DENY + tuple(deny))
    if lim := _section(c, top, "limits", {"max_request_bytes", "max_args", "max_env",
                                           "max_string_bytes", "max_after", "max_memory_bytes"}):
        numbers = {key: _number(c, lim, key, f"limits.{key}", 1, (int,)) for key in lim}
        if None not in numbers.values():
            values["max_memory"] = numbers.pop("max_memory_bytes", MAX_MEMORY)
            values["limits"] = Limits(**numbers)
            if values["max_memory"] < 4 * values["limits"].max_request_bytes:
                c.error(top["limits"][0], "limits.max_memory_bytes must be at least 4 times "
                                          "limits.max_request_bytes")
    if (hook := c.get(top, "incoming_hook", (str, list))) is not None:
        argv = (hook,) if isinstance(hook, str) else tuple(map(str, hook))
        program = shutil.which(argv[0]) if argv else None  # a bare name is looked up in PATH
        if not program:
            c.error(top["incoming_hook"][1], f"incoming_hook {argv[0] if argv else ''!r} "
                                             "is not an executable file (or not in PATH)")
        else:
            values["incoming_hook"] = (program, *argv[1:])
    for key, name in (("hook_timeout", "hook_timeout"), ("stop_grace_seconds", "stop_grace"),
                      ("keep_finished_days", "keep_days")):
        values[name] = _number(c, top, key, key, 0)
    refused: set[str] = set()
    ssh = values["ssh"] = read_section(c, top["ssh"][1], SSH_KEYS, old_key_name=True,
                                       refused=refused) if "ssh" in top else SshSettings()
    if "build_hosts" in top:
        values["hosts"] = _build_hosts(c, top["build_hosts"][1], ssh, frozenset(refused))
        if values.get("run_as", RunAs()) != RunAs() and any(h.ssh for h in values["hosts"]):
            c.error(top["run_as"][1], "run_as applies to the local build host only: jobs "
                    "on SSH build hosts run as the user of their url (keep run_as: server, "
                    "or use local build hosts only)")
    c.check()
    return ServerConfig().with_overrides(**values)


def _section(c: Checker, top: Entries, key: str, allowed: Collection[str]) -> Entries | None:
    """The mapping under `key`, if there is one (and is one)."""
    return c.mapping(top[key][1], key, allowed) if key in top else None


def _number(c: Checker, entries: Entries, key: str, name: str, low: int,
            types: tuple[type, ...] = (int, float)):
    """The value of `key` if it lies in [low, BOUNDS[key]] (the test is false for .nan and
    .inf), a float unless only ints are taken; None if absent or not (a problem)."""
    if (value := c.get(entries, key, types)) is None:
        return None
    if not low <= value <= BOUNDS[key]:
        c.error(entries[key][1], f"{name} must be between {low} and {BOUNDS[key]}, not {value}")
        return None
    return value if types == (int,) else float(value)


def _build_hosts(c: Checker, node, ssh: SshSettings, ssh_refused: frozenset[str] = frozenset()
                 ) -> tuple[BuildHost, ...]:
    """build_hosts: {NAME: {url: local | ssh://user@host[:port], labels: [...], key_file:
    PATH, known_hosts: PATH}}; the url defaults to local, the paths to ssh:'s (checked as
    there). Files are checked now: a host that cannot be reached is only found out when it is
    tried, but a typo in a path is a config error. A path refused already (a host's own, or
    one of ssh:'s that it would inherit: `ssh_refused`) is not checked again as its default."""
    names = c.mapping(node, "build_hosts", None) if isinstance(node, yaml.MappingNode) \
        and node.value else None
    if names is None:
        c.error(node, "build_hosts must be a mapping of host names to settings, with at "
                      "least one host")
        return DEFAULT_HOSTS
    hosts, local = [], None
    for name, (name_node, settings) in names.items():
        if not name:  # (non-text names are refused by mapping())
            c.error(name_node, "a build host name must not be empty")
            continue
        what = f"build host {name!r}"
        spec = {} if c.value(settings) is None else c.mapping(
            settings, what, {"url", "labels", "key", "key_file", "known_hosts"})
        if spec is None:
            continue
        c.renamed(spec, "key", "key_file", what)
        try:
            labels = frozenset(parse_labels([str(label) for label in
                                             c.get(spec, "labels", list) or []]))
        except BadRequest as e:
            c.error(spec["labels"][1], f"{what}: {e}")
            continue
        url = c.get(spec, "url", str) if "url" in spec else LOCAL
        if url is None:
            continue
        if url == LOCAL:
            if local is not None:
                c.error(name_node, f"build hosts {local!r} and {name!r} are both local: "
                                   "this machine runs one job at a time")
            local = name
            hosts.append(BuildHost(name, labels))
            continue
        try:
            target = SshTarget.parse(url)
        except ValueError as e:
            c.error(spec["url"][1], f"{what}: {e} (or 'local')")
            continue
        paths = {key: file_path(c, spec[key][1], f"{what}: {key}")
                 for key in ("key_file", "known_hosts") if key in spec}
        said = {key for key, path in paths.items() if path is None}
        said |= {key for key in ssh_refused if key not in spec}
        files = replace(ssh, **{key: path for key, path in paths.items() if path})
        for key, path in files.unreadable():
            if key in said:
                continue
            c.error(spec[key][1] if key in spec else name_node,
                    f"{what}: {key.removesuffix('_file')} file {path} cannot be read" + (
                        " (host keys are verified: create it with ssh-keyscan, checking the "
                        "keys)" if key == "known_hosts" else ""))
        if not said:
            hosts.append(BuildHost(name, labels, target, files.key_file, files.known_hosts))
    return tuple(hosts)
