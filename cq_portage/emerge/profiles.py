"""Group profiles: the YAML config file turned into validated, immutable objects.

Every problem found becomes one line "FILE:LINE: what is wrong", all of them at once, so a
site fixes its config in one pass; no problem ever surfaces as a traceback.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from cq_portage.yamlfile import SafeLoader

from cq_portage.emerge.binhost import BinhostSettings

if TYPE_CHECKING:  # importing ssh loads paramiko: only fleet mode needs it
    from cq_portage.ssh import SshTarget

DEFAULT_CONFIG = Path("/etc/cq-portage/cq-portage.yaml")
CONFIG_ENV = "CQ_PORTAGE_CONFIG"
DEFAULT_PORT = 48005
DEFAULT_PACKAGES = ("@world",)
# What a build job runs inside its group's build root: the atoms of what the package needs
# (at the plan's versions) and then its own are appended, or replace a "{atom}" argument;
# "{package}" becomes its CATEGORY/PN:SLOT. --newuse leaves alone what the root already has
# as planned, --reinstall-atoms still (re)makes the package itself (the root may hold it
# built against an old sub-slot), and --usepkg takes what is needed from the binary
# packages that its own jobs made.
DEFAULT_BUILD_COMMAND = ("emerge", "--buildpkg", "--usepkg", "--oneshot", "--newuse",
                         "--reinstall-atoms={package}", "--binpkg-respect-use=y")
# What fleet mode runs on each host to get its plan (the flags are added after it).
DEFAULT_REMOTE_COMMAND = ("cq-emerge",)
# Days cq-emerge keeps its install and fleet logs (STATE_DIR/logs) before pruning them.
DEFAULT_KEEP_LOGS_DAYS = 30.0
MAX_KEEP_LOGS_DAYS = 36500.0

class ConfigError(Exception):
    """Bad config: `problems` holds one "FILE:LINE: message" line per problem."""

    def __init__(self, problems: Iterable[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


@dataclass(frozen=True)
class Server:
    host: str
    port: int = DEFAULT_PORT
    munge_socket: str | None = None  # None: libmunge's default
    timeout: float = 30.0  # seconds an unreachable server is waited for


@dataclass(frozen=True)
class PackageUse:
    """One package.use line of a group: an atom and its flags."""

    atom: str
    flags: tuple[str, ...]

    def __str__(self) -> str:
        return " ".join((self.atom, *self.flags))


@dataclass(frozen=True)
class GroupProfile:
    """What every host of one group shares: flags, extra make.conf variables, targets."""

    name: str
    use: tuple[str, ...] = ()
    abi_x86: tuple[str, ...] | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    packages: tuple[str, ...] = DEFAULT_PACKAGES
    package_use: tuple[PackageUse, ...] = ()
    build_command: tuple[str, ...] = DEFAULT_BUILD_COMMAND
    # cq-server build host labels its builds need (an architecture): see build_hosts there
    build_labels: tuple[str, ...] = ()
    hosts: tuple["SshTarget", ...] = ()  # the group's hosts, for fleet mode

    def portage_env(self) -> dict[str, str]:
        """The make.conf-like variables this group puts in Portage's environment."""
        variables = dict(self.env)
        if self.use:
            variables["USE"] = " ".join(self.use)
        if self.abi_x86 is not None:
            variables["ABI_X86"] = " ".join(self.abi_x86)
        return variables


@dataclass(frozen=True)
class HostSettings:
    groups: tuple[str, ...] = ()  # this host's groups: what a bare `cq-emerge` updates
    # The Portage postsync hook: True once per sync, False never, or after these repositories
    postsync: bool | tuple[str, ...] = True


@dataclass(frozen=True)
class SshSettings:
    """How fleet mode reaches a group's hosts (defaults: the running user's own SSH files)."""

    key_file: Path = field(default_factory=lambda: Path.home() / ".ssh/id_ed25519")
    known_hosts: Path = field(default_factory=lambda: Path.home() / ".ssh/known_hosts")
    connect_timeout: float = 10.0
    command: tuple[str, ...] = DEFAULT_REMOTE_COMMAND


@dataclass(frozen=True)
class Config:
    path: Path
    server: Server
    groups: Mapping[str, GroupProfile]
    host: HostSettings = HostSettings()
    ssh: SshSettings = field(default_factory=SshSettings)
    keep_logs_days: float = DEFAULT_KEEP_LOGS_DAYS
    binhost: BinhostSettings = BinhostSettings()

    def select(self, names: Iterable[str], all_groups: bool = False) -> list[GroupProfile]:
        """The groups asked for, in the order asked (all of them, in file order, if
        `all_groups`); an unknown name is a ConfigError that lists the known ones."""
        if all_groups:
            return list(self.groups.values())
        names = list(names) or list(self.host.groups)
        if not names:
            raise ConfigError([f"{self.path}: no group given: name one with --group NAME, use "
                               "--all-groups, or list this host's in host: {groups: [...]}"])
        chosen: list[GroupProfile] = []
        known = ", ".join(self.groups) or "none"
        for name in names:
            if name not in self.groups:
                raise ConfigError([f"{self.path}: unknown group {name!r} (known groups: {known})"])
            if self.groups[name] not in chosen:
                chosen.append(self.groups[name])
        return chosen


def config_path(option: str | None, environ: Mapping[str, str] | None = None) -> Path:
    """--config, else $CQ_PORTAGE_CONFIG, else the default path."""
    environ = os.environ if environ is None else environ
    return Path(option or environ.get(CONFIG_ENV) or DEFAULT_CONFIG)


def load_config(path: Path) -> Config:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError([f"{path}: cannot read the config file: {error.strerror} "
                           f"(give another with --config or ${CONFIG_ENV})"]) from None
    except UnicodeDecodeError as error:
        raise ConfigError([f"{path}: not UTF-8 text ({error.reason})"]) from None
    return parse_config(text, path)


def parse_config(text: str, path: Path) -> Config:
    try:
        root = yaml.compose(text, Loader=SafeLoader)  # nesting limited: file:line, no crash
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
        line = f"{mark.line + 1}" if mark else "1"
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError([f"{path}:{line}: invalid YAML: {problem}"]) from None
    from cq_portage.emerge.profile_yaml import Validator  # it builds the objects above

    return Validator(path).config(root)
