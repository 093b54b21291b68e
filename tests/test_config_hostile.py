"""Hostile values anywhere in either config file: every one is a ConfigError of FILE:LINE
lines, never another exception (a traceback for the user)."""

from __future__ import annotations

import itertools

import pytest

from cq_portage.cq.config import load_config as load_server_config
from cq_portage.emerge.profile_yaml import load_config as load_emerge_config
from cq_portage.yamlfile import ConfigError

# Valid YAML that PyYAML cannot turn into values, or values of every wrong kind.
VALUES = ['!!int ""', "!!int _", '!!float ""', "!!float x", "!!bool maybe", "!!bool ''",
          "!!timestamp x", '!!binary "!!"', "{[a]: 1}", "&p [*p]", "!!set {a: 1}",
          "!!omap [a, b]", "!!pairs [1]", "!!null x", "!!str [a]", "!!map [a]",
          "!!seq {a: 1}", '"\\ud800"', '"/k\\ud800"', "!!python/tuple [1]", ".nan", ".inf",
          "-1e999", "0x", "~", "!!merge x"]
SERVER = ["listen: {port: V}", "listen: {host: V}", "state_dir: V", "munge_socket: V",
          "allow: {users: [V]}", "run_as: V", "environment: {deny: [V]}",
          "limits: {max_request_bytes: V}", "incoming_hook: V", "hook_timeout: V",
          "ssh: {key_file: V}\nbuild_hosts: {b: {url: 'ssh://u@h'}}", "ssh: {connect_timeout: V}",
          "build_hosts: {b: {url: V}}", "build_hosts: {b: {labels: [V]}}",
          "keep_finished_days: V"]
EMERGE = ["server: {host: b, port: V}\ngroups: {web: {}}",
          "server: {host: b, timeout: V}\ngroups: {web: {}}",
          "keep_logs_days: V\nserver: {host: b}\ngroups: {web: {}}",
          "server: {host: V}\ngroups: {web: {}}",
          "server: {host: b}\ngroups: {web: {use: V}}",
          "server: {host: b}\ngroups: {web: {env: {A: V}}}",
          "server: {host: b}\ngroups: {web: {packages: [V]}}",
          "server: {host: b}\ngroups: {web: {build_command: [V]}}",
          "server: {host: b}\nssh: {key_file: V}\ngroups: {web: {}}",
          "server: {host: b}\ngroups: {web: {hosts: [V]}}",
          "server: {host: b}\nbinhost: {url: V}\ngroups: {web: {}}",
          "server: {host: b}\ngroups: {V: {}}"]


@pytest.mark.parametrize("load, places", [(load_server_config, SERVER),
                                          (load_emerge_config, EMERGE)],
                         ids=["cq-server", "cq-emerge"])
def test_hostile_values_are_config_errors(tmp_path, load, places):
    path = tmp_path / "config.yaml"
    for place, value in itertools.product(places, VALUES):
        path.write_text(place.replace("V", value) + "\n")
        try:
            load(path)
        except ConfigError as e:
            assert e.problems and all(p.startswith(f"{path}:") and "\n" not in p
                                      for p in e.problems), e.problems
