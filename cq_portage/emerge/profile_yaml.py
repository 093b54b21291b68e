"""cq-emerge's config file: found, read and walked into profile objects, one problem line
("FILE:LINE: what is wrong") per mistake, all of them at once (see yamlfile)."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from cq_portage.cq.client import DEFAULT_PORT, valid_label
from cq_portage.emerge.binhost import UNREACHABLE_CHOICES, BinhostSettings
from cq_portage.emerge.profiles import (DEFAULT_KEEP_LOGS_DAYS, MAX_KEEP_LOGS_DAYS, Config,
                                        GroupProfile, HostSettings, PackageUse, Server)
from cq_portage.sshconfig import SshSettings, SshTarget, read_section
from cq_portage.yamlfile import Checker, ConfigError, compose, kind, read, seconds

DEFAULT_CONFIG = Path("/etc/cq-portage/cq-portage.yaml")
CONFIG_ENV = "CQ_PORTAGE_CONFIG"

# PMS 3.1.4: a USE flag name; "-*" resets in USE, like make.conf.
_FLAG_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9+_@-]*")
_ABI_X86_VALUES = ("32", "64", "x32")
_GROUP_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_VAR_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Set by their own keys, or moving Portage to another root: not for a group's env.
_ENV_OWN_KEY = {"USE": "use", "ABI_X86": "abi_x86"}
_ENV_FORBIDDEN = ("ROOT", "PORTAGE_CONFIGROOT", "SYSROOT", "EPREFIX", "PORTAGE_OVERRIDE_EPREFIX")
_TOP_KEYS = ("server", "groups", "host", "ssh", "keep_logs_days", "binhost")
_BINHOST_KEYS = ("url", "signatures", "unreachable")
_SIGNATURES = ("required", "as-configured")
_URL_RE = re.compile(r"(https?|ftp|file|ssh)://\S+")
_HOST_KEYS = ("groups", "postsync")
_SERVER_KEYS = ("host", "port", "munge_socket", "timeout")


def config_path(option: str | None, environ: Mapping[str, str] | None = None) -> Path:
    """--config, else $CQ_PORTAGE_CONFIG, else the default path."""
    environ = os.environ if environ is None else environ
    return Path(option or environ.get(CONFIG_ENV) or DEFAULT_CONFIG)


def load_config(path: Path) -> Config:
    return parse_config(read(path, f" (give another with --config or ${CONFIG_ENV})"), path)


def parse_config(text: str, path: Path) -> Config:
    return Validator(path).config(compose(text, path))


class Validator(Checker):
    """Walks the YAML node tree (which knows its line numbers) and collects problems."""

    def __init__(self, path: Path):
        super().__init__(path)
        self._hosts_seen: dict[object, str] = {}  # SshTarget -> the group listing it

    def config(self, root: yaml.Node | None) -> Config:
        top = self.mapping(root, "the config file", _TOP_KEYS)
        if top is None:
            raise ConfigError(self.problems)
        if "server" not in top:
            self.error(root, "no 'server' section: add server: {host: BUILD-HOST, port: 48005}")
        server = self.server(top["server"][1]) if "server" in top else None
        if "groups" not in top:
            self.error(root, "no 'groups' section: add groups: {NAME: {use: ...}}")
        groups = self.groups(top["groups"][1]) if "groups" in top else {}
        host = self.host(top["host"][1], groups) if "host" in top else HostSettings()
        ssh = read_section(self, top["ssh"][1], {"command": self.ssh_command}) \
            if "ssh" in top else SshSettings()
        keep_logs_days = DEFAULT_KEEP_LOGS_DAYS
        if "keep_logs_days" in top:
            keep_logs_days = self.keep_logs_days(top["keep_logs_days"][1])
        binhost = self.binhost(top["binhost"][1]) if "binhost" in top else BinhostSettings()
        self.check()
        assert server is not None
        return Config(path=self.path, server=server, groups=groups, host=host, ssh=ssh,
                      keep_logs_days=keep_logs_days, binhost=binhost)

    def groups(self, node: yaml.Node) -> dict[str, GroupProfile]:
        entries = self.mapping(node, "'groups'", None)
        if entries is not None and not entries:
            self.error(node, "'groups' is empty: define at least one group")
        groups: dict[str, GroupProfile] = {}
        for name, (name_node, group_node) in (entries or {}).items():
            if not _GROUP_NAME_RE.fullmatch(name):
                self.error(name_node, f"invalid group name {name!r}: use letters, digits, "
                           "'_', '.', '-'")
            elif (group := self.group(name, group_node)) is not None:
                groups[name] = group
        return groups

    def binhost(self, node: yaml.Node) -> BinhostSettings:
        """Where clients get packages over HTTP(S), whether they require signatures, and
        what planning does when the binhost cannot be reached."""
        entries = self.mapping(node, "'binhost'", _BINHOST_KEYS)
        if entries is None:
            return BinhostSettings()
        values: dict[str, Any] = {}
        if "url" in entries:
            url = self.value(entries["url"][1])
            if not isinstance(url, str) or not all(_URL_RE.fullmatch(u) for u in url.split()) \
                    or not url.split():
                self.error(entries["url"][1], "'binhost.url' must be URLs (https://HOST/PATH), "
                                              "separated by spaces")
            else:
                values["url"] = " ".join(url.split())
        for key, choices in (("signatures", _SIGNATURES), ("unreachable", UNREACHABLE_CHOICES)):
            if key in entries:
                value = self.value(entries[key][1])
                if value not in choices:
                    self.error(entries[key][1], f"'binhost.{key}' must be "
                               + " or ".join(repr(c) for c in choices))
                else:
                    values[key] = value
        if "signatures" in values:
            values["signatures"] = values["signatures"] == "required"
        return BinhostSettings(**values)

    def keep_logs_days(self, node: yaml.Node) -> float:
        """Days install and fleet logs are kept; 0 prunes every log of an earlier run."""
        days = self.value(node)
        if isinstance(days, bool) or not isinstance(days, (int, float)) \
                or not 0 <= days <= MAX_KEEP_LOGS_DAYS:
            self.error(node, f"'keep_logs_days' must be a number of days from 0 to "
                             f"{MAX_KEEP_LOGS_DAYS:.0f}")
            return DEFAULT_KEEP_LOGS_DAYS
        return float(days)

    def ssh_command(self, _: Checker, node: yaml.Node, what: str) -> tuple[str, ...] | None:
        """ssh.command, the one key of ssh: only cq-emerge reads: what fleet mode runs on the
        hosts to plan (see sshconfig.read_section for the others)."""
        return self.build_command(node, what) or None

    def hosts(self, node: yaml.Node, what: str) -> tuple:
        """ssh://user@host[:port] URLs; a host belongs to one group only (its profile)."""
        if not isinstance(node, yaml.SequenceNode):
            self.error(node, f"{what} must be a list of ssh://user@host[:port] URLs, "
                             f"not {kind(node)}")
            return ()
        group = what.split(".")[0]
        targets = []
        for item in node.value:
            value = self.value(item)
            if not isinstance(value, str):
                self.error(item, f"{what} entries must be ssh://user@host[:port] URLs, "
                                 f"not {kind(item)}")
                continue
            try:
                target = SshTarget.parse(value.strip())
            except ValueError as e:
                self.error(item, f"{what}: {e}")
                continue
            if target in self._hosts_seen:
                other = self._hosts_seen[target]
                self.error(item, f"{what}: {target} is listed "
                           + ("twice" if other == group else f"in group {other!r} too")
                           + " (a host has one group)")
                continue
            self._hosts_seen[target] = group
            targets.append(target)
        return tuple(targets)

    def host(self, node: yaml.Node, groups: Mapping[str, GroupProfile]) -> HostSettings:
        """This host's own settings: its groups (what a bare cq-emerge, the nightly cron job
        and the postsync hook update) and whether the postsync hook runs."""
        entries = self.mapping(node, "'host'", _HOST_KEYS)
        if entries is None:
            return HostSettings()
        names: list[str] = []
        if "groups" in entries:
            for name, item in self.words(entries["groups"][1], "'host.groups'") or []:
                if name not in groups:
                    known = ", ".join(groups) or "none"
                    self.error(item, f"'host.groups' names unknown group {name!r} "
                                     f"(known groups: {known})")
                else:
                    names.append(name)
        postsync: bool | tuple[str, ...] = True
        if "postsync" in entries:
            node = entries["postsync"][1]
            value = self.value(node) if isinstance(node, yaml.ScalarNode) else None
            if isinstance(value, bool):
                postsync = value
            else:
                repos = self.words(node, "'host.postsync'")
                if not repos or not isinstance(node, yaml.SequenceNode):
                    self.error(node, "'host.postsync' must be true, false or a list of "
                                     "repository names")
                else:
                    postsync = tuple(name for name, _ in repos)
        return HostSettings(groups=tuple(names), postsync=postsync)

    def server(self, node: yaml.Node) -> Server | None:
        entries = self.mapping(node, "'server'", _SERVER_KEYS)
        if entries is None:
            return None
        if "host" not in entries:
            self.error(node, "'server' has no 'host': name the build host running cq-server")
            return None
        host = self.value(entries["host"][1])
        if not isinstance(host, str) or not host.strip():
            self.error(entries["host"][1],
                       f"'server.host' must be a host name, not {kind(entries['host'][1])}")
            return None
        port = DEFAULT_PORT
        if "port" in entries:
            port = self.value(entries["port"][1])
            if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
                self.error(entries["port"][1], "'server.port' must be a port number 1-65535")
                return None
        munge_socket = None
        if "munge_socket" in entries:
            munge_socket = self.value(entries["munge_socket"][1])
            if not isinstance(munge_socket, str) or not munge_socket.startswith("/"):
                self.error(entries["munge_socket"][1],
                           "'server.munge_socket' must be an absolute path")
                return None
        timeout = 30.0
        if "timeout" in entries:  # .nan or .inf would wait for an unreachable server forever
            timeout = seconds(86400)(self, entries["timeout"][1], "server.timeout")
            if timeout is None:
                return None
        return Server(host=host.strip(), port=port, munge_socket=munge_socket, timeout=timeout)

    def words(self, node: yaml.Node, what: str) -> list[tuple[str, yaml.Node]] | None:
        """A string of space-separated words or a list of strings, each with its node."""
        if isinstance(node, yaml.SequenceNode):
            found = []
            for item in node.value:
                value = self.value(item)
                if not isinstance(value, str):
                    self.error(item, f"{what} entries must be text, not {kind(item)}")
                    return None
                found.extend((word, item) for word in value.split())
            return found
        value = self.value(node)
        if value is None:
            return []
        if not isinstance(value, str):
            self.error(node, f"{what} must be a string or a list of strings, not {kind(node)}")
            return None
        return [(word, node) for word in value.split()]

    def group(self, name: str, node: yaml.Node) -> GroupProfile | None:
        checks = {"use": self.use_flags, "abi_x86": self.abi_x86, "env": self.env,
                  "packages": self.packages, "package_use": self.package_use,
                  "build_command": self.build_command, "build_labels": self.build_labels,
                  "hosts": self.hosts}
        entries = self.mapping(node, f"group {name!r}", checks)
        if entries is None:
            return None
        before = len(self.problems)
        values: dict[str, Any] = {key: check(entries[key][1], f"{name}.{key}")
                                  for key, check in checks.items() if key in entries}
        if len(self.problems) > before:
            return None
        return GroupProfile(name=name, **values)

    def use_flags(self, node: yaml.Node, what: str) -> tuple[str, ...]:
        return self.checked_words(
            node, what, lambda w: w == "-*" or bool(_FLAG_RE.fullmatch(w.removeprefix("-"))),
            "a USE flag (letters, digits, '+', '_', '@', '-'; optional leading '-')")

    def abi_x86(self, node: yaml.Node, what: str) -> tuple[str, ...]:
        return self.checked_words(node, what, _ABI_X86_VALUES.__contains__,
                                  f"an ABI_X86 value ({', '.join(_ABI_X86_VALUES)})")

    def checked_words(self, node: yaml.Node, what: str, valid: Callable[[str], bool],
                      rule: str) -> tuple[str, ...]:
        """The words that pass `valid`; each other one is a problem: "WORD is not RULE"."""
        good = []
        for word, word_node in self.words(node, what) or []:
            if valid(word):
                good.append(word)
            else:
                self.error(word_node, f"{what}: {word!r} is not {rule}")
        return tuple(good)

    def env(self, node: yaml.Node, what: str) -> dict[str, str]:
        entries = self.mapping(node, what, None)
        variables: dict[str, str] = {}
        for key, (key_node, value_node) in (entries or {}).items():
            if not _VAR_NAME_RE.fullmatch(key):
                self.error(key_node, f"{what}: {key!r} is not a variable name")
            elif key in _ENV_OWN_KEY:
                self.error(key_node, f"{what}: set {key} with the group's "
                           f"'{_ENV_OWN_KEY[key]}' key")
            elif key in _ENV_FORBIDDEN:
                self.error(key_node, f"{what}: {key} cannot be set per group (it moves Portage "
                           "to another root); set it in cq-emerge's environment")
            else:
                words = self.words(value_node, f"{what}.{key}")
                if words is not None:
                    variables[key] = " ".join(word for word, _ in words)
        return variables

    def packages(self, node: yaml.Node, what: str) -> tuple[str, ...]:
        from portage.dep import Atom  # lazy: importing portage reads PORTAGE_OVERRIDE_EPREFIX
        from portage.exception import InvalidAtom

        targets = []
        words = self.words(node, what)
        if words == []:
            self.error(node, f"{what} is empty: leave it out for @world")
        for word, word_node in words or []:
            if not word.startswith("@"):
                try:
                    Atom(word, allow_repo=True)
                except InvalidAtom:
                    self.error(word_node, f"{what}: {word!r} is neither a package atom "
                               "nor a @set")
                    continue
            targets.append(word)
        return tuple(targets)

    def package_use(self, node: yaml.Node, what: str) -> tuple[PackageUse, ...]:
        from portage.dep import Atom
        from portage.exception import InvalidAtom

        if not isinstance(node, yaml.SequenceNode):
            self.error(node, f"{what} must be a list of \"ATOM FLAG...\" lines, not {kind(node)}")
            return ()
        lines = []
        for item in node.value:
            value = self.value(item)
            if not isinstance(value, str) or len(value.split()) < 2:
                self.error(item, f"{what}: each entry must be \"ATOM FLAG...\" text")
                continue
            atom, *flags = value.split()
            try:
                Atom(atom, allow_wildcard=True, allow_repo=True)
            except InvalidAtom:
                self.error(item, f"{what}: {atom!r} is not a package atom")
                continue
            bad = [f for f in flags if not _FLAG_RE.fullmatch(f.removeprefix("-"))]
            for flag in bad:
                self.error(item, f"{what}: {flag!r} is not a USE flag")
            if not bad:
                lines.append(PackageUse(atom=atom, flags=tuple(flags)))
        return tuple(lines)

    def build_labels(self, node: yaml.Node, what: str) -> tuple[str, ...]:
        labels = self.checked_words(node, what, valid_label, "a build host label (letters, "
                                    "digits, '_', '.', '+' or '-', at most 64)")
        return tuple(sorted(set(labels)))

    def build_command(self, node: yaml.Node, what: str) -> tuple[str, ...]:
        if not isinstance(node, yaml.SequenceNode):
            self.error(node, f"{what} must be a list of arguments (argv), not {kind(node)}")
            return ()
        argv = []
        for item in node.value:
            value = self.value(item)
            if not isinstance(value, str) or not value:
                self.error(item, f"{what}: arguments must be non-empty text")
                return ()
            argv.append(value)
        if not argv:
            self.error(node, f"{what} is empty")
        return tuple(argv)

