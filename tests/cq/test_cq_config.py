"""cq-server's config file: every problem in it at once, a FILE:LINE line each; the SSH
key's old name `key` still read, with a warning; ssh: checked by cq-emerge's rules too."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

from cq_portage.cq.config import load_config
from cq_portage.yamlfile import ConfigError


def test_every_problem_is_reported_at_once(tmp_path):
    path = tmp_path / "cq-server.yaml"
    path.write_text("listen: {port: 0}\nnot_a_key: 1\nssh:\n  check_seconds: 0\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.problems == [
        f"{path}:2: unknown key 'not_a_key' in the server config (known keys: allow, "
        "build_hosts, environment, hook_timeout, incoming_hook, keep_finished_days, limits, "
        "listen, munge_socket, run_as, ssh, state_dir, stop_grace_seconds)",
        f"{path}:1: port 0 is not between 1 and 65535",
        f"{path}:4: ssh.check_seconds must be positive"]


@pytest.mark.parametrize("text,line,problem", [
    ("listen:\n  port: {[a]: 1}\n", 2, "found unhashable key"),
    ("listen: {port: 1}\nallow: {users: [!!int \"\"]}\n", 2,
     "a value that its explicit tag cannot take"),
    ("hook_timeout: !!bool maybe\n", 1, "a value that its explicit tag cannot take"),
    ("run_as: !!python/name:os.system x\n", 1, "could not determine a constructor for the tag "
     "'tag:yaml.org,2002:python/name:os.system'"),
    ("listen: {port: &p [*p]}\n", 1, "found unconstructable recursive node"),
    ("ssh:\n  key_file: \"/k\\ud800\"\n", 2, "a \\u escape that is no character")])
def test_yaml_that_cannot_become_values_is_one_line_not_a_traceback(tmp_path, text, line,
                                                                     problem):
    """Valid YAML that PyYAML cannot turn into values (a list as a key, a value its explicit
    tag cannot take, an unknown tag) is one line where it is, not a traceback."""
    path = tmp_path / "cq-server.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.problems == [f"{path}:{line}: invalid YAML: {problem}"]


def test_check_config_prints_a_line_per_problem(tmp_path):
    path = tmp_path / "cq-server.yaml"
    path.write_text("hook_timeout: -1\nrun_as: nosuchuser\n")
    done = subprocess.run([sys.executable, "-m", "cq_portage.cq.server_cli", "--config",
                           str(path), "--check-config"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2
    assert sorted(done.stderr.splitlines()) == [
        f"cq-server: {path}:1: hook_timeout must be between 0 and 3600, not -1",
        f"cq-server: {path}:2: run_as: unknown user 'nosuchuser'"]


def test_the_old_key_name_still_works_with_a_warning(tmp_path, caplog):
    key = tmp_path / "id"
    key.write_text("k")
    path = tmp_path / "cq-server.yaml"
    path.write_text(f"build_hosts:\n  far: {{url: 'ssh://root@h', key: {key}, known_hosts: "
                    f"{key}}}\nssh:\n  key: {key}\n")
    with caplog.at_level(logging.WARNING):
        config = load_config(path)
    assert config.ssh.key_file == key and config.hosts[0].key_file == key
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}:4: ssh: 'key' is deprecated, name it 'key_file'",
        f"{path}:2: build host 'far': 'key' is deprecated, name it 'key_file'"]


def test_both_names_at_once_is_a_problem(tmp_path):
    path = tmp_path / "cq-server.yaml"
    path.write_text("ssh:\n  key: /a\n  key_file: /b\n")
    with pytest.raises(ConfigError, match=r":2: ssh: give key_file only \(key is its "
                                          r"deprecated name\)"):
        load_config(path)


def test_ssh_files_are_checked_when_the_config_loads(tmp_path):
    path = tmp_path / "cq-server.yaml"
    path.write_text("build_hosts:\n  far: {url: 'ssh://root@h'}\n"
                    f"ssh: {{key_file: {tmp_path}/no-key, known_hosts: {tmp_path}/no-kh}}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.problems == [
        f"{path}:2: build host 'far': key file {tmp_path}/no-key cannot be read",
        f"{path}:2: build host 'far': known_hosts file {tmp_path}/no-kh cannot be read (host "
        "keys are verified: create it with ssh-keyscan, checking the keys)"]


def test_ssh_paths_expand_home_as_cq_emerge_does(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # the home of the user running cq-server
    for name in ("k", "kh", "k2"):
        (tmp_path / name).write_text("k")
    path = tmp_path / "cq-server.yaml"
    path.write_text("build_hosts:\n  far: {url: 'ssh://root@h', key_file: ~/k2}\n"
                    "ssh: {key_file: ~/k, known_hosts: ~/kh}\n")
    config = load_config(path)
    assert (config.ssh.key_file, config.ssh.known_hosts) == (tmp_path / "k", tmp_path / "kh")
    assert (config.hosts[0].key_file, config.hosts[0].known_hosts) == (tmp_path / "k2",
                                                                       tmp_path / "kh")


@pytest.mark.parametrize("text, problems", [
    # A relative path would be read from wherever the server was started (/ once daemonized).
    ("ssh:\n  key_file: id\n", [":2: ssh.key_file must be an absolute path (or ~/...), not "
                                "text 'id'"]),
    ('ssh: {known_hosts: "/k\\0"}\n', [":1: ssh.known_hosts must be an absolute path (or "
                                       "~/...), not text '/k\\x00'"]),
    ("ssh: {key_file: ~no-such-user/k}\n", [":1: ssh.key_file must be an absolute path (or "
                                            "~/...), not text '~no-such-user/k'"]),
    ("ssh: {connect_timeout: 10s}\n", [":1: ssh.connect_timeout must be a number of seconds, "
                                       "not text '10s'"]),
    ("ssh: {connect_timeout: 5000}\n", [":1: ssh.connect_timeout must be between 0 and 3600, "
                                        "not 5000"]),
    ("ssh: {command: [cq-emerge]}\n", [":1: unknown key 'command' in ssh (known keys: "
                                       "check_seconds, connect_timeout, key, key_file, "
                                       "known_hosts, retry_seconds)"]),
    # A build host's own files follow the same rule, and a bad one is not also reported as
    # the default file that cannot be read (its other file still is checked).
    ("build_hosts:\n  far:\n    url: ssh://root@h\n    known_hosts: kh\n",
     [":4: build host 'far': known_hosts must be an absolute path (or ~/...), not text 'kh'",
      ":2: build host 'far': key file HOME/.ssh/id_ed25519 cannot be read"]),
    ("build_hosts:\n  far: {url: 'ssh://root@h', key_file: [a], known_hosts: /}\n",
     [":2: build host 'far': key_file must be an absolute path (or ~/...), not a list"]),
    # Nor is a bad ssh: file, which a build host would inherit, reported again as its default;
    # but the files a bad ssh: value does not concern still are (known_hosts, key_file).
    ("ssh: {key_file: id}\nbuild_hosts:\n  far: {url: 'ssh://root@h'}\n",
     [":1: ssh.key_file must be an absolute path (or ~/...), not text 'id'",
      ":3: build host 'far': known_hosts file HOME/.ssh/known_hosts cannot be read (host keys "
      "are verified: create it with ssh-keyscan, checking the keys)"]),
    ("ssh: {check_seconds: 0}\nbuild_hosts:\n  far: {url: 'ssh://root@h', known_hosts: /}\n",
     [":1: ssh.check_seconds must be positive",
      ":3: build host 'far': key file HOME/.ssh/id_ed25519 cannot be read"]),
])
def test_ssh_problems_are_a_line_each(tmp_path, monkeypatch, text, problems):
    monkeypatch.setenv("HOME", str(tmp_path))  # the default key file cannot be read
    path = tmp_path / "cq-server.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.problems == [f"{path}{problem}".replace("HOME", str(tmp_path))
                                     for problem in problems]
