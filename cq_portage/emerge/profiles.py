"""Group profiles: what cq-emerge's config file holds, as immutable objects (profile_yaml
reads and checks the file into them)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cq_portage.emerge.binhost import BinhostSettings
from cq_portage.sshconfig import SshSettings, SshTarget
from cq_portage.yamlfile import ConfigError

DEFAULT_PACKAGES = ("@world",)
# What a build job runs inside its group's build root: the atoms of what the package needs
# (at the plan's versions) and then its own are appended, or replace a "{atom}" argument;
# "{package}" becomes its CATEGORY/PN:SLOT. --newuse leaves alone what the root already has
# as planned, --reinstall-atoms still (re)makes the package itself (the root may hold it
# built against an old sub-slot), and --usepkg takes what is needed from the binary
# packages that its own jobs made.
DEFAULT_BUILD_COMMAND = ("emerge", "--buildpkg", "--usepkg", "--oneshot", "--newuse",
                         "--reinstall-atoms={package}", "--binpkg-respect-use=y")
# Days cq-emerge keeps its install and fleet logs (STATE_DIR/logs) before pruning them.
DEFAULT_KEEP_LOGS_DAYS = 30.0
MAX_KEEP_LOGS_DAYS = 36500.0


@dataclass(frozen=True)
class Server:
    host: str
    port: int
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
            raise ConfigError(f"{self.path}: no group given: name one with --group NAME, use "
                              "--all-groups, or list this host's in host: {groups: [...]}")
        chosen: list[GroupProfile] = []
        known = ", ".join(self.groups) or "none"
        for name in names:
            if name not in self.groups:
                raise ConfigError(f"{self.path}: unknown group {name!r} (known groups: {known})")
            if self.groups[name] not in chosen:
                chosen.append(self.groups[name])
        return chosen
