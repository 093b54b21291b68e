"""Fleet mode's configuration (groups' hosts, the ssh: section) and when cq-emerge goes
fleet: valid input becomes objects, bad input is one FILE:LINE line; no SSH needed here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from emerge_helpers import assert_one_problem

from cq_portage.sshconfig import SshTarget
from cq_portage.emerge.cli import build_parser, fleet_mode
from cq_portage.emerge.profile_yaml import load_config, parse_config

FLEET = """\
server: {host: build.example.org}
groups:
  web:
    use: ssl
    hosts: [ssh://root@web1.example, "ssh://root@web2.example:2222"]
  db:
    hosts:
      - ssh://root@db1.example
  build: {}
ssh:
  key_file: /etc/cq-portage/fleet_key
  known_hosts: ~/.ssh/fleet_known_hosts
  connect_timeout: 3
  command: [/usr/bin/cq-emerge, --config, /etc/cq-portage/cq-portage.yaml]
"""


def test_hosts_and_ssh_settings_become_objects(tmp_path):
    config = parse_config(FLEET, tmp_path / "c.yaml")
    assert config.groups["web"].hosts == (SshTarget("root", "web1.example", 22),
                                          SshTarget("root", "web2.example", 2222))
    assert config.groups["db"].hosts == (SshTarget("root", "db1.example", 22),)
    assert config.groups["build"].hosts == ()
    assert config.ssh.key_file == Path("/etc/cq-portage/fleet_key")
    assert config.ssh.known_hosts == Path.home() / ".ssh/fleet_known_hosts"
    assert config.ssh.connect_timeout == 3.0
    assert config.ssh.command == ("/usr/bin/cq-emerge", "--config",
                                  "/etc/cq-portage/cq-portage.yaml")


def test_ssh_defaults_are_the_running_users_own(tmp_path):
    config = parse_config("server: {host: b}\ngroups: {web: {}}\n", tmp_path / "c.yaml")
    assert config.ssh.key_file == Path.home() / ".ssh/id_ed25519"
    assert config.ssh.known_hosts == Path.home() / ".ssh/known_hosts"
    assert config.ssh.command == ("cq-emerge",) and config.ssh.connect_timeout == 10.0


BAD = [
    ("hosts-not-list", "server: {host: b}\ngroups:\n  web:\n    hosts: ssh://root@w1\n", 4,
     "web.hosts must be a list of ssh://user@host[:port] URLs"),
    ("host-not-url", "server: {host: b}\ngroups:\n  web:\n    hosts:\n      - w1\n", 5,
     "web.hosts: bad SSH URL 'w1'"),
    ("host-no-user", "server: {host: b}\ngroups:\n  web:\n    hosts: [\"ssh://w1\"]\n", 4,
     "user and host are required"),
    ("host-number", "server: {host: b}\ngroups:\n  web:\n    hosts: [5]\n", 4,
     "entries must be ssh://user@host[:port] URLs"),
    ("host-twice", "server: {host: b}\ngroups:\n  web:\n    hosts: [ssh://r@w1, "
     "ssh://r@w1:22]\n", 4, "ssh://r@w1:22 is listed twice"),
    ("host-in-two-groups", "server: {host: b}\ngroups:\n  web: {hosts: [ssh://r@w1]}\n"
     "  db:\n    hosts: [ssh://r@w1]\n", 5, "is listed in group 'web' too"),
    ("ssh-not-mapping", "server: {host: b}\ngroups: {web: {}}\nssh: yes\n", 3,
     "ssh must be a mapping"),
    ("ssh-unknown-key", "server: {host: b}\ngroups: {web: {}}\nssh: {keyfile: /k}\n", 3,
     "unknown key 'keyfile' in ssh"),
    ("ssh-relative-key", "server: {host: b}\ngroups: {web: {}}\nssh:\n  key_file: id\n", 4,
     "ssh.key_file must be an absolute path (or ~/...), not text 'id'"),
    ("ssh-known-hosts-type", "server: {host: b}\ngroups: {web: {}}\nssh:\n"
     "  known_hosts: [a]\n", 4,
     "ssh.known_hosts must be an absolute path (or ~/...), not a list"),
    ("ssh-timeout", "server: {host: b}\ngroups: {web: {}}\nssh: {connect_timeout: -1}\n", 3,
     "ssh.connect_timeout must be positive"),
    ("ssh-timeout-text", "server: {host: b}\ngroups: {web: {}}\nssh: {connect_timeout: 5s}\n",
     3, "ssh.connect_timeout must be a number of seconds, not text '5s'"),
    # The rules cq-server had: a bound (past it a typo), no ~ of an unknown user, no NUL;
    # `key` and the runners' settings are cq-server's own keys.
    ("ssh-timeout-long", "server: {host: b}\ngroups: {web: {}}\nssh: {connect_timeout: 5000}\n",
     3, "ssh.connect_timeout must be between 0 and 3600, not 5000"),
    ("ssh-timeout-inf", "server: {host: b}\ngroups: {web: {}}\nssh: {connect_timeout: .inf}\n",
     3, "ssh.connect_timeout must be between 0 and 3600, not inf"),
    ("ssh-timeout-nan", "server: {host: b}\ngroups: {web: {}}\nssh: {connect_timeout: .nan}\n",
     3, "ssh.connect_timeout must be between 0 and 3600, not nan"),
    ("ssh-unknown-user", "server: {host: b}\ngroups: {web: {}}\nssh:\n"
     "  key_file: ~no-such-user/k\n", 4, "ssh.key_file must be an absolute path (or ~/...)"),
    ("ssh-nul", "server: {host: b}\ngroups: {web: {}}\nssh:\n  known_hosts: \"/k\\0\"\n", 4,
     "ssh.known_hosts must be an absolute path (or ~/...)"),
    ("ssh-server-key", "server: {host: b}\ngroups: {web: {}}\nssh: {check_seconds: 5}\n", 3,
     "unknown key 'check_seconds' in ssh (known keys: command, connect_timeout, key_file, "
     "known_hosts)"),
    ("ssh-command-string", "server: {host: b}\ngroups: {web: {}}\nssh:\n"
     "  command: cq-emerge\n", 4, "ssh.command must be a list of arguments"),
]


@pytest.mark.parametrize("text,line,message", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_each_problem_is_one_line_with_file_and_line(tmp_path, text, line, message):
    assert_one_problem(tmp_path, text, line, message)


def test_example_config_documents_fleet_keys():
    example = load_config(Path(__file__).resolve().parents[2] / "etc/cq-portage/cq-portage.yaml")
    assert example.groups["web"].hosts and example.ssh.command == ("cq-emerge",)


def _mode(config, *argv):
    args = build_parser().parse_args(list(argv))
    return fleet_mode(config, config.select(args.group, args.all_groups), args)


def test_when_it_is_fleet_mode(tmp_path):
    config = parse_config(FLEET, tmp_path / "c.yaml")
    assert _mode(config, "-g", "web") is True  # an admin host naming a group with hosts
    assert _mode(config, "-g", "web", "-g", "db") is True
    assert _mode(config, "-g", "web", "-p") is True
    assert _mode(config, "-g", "web", "--local") is False
    assert _mode(config, "-g", "web", "-g", "build") is False  # build has no hosts: local
    assert _mode(config, "--all-groups") is False
    assert "group build lists no hosts" in _mode(config, "-g", "build", "--fleet")
    assert "--detach" in _mode(config, "-g", "web", "--detach")
    member = parse_config(FLEET + "host: {groups: [web]}\n", tmp_path / "c.yaml")
    assert _mode(member, "-g", "web") is False  # a web host updates itself
    assert _mode(member) is False  # a bare cq-emerge: this host's groups, here
    assert _mode(member, "-g", "db") is True
    assert _mode(member, "-g", "web", "--fleet") is True


def test_fleet_and_local_exclude_each_other():
    done = subprocess.run([sys.executable, "-m", "cq_portage.emerge.cli", "--fleet",
                           "--local", "-g", "web"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2 and "not allowed with argument" in done.stderr
    assert "Traceback" not in done.stderr


def test_unreadable_ssh_key_is_one_line_and_exit_2(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(FLEET.replace("/etc/cq-portage/fleet_key", str(tmp_path / "nokey")))
    done = subprocess.run([sys.executable, "-m", "cq_portage.emerge.cli", "--config",
                           str(path), "-g", "web", "-p"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"cq-emerge: {path}: ssh.key_file {tmp_path / 'nokey'} cannot be read (fleet mode "
        "reaches the group's hosts with it; set ssh: {key_file: FILE})"]
