"""cq-emerge --pretend: emerge-like text, --json, exit codes, resolution problems reported
like emerge (and only where real emerge fails too)."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys

import pytest
from emerge_helpers import cq_emerge, emerge_plan, real_emerge, write_config

GROUPS = {
    "web": {"use": "ssl", "packages": ["app-misc/binmatch", "app-misc/bump"]},
    "db": {"use": "-ssl X", "abi_x86": "64 32", "packages": ["app-misc/binmatch",
                                                              "dev-libs/multi"]},
}


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    return write_config(tmp_path_factory.mktemp("cli"), GROUPS)


def test_pretend_text_is_emerge_like(world, config):
    done = cq_emerge(world.client, "--config", str(config), "-p", "--group", "web",
                     "--group", "db")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "\x1b[" not in out  # not a terminal: no colour
    assert "[binary  N     ] app-misc/binmatch-1.0::cqtest  USE=\"ssl -X\"" in out
    assert "[ebuild  U     ] app-misc/bump-2.0::cqtest" in out
    assert "[ebuild  N     ] app-misc/binmatch-1.0::cqtest  USE=\"X -ssl\"" in out
    assert "[ebuild  R     ] dev-libs/multi-1.0::cqtest  ABI_X86=\"32 64\"" in out
    assert "Build jobs (3, duplicates merged)" in out
    # Every package line of a group is one real emerge would print for the same flags.
    for line in emerge_plan(world.client, GROUPS["web"]["packages"], {"USE": "ssl"}):
        assert f"] {line.cpv}::cqtest" in out


def test_pretend_verbose_quiet_and_colour(world, config):
    verbose = cq_emerge(world.client, "--config", str(config), "-pv", "-g", "web").stdout
    assert "app-misc/bump-2.0::cqtest [bump-1.0]" in verbose and "key: " in verbose
    quiet = cq_emerge(world.client, "--config", str(config), "-pq", "-g", "web").stdout
    assert quiet.splitlines()[0].startswith("[binary") and "Total" not in quiet
    coloured = cq_emerge(world.client, "--config", str(config), "-p", "--color=y",
                         "-g", "web").stdout
    assert "\x1b[" in coloured


def test_pretend_json(world, config):
    done = cq_emerge(world.client, "--config", str(config), "-p", "--json", "--all-groups")
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert set(document) == {"plans", "jobs"}
    assert [p["group"] for p in document["plans"]] == ["web", "db"]
    for plan in document["plans"]:
        for package in plan["packages"]:
            assert {"cpv", "repo", "slot", "use", "action"} <= set(package)
            assert package["action"] in ("binary", "build")
    assert {tuple(j["groups"]) for j in document["jobs"]} == {("web",), ("db",)}


def test_forked_planning_equals_planning_in_one_process(world, config):
    """Several groups are resolved in forked children (one per CPU) unless --jobs=1."""
    args = ["--config", str(config), "-p", "--json", "-g", "web", "-g", "db"]
    forked = cq_emerge(world.client, *args)
    single = cq_emerge(world.client, *args, "--jobs=1")
    assert forked.returncode == single.returncode == 0, forked.stderr + single.stderr
    assert json.loads(forked.stdout) == json.loads(single.stdout)
    assert [p["group"] for p in json.loads(forked.stdout)["plans"]] == ["web", "db"]


@pytest.mark.parametrize("args,message", [
    ([], "no group given: name one with --group NAME, use --all-groups, or list this "
         "host's in host: {groups: [...]}"),
    (["-g", "web", "--all-groups"], "--group and --all-groups exclude each other"),
    (["-g", "web", "-v", "-q"], "--verbose and --quiet exclude each other"),
    (["-g", "web", "--bogus"], "unrecognized arguments: --bogus"),
    (["-g", "web", "--jobs=0"], "--jobs must be at least 1"),
])
def test_usage_errors_exit_2(world, config, args, message):
    done = cq_emerge(world.client, "--config", str(config), "-p", *args)
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("args, problem", [
    (["--pretend", "--ask"], "--pretend submits nothing: it excludes --ask and --detach"),
    (["--pretend", "--detach"], "--pretend submits nothing: it excludes --ask and --detach"),
    (["--ask", "--json"], "--ask needs a person at a terminal: it excludes --json"),
])
def test_submitting_flags_usage(world, config, args, problem):
    done = cq_emerge(world.client, "--config", str(config), "-g", "web", *args)
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1] == f"cq-emerge: error: {problem}"


PROBLEMS = [
    ("blocker", ["app-misc/conflict"]),
    ("masked", ["app-misc/masked"]),
    ("missing", ["app-misc/doesnotexist"]),
    ("slot-conflict", ["app-misc/needs-lib1", "app-misc/needs-lib2"]),
    ("missing-set", ["@nosuchset"]),
]


@pytest.mark.parametrize("targets", [p[1] for p in PROBLEMS], ids=[p[0] for p in PROBLEMS])
def test_resolution_problems_reported_like_emerge(world, tmp_path, targets):
    real = real_emerge(world.client, "--update", "--deep", "--newuse", *targets)
    assert real.returncode != 0
    config = write_config(tmp_path, {"g": {"packages": targets}, "ok": {"packages": [
        "app-misc/bump"]}})
    done = cq_emerge(world.client, "--config", str(config), "-p", "-g", "g", "-g", "ok")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "cannot plan group 'g'" in done.stderr
    # The same explanation real emerge gives (its key sentence), and the other group's plan.
    key = next(line for line in (real.stdout + real.stderr).splitlines() if line.strip()
               and any(word in line for word in ("!!!", "emerge:", "slot conflict", "blocks")))
    assert key.strip() in done.stderr, (key, done.stderr)
    assert "app-misc/bump-2.0" in done.stdout
    as_json = json.loads(cq_emerge(world.client, "--config", str(config), "-p", "--json",
                                   "-g", "g").stdout)
    assert as_json["plans"] == [] and as_json["errors"][0]["group"] == "g"


def test_broken_portage_setup_is_one_line_not_a_traceback(world, tmp_path, config):
    """A prefix folder that is not a Portage installation, and one without a profile."""
    broken = world.sandbox.add_prefix("no-profile")
    (broken.config_dir / "make.profile").unlink()
    for env in ({"PORTAGE_OVERRIDE_EPREFIX": str(tmp_path / "nothing")}, {}):
        done = cq_emerge(broken, "--config", str(config), "-p", "-g", "web", env=env)
        assert done.returncode == 1
        assert "Traceback" not in done.stderr
        assert done.stderr.startswith("cq-emerge: cannot load Portage's configuration: ")
    assert "no profile: make.profile is missing" in done.stderr


def test_colour_by_default_on_a_terminal_only(world, config):
    master, slave = pty.openpty()
    done = subprocess.run([sys.executable, "-m", "cq_portage.emerge.cli", "--config",
                           str(config), "-p", "-g", "web"], stdout=slave, stderr=subprocess.PIPE,
                          env=world.client.env(NOCOLOR=""), timeout=300)
    os.close(slave)
    output = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the terminal's other side is closed and drained
            break
        if not chunk:
            break
        output += chunk
    os.close(master)
    assert done.returncode == 0, done.stderr
    assert b"\x1b[" in output and b"app-misc/binmatch-1.0" in output
    piped = cq_emerge(world.client, "--config", str(config), "-p", "-g", "web",
                      env={"NOCOLOR": ""})
    assert "\x1b[" not in piped.stdout


def test_host_groups_are_what_a_bare_run_plans(world, tmp_path):
    path = tmp_path / "host.yaml"
    path.write_text("server: {host: localhost}\n"
                    "groups:\n  web: {use: ssl}\n  db: {use: X}\n"
                    "host: {groups: [db]}\n")
    done = cq_emerge(world.client, "--config", str(path), "-p", "--json")
    assert done.returncode == 0, done.stderr
    assert [p["group"] for p in json.loads(done.stdout)["plans"]] == ["db"]


@pytest.mark.parametrize("host, problem", [
    ("host: {groups: [nope]}", "5: 'host.groups' names unknown group 'nope' (known groups: web)"),
    ("host: {postsync: maybe}", "5: 'host.postsync' must be true, false or a list of "
                                 "repository names"),
    ("host: {other: 1}", "5: unknown key 'other'"),
])
def test_host_section_errors_name_the_line(world, tmp_path, host, problem):
    path = tmp_path / "host.yaml"
    path.write_text(f"server: {{host: localhost}}\ngroups:\n  web: {{use: ssl}}\n\n{host}\n")
    done = cq_emerge(world.client, "--config", str(path), "-p")
    assert done.returncode == 2
    assert f"{path}:{problem}" in done.stderr and "Traceback" not in done.stderr
