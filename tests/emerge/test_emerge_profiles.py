"""Group profiles: valid files become objects; every kind of bad input is one line with
file:line, and never a traceback (checked through the real cq-emerge too)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from emerge_helpers import assert_one_problem

from cq_portage.emerge.profile_yaml import CONFIG_ENV, config_path, load_config, parse_config
from cq_portage.emerge.profiles import DEFAULT_BUILD_COMMAND, PackageUse
from cq_portage.yamlfile import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "etc/cq-portage/cq-portage.yaml"

GOOD = """\
server: {host: build.example.org, port: 48006}
groups:
  web:
    use: "ssl http2 -X"
    abi_x86: "64 32"
    env: {CPU_FLAGS_X86: "aes sse4_2", MAKEOPTS: [-j4, -l4]}
    packages: ["@world", "app-misc/extra"]
    package_use: ["dev-lang/python sqlite", "app-misc/foo::cqtest -ssl"]
  db:
    use: [-X, "-*", ldap]
    build_command: [chroot, /srv/build, emerge, --buildpkg, --oneshot, "{atom}"]
"""


def test_valid_config_becomes_objects(tmp_path):
    config = parse_config(GOOD, tmp_path / "c.yaml")
    assert (config.server.host, config.server.port) == ("build.example.org", 48006)
    web, db = config.groups["web"], config.groups["db"]
    assert web.use == ("ssl", "http2", "-X")
    assert web.abi_x86 == ("64", "32")
    assert web.env == {"CPU_FLAGS_X86": "aes sse4_2", "MAKEOPTS": "-j4 -l4"}
    assert web.packages == ("@world", "app-misc/extra")
    assert web.package_use == (PackageUse("dev-lang/python", ("sqlite",)),
                               PackageUse("app-misc/foo::cqtest", ("-ssl",)))
    assert web.build_command == DEFAULT_BUILD_COMMAND
    assert web.portage_env() == {"CPU_FLAGS_X86": "aes sse4_2", "MAKEOPTS": "-j4 -l4",
                                 "USE": "ssl http2 -X", "ABI_X86": "64 32"}
    assert db.use == ("-X", "-*", "ldap") and db.abi_x86 is None
    assert db.packages == ("@world",)
    assert db.build_command[-1] == "{atom}"


def test_default_port_and_selection_order(tmp_path):
    config = parse_config("server: {host: b}\ngroups: {a: {}, b: {}, c: {}}\n", tmp_path / "c")
    assert config.server.port == 48005
    assert [g.name for g in config.select(["c", "a", "c"])] == ["c", "a"]
    assert [g.name for g in config.select([], all_groups=True)] == ["a", "b", "c"]


def test_example_config_is_valid():
    config = load_config(EXAMPLE)
    assert set(config.groups) == {"web", "db"}


def test_config_path_order(tmp_path):
    assert config_path("/x.yaml", {CONFIG_ENV: "/y.yaml"}) == Path("/x.yaml")
    assert config_path(None, {CONFIG_ENV: "/y.yaml"}) == Path("/y.yaml")
    assert config_path(None, {}) == Path("/etc/cq-portage/cq-portage.yaml")


BAD = [
    ("bad-yaml", "server: {host: b}\ngroups:\n  web: [unclosed\n", 4, "invalid YAML"),
    ("bad-yaml-tab", "server: {host: b}\ngroups:\n\tweb: {}\n", 3, "invalid YAML"),
    ("empty-file", "", 1, "must be a mapping"),
    ("not-a-mapping", "- a\n- b\n", 1, "must be a mapping"),
    ("missing-server", "groups: {web: {}}\n", 1, "no 'server' section"),
    ("server-no-host", "server: {port: 1}\ngroups: {web: {}}\n", 1, "has no 'host'"),
    ("server-bad-port", "server: {host: b, port: http}\ngroups: {web: {}}\n", 1,
     "port number"),
    ("server-timeout-nan", "server: {host: b, timeout: .nan}\ngroups: {web: {}}\n", 1,
     "server.timeout must be between 0 and 86400, not nan"),
    ("server-timeout-inf", "server: {host: b, timeout: .inf}\ngroups: {web: {}}\n", 1,
     "server.timeout must be between 0 and 86400, not inf"),
    ("server-wrong-type", "server: build\ngroups: {web: {}}\n", 1, "'server' must be a mapping"),
    ("missing-groups", "server: {host: b}\n", 1, "no 'groups' section"),
    ("empty-groups", "server: {host: b}\ngroups: {}\n", 2, "'groups' is empty"),
    ("unknown-top-key", "server: {host: b}\ngroups: {web: {}}\nextra: 1\n", 3,
     "unknown key 'extra'"),
    ("unknown-group-key", "server: {host: b}\ngroups:\n  web:\n    usee: ssl\n", 4,
     "unknown key 'usee' in group 'web'"),
    ("unknown-server-key", "server: {host: b, hots: c}\ngroups: {web: {}}\n", 1,
     "unknown key 'hots'"),
    ("duplicate-key", "server: {host: b}\ngroups:\n  web: {}\n  web: {}\n", 4,
     "duplicate key 'web'"),
    ("use-not-a-flag", "server: {host: b}\ngroups:\n  web:\n    use: \"ssl s=l\"\n", 4,
     "'s=l' is not a USE flag"),
    ("use-list-not-a-flag", "server: {host: b}\ngroups:\n  web:\n    use:\n      - ssl\n"
     "      - +ssl\n", 6, "'+ssl' is not a USE flag"),
    ("use-wrong-type", "server: {host: b}\ngroups:\n  web:\n    use: {ssl: true}\n", 4,
     "web.use must be a string or a list"),
    ("use-number", "server: {host: b}\ngroups:\n  web:\n    use: [ssl, 5]\n", 4,
     "entries must be text"),
    ("abi-bad-value", "server: {host: b}\ngroups:\n  web:\n    abi_x86: \"64 86\"\n", 4,
     "'86' is not an ABI_X86 value"),
    ("env-wrong-type", "server: {host: b}\ngroups:\n  web:\n    env: [A=b]\n", 4,
     "web.env must be a mapping"),
    ("env-bad-name", "server: {host: b}\ngroups:\n  web:\n    env: {\"A-B\": x}\n", 4,
     "not a variable name"),
    ("env-use", "server: {host: b}\ngroups:\n  web:\n    env: {USE: ssl}\n", 4,
     "set USE with the group's 'use' key"),
    ("env-root", "server: {host: b}\ngroups:\n  web:\n    env: {ROOT: /x}\n", 4,
     "ROOT cannot be set per group"),
    ("env-value-type", "server: {host: b}\ngroups:\n  web:\n    env: {CFLAGS: {a: b}}\n", 4,
     "web.env.CFLAGS must be a string or a list"),
    ("packages-bad-atom", "server: {host: b}\ngroups:\n  web:\n    packages: [\"=foo\"]\n", 4,
     "'=foo' is neither a package atom nor a @set"),
    ("packages-empty", "server: {host: b}\ngroups:\n  web:\n    packages: []\n", 4,
     "web.packages is empty"),
    ("package-use-no-flags", "server: {host: b}\ngroups:\n  web:\n    package_use:\n"
     "      - dev-lang/python\n", 5, "each entry must be"),
    ("package-use-bad-atom", "server: {host: b}\ngroups:\n  web:\n    package_use:\n"
     "      - \"python sqlite\"\n", 5, "'python' is not a package atom"),
    ("package-use-bad-flag", "server: {host: b}\ngroups:\n  web:\n    package_use:\n"
     "      - \"dev-lang/python sq!ite\"\n", 5, "'sq!ite' is not a USE flag"),
    ("package-use-not-list", "server: {host: b}\ngroups:\n  web:\n    package_use: "
     "\"dev-lang/python sqlite\"\n", 4, "must be a list"),
    ("build-command-not-list", "server: {host: b}\ngroups:\n  web:\n    build_command: "
     "\"emerge -b\"\n", 4, "must be a list of arguments"),
    ("group-not-mapping", "server: {host: b}\ngroups:\n  web: ssl\n", 3,
     "group 'web' must be a mapping"),
    ("bad-group-name", "server: {host: b}\ngroups:\n  \"we b\": {}\n", 3, "invalid group name"),
    ("unhashable-key", "server: {host: b}\ngroups:\n  web:\n    env: {CFLAGS: {[a]: b}}\n", 4,
     "invalid YAML: found unhashable key"),
    ("bad-tagged-value", "server: {host: b}\ngroups:\n  web:\n    env: {N: !!float x}\n", 4,
     "invalid YAML: a value that its explicit tag cannot take"),
]


@pytest.mark.parametrize("text,line,message", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_each_problem_is_one_line_with_file_and_line(tmp_path, text, line, message):
    assert_one_problem(tmp_path, text, line, message)


def test_all_problems_reported_at_once(tmp_path):
    text = ("server: {host: b}\ngroups:\n  web:\n    use: \"a=b\"\n    colour: red\n"
            "  db:\n    abi_x86: \"99\"\n")
    with pytest.raises(ConfigError) as caught:
        parse_config(text, tmp_path / "c.yaml")
    assert [p.split(":")[1] for p in caught.value.problems] == ["5", "4", "7"]


def test_unknown_group_lists_known_ones(tmp_path):
    config = parse_config("server: {host: b}\ngroups: {web: {}, db: {}}\n", tmp_path / "c")
    with pytest.raises(ConfigError, match=r"unknown group 'mail' \(known groups: web, db\)"):
        config.select(["web", "mail"])


def test_unreadable_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the config file: No such file"):
        load_config(tmp_path / "missing.yaml")


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "cq_portage.emerge.cli", *args],
                          capture_output=True, text=True, env=env, timeout=120,
                          cwd=Path(__file__).resolve().parents[2])


@pytest.mark.parametrize("name", ["bad-yaml", "missing-server", "use-not-a-flag",
                                  "unknown-group-key", "env-value-type", "unhashable-key",
                                  "bad-tagged-value"])
def test_cli_bad_config_exit_2_without_traceback(tmp_path, name):
    text, line, message = next(b[1:] for b in BAD if b[0] == name)
    path = tmp_path / "c.yaml"
    path.write_text(text)
    done = _cli("--config", str(path), "--group", "web", "--pretend")
    assert done.returncode == 2
    assert done.stderr == f"cq-emerge: {path}:{line}: " + done.stderr.split(": ", 2)[2]
    assert message in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_cli_unknown_group_and_config_from_environment(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("server: {host: b}\ngroups: {web: {}, db: {}}\n")
    import os
    done = _cli("--group", "mail", "-p", env={**os.environ, CONFIG_ENV: str(path)})
    assert done.returncode == 2
    assert done.stderr.strip() == \
        f"cq-emerge: {path}: unknown group 'mail' (known groups: web, db)"
