"""cq-server as a service: the OpenRC script and its conf.d, the systemd unit, logrotate and
the example configs agree with each other and with cq-server itself."""

from __future__ import annotations

import ast
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cq_portage.cq.config import DEFAULT_STATE_DIR, ServerConfig, load_config
from cq_portage.cq.server_cli import parser as server_parser
from packaging_helpers import REPO, span, systemd_unit

INIT = REPO / "etc" / "init.d" / "cq-server"
CONFD = REPO / "etc" / "conf.d" / "cq-server"
UNIT = REPO / "etc" / "systemd" / "cq-server.service"
LOGROTATE = REPO / "etc" / "logrotate.d" / "cq-server"
SERVER_YAML = REPO / "etc" / "cq" / "cq-server.yaml"
EMERGE_YAML = REPO / "etc" / "cq-portage" / "cq-portage.yaml"
LOG_FILE = "/var/log/cq/cq-server.log"
# The top-level keys of cq-server's config, as the issue lists them.
SERVER_KEYS = {"listen", "state_dir", "munge_socket", "allow", "run_as", "environment",
               "limits", "incoming_hook", "hook_timeout", "stop_grace_seconds",
               "keep_finished_days", "build_hosts", "ssh"}

# openrc-run's helpers, as far as the script uses them; depend() keywords are recorded.
_OPENRC_STUBS = r"""
need() { echo "NEED $*"; }
use() { echo "USE $*"; }
after() { echo "AFTER $*"; }
before() { :; }
provide() { :; }
ebegin() { :; }; eend() { :; }; eerror() { :; }; einfo() { :; }
checkpath() { echo "CHECKPATH $*"; }
eval "$CONFD_TEXT"
. "$INIT"
echo "COMMAND $command"
command="$CQ_SERVER_BIN"  # this checkout's cq-server, for start_pre's --check-config
echo "SUPERVISOR $supervisor"
echo "PIDFILE $pidfile"
echo "RETRY $retry"
echo "EXTRA $extra_started_commands $extra_commands"
printf 'ARGS %s\n' "$(echo $command_args)"
depend
start_pre
echo "START_PRE $?"
RC_CMD=stop
stop_pre
echo "STOP_PRE $?"
RC_CMD=restart
stop_pre
echo "RESTART_STOP_PRE $?"
start_pre
echo "RESTART_START_PRE $?"
RC_CMD=
command -v reload >/dev/null && echo "RELOAD"
"""


def openrc(shell: str = "sh", stderr: str = "", **conf: str) -> dict[str, list[str]]:
    """Source conf.d (plus `conf` on top) and the init script the way openrc-run does, in a
    POSIX shell with openrc-run's helpers stubbed; what each stub saw, by keyword."""
    confd = CONFD.read_text() + "".join(f"\n{k}={shlex.quote(v)}" for k, v in conf.items())
    done = subprocess.run(
        [shell, "-c", _OPENRC_STUBS],
        env={"PATH": "/usr/bin:/bin", "RC_SVCNAME": "cq-server", "CONFD_TEXT": confd,
             "INIT": str(INIT), "CQ_SERVER_BIN": cq_server_bin()},
        capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and stderr in done.stderr, done.stderr
    assert bool(done.stderr) == bool(stderr), done.stderr
    seen: dict[str, list[str]] = {}
    for line in done.stdout.splitlines():
        word, _, rest = line.partition(" ")
        seen.setdefault(word, []).append(rest)
    return seen


def cq_server_bin() -> str:
    """This Python's cq-server: beside it in a venv, else on PATH (an ebuild's test phase
    puts the image's bin directory there)."""
    beside = Path(sys.executable).parent / "cq-server"
    return str(beside) if beside.is_file() else (shutil.which("cq-server") or str(beside))


def server_args(args: list[str]):
    """cq-server's own parser must accept what the service files pass it."""
    try:
        return server_parser().parse_args(args)
    except SystemExit:
        pytest.fail(f"cq-server rejects its service command line {args}")


def largest_stop_grace() -> float:
    return max(ServerConfig().stop_grace, load_config(SERVER_YAML).stop_grace)


# --- OpenRC -------------------------------------------------------------------------------

@pytest.mark.parametrize("path", [INIT, CONFD], ids=lambda p: p.parent.name)
def test_openrc_files_are_valid_shell(path):
    for shell in ("sh", "bash"):
        done = subprocess.run([shell, "-n", str(path)], capture_output=True, text=True)
        assert done.returncode == 0, f"{shell}: {done.stderr}"


def test_openrc_script_declares_its_dependencies():
    assert INIT.read_text().startswith("#!/sbin/openrc-run\n")
    seen = openrc()
    # sys-auth/munge installs its OpenRC service as "munged" (its systemd unit: munge).
    assert "munged" in " ".join(seen["NEED"]).split()
    assert "net" in " ".join(seen.get("USE", [])).split()


def test_openrc_script_is_supervised_with_a_pidfile_under_run():
    seen = openrc(CQ_SERVER_CONFIG=str(SERVER_YAML))  # start_pre needs a readable config
    assert seen["COMMAND"] == ["/usr/bin/cq-server"]
    assert seen["SUPERVISOR"] == ["supervise-daemon"]
    assert seen["PIDFILE"][0].startswith("/run/")
    assert "reload" in seen["EXTRA"][0].split() and seen.get("RELOAD") == [""]
    checked = " ".join(seen["CHECKPATH"])
    # The log's folder, from CQ_SERVER_LOG; the state dir is the config's (cq-server makes it).
    assert "/var/log/cq" in checked and "/var/lib/cq" not in checked


def test_openrc_state_dir_from_conf_d():
    seen = openrc(CQ_SERVER_CONFIG=str(SERVER_YAML), CQ_SERVER_STATE_DIR="/srv/cq",
                  CQ_SERVER_LOG="/srv/log/cq/server.log")
    args = shlex.split(seen["ARGS"][0])
    assert str(server_args(args).state_dir) == "/srv/cq"
    assert "-d -m 0750 -o root:root /srv/cq" in seen["CHECKPATH"]
    assert "-d -m 0750 -o root:root /srv/log/cq" in seen["CHECKPATH"]
    assert not any("/var/" in c for c in seen["CHECKPATH"]), seen["CHECKPATH"]


def test_openrc_restart_with_a_broken_config_stops_nothing(tmp_path):
    """OpenRC's service-script guide: check in stop_pre when RC_CMD is restart, so that
    `rc-service cq-server restart` refuses before the running build is interrupted."""
    broken = tmp_path / "cq-server.yaml"
    broken.write_text("listen: {port: 0}\n")
    seen = openrc(CQ_SERVER_CONFIG=str(broken),
                  stderr=f"cq-server: {broken}:1: port 0 is not between 1 and 65535")
    assert seen["RESTART_STOP_PRE"] == ["1"], "restart must refuse before stopping"
    assert seen["STOP_PRE"] == ["0"], "a plain stop is never refused"
    good = openrc(CQ_SERVER_CONFIG=str(SERVER_YAML))
    assert good["RESTART_STOP_PRE"] == good["RESTART_START_PRE"] == good["STOP_PRE"] == ["0"]


def test_openrc_default_command_line():
    args = shlex.split(openrc()["ARGS"][0])
    assert "--daemon" not in args, "supervise-daemon needs cq-server in the foreground"
    parsed = server_args(args)
    assert str(parsed.config) == "/etc/cq/cq-server.yaml"
    assert args[args.index("--log-file") + 1] == LOG_FILE


@pytest.mark.parametrize("shell", ["sh", "bash"])
def test_openrc_conf_d_variables_reach_the_command_line(shell):
    seen = openrc(shell, CQ_SERVER_HOST="192.0.2.7", CQ_SERVER_PORT="48006",
                  CQ_SERVER_CONFIG="/etc/cq/other.yaml", CQ_SERVER_LOG="syslog",
                  CQ_SERVER_OPTS="-v --state-dir /srv/cq")
    args = shlex.split(seen["ARGS"][0])
    parsed = server_args(args)
    assert (parsed.host, parsed.port, str(parsed.config)) == \
        ("192.0.2.7", 48006, "/etc/cq/other.yaml")
    assert "--syslog" in args and "--log-file" not in args
    assert parsed.verbose and str(parsed.state_dir) == "/srv/cq"


def test_openrc_empty_values_turn_options_off():
    args = shlex.split(openrc(CQ_SERVER_CONFIG="", CQ_SERVER_LOG="")["ARGS"][0])
    assert args == []
    server_args(args)


def test_openrc_start_refuses_a_missing_config():
    assert openrc(CQ_SERVER_CONFIG="/nonexistent/cq-server.yaml")["START_PRE"] == ["1"]
    assert openrc(CQ_SERVER_CONFIG=str(SERVER_YAML))["START_PRE"] == ["0"]


def test_openrc_start_refuses_a_broken_config(tmp_path):
    broken = tmp_path / "cq-server.yaml"
    broken.write_text("listen: {port: 0}\n")
    seen = openrc(CQ_SERVER_CONFIG=str(broken),
                  stderr=f"cq-server: {broken}:1: port 0 is not between 1 and 65535")
    assert seen["START_PRE"] == ["1"]


def test_openrc_conf_d_documents_only_variables_that_do_something():
    openrc_run = {"retry", "respawn_delay", "respawn_max", "respawn_period", "error_log",
                  "output_log"}
    names = re.findall(r"^#\s*([A-Za-z_]+)=", CONFD.read_text(), re.M)
    assert {"CQ_SERVER_CONFIG", "CQ_SERVER_HOST", "CQ_SERVER_PORT", "CQ_SERVER_OPTS"} <= \
        set(names)
    init = INIT.read_text()
    for name in names:
        assert name in openrc_run or re.search(rf"\${{{name}\b", init), (
            f"{name} in conf.d is not used by the init script")


def test_openrc_stop_timeout_outlasts_the_stop_grace():
    retry = openrc()["RETRY"][0]
    m = re.fullmatch(r"(?:SIG)?TERM/(\d+)/(?:SIG)?KILL/\d+", retry)
    assert m, f"retry={retry!r} should be SIGTERM/<seconds>/SIGKILL/<seconds>"
    assert int(m[1]) > largest_stop_grace()


# --- systemd ------------------------------------------------------------------------------

def unit_values(path: Path, key: str) -> list[str]:
    """Every value of a key that systemd allows more than once (ExecReload=...), in order."""
    return [line.split("=", 1)[1] for line in path.read_text().splitlines()
            if line.startswith(f"{key}=")]


def test_systemd_unit_orders_after_munge_and_reloads_with_hup():
    u = systemd_unit(UNIT)
    assert "munge.service" in u["Unit"]["After"].split()
    assert "munge.service" in (u["Unit"].get("Wants", "") + " " +
                               u["Unit"].get("Requires", "")).split()
    assert re.fullmatch(r"/bin/kill -(HUP|s HUP|SIGHUP) \$MAINPID", u["Service"]["ExecReload"])
    assert u["Install"]["WantedBy"] == "multi-user.target"


def test_systemd_checks_the_config_before_start_and_reload():
    """`systemctl reload` with a broken config fails before any HUP is sent (systemd runs
    ExecReload= lines in order and stops at the first failure); a start fails at once."""
    start = unit_values(UNIT, "ExecStart")[0]
    checks = [unit_values(UNIT, "ExecStartPre"), unit_values(UNIT, "ExecReload")[:-1]]
    assert re.fullmatch(r"/bin/kill .*\$MAINPID", unit_values(UNIT, "ExecReload")[-1])
    for check in checks:
        assert len(check) == 1, check
        argv = shlex.split(check[0])
        assert "--check-config" in argv
        # The same config and options as the server itself gets.
        assert argv[:1] + [a for a in argv[1:] if a != "--check-config"] == shlex.split(start)
        assert server_args([a for a in argv[1:] if a != "$CQ_SERVER_OPTS"]).check_config


def test_systemd_unit_runs_cq_server_in_the_foreground():
    service = systemd_unit(UNIT)["Service"]
    # notify: ready once it listens (cq_portage/cq/sdnotify.py, tested in test_cq_startup)
    assert service["Type"] == "notify" and service["NotifyAccess"] == "main"
    argv = shlex.split(service["ExecStart"].replace("$CQ_SERVER_OPTS", ""))
    assert argv[0] == "/usr/bin/cq-server" and "--daemon" not in argv
    assert str(server_args(argv[1:]).config) == "/etc/cq/cq-server.yaml"


def test_systemd_stop_leaves_the_job_to_cq_server():
    service = systemd_unit(UNIT)["Service"]
    assert service.get("KillSignal", "SIGTERM") in ("SIGTERM", "TERM")
    # control-group (the default) would SIGTERM the running build at once.
    assert service["KillMode"] == "mixed"
    assert span(service["TimeoutStopSec"]) > largest_stop_grace()


def test_systemd_state_directory_is_the_default_state_dir():
    service = systemd_unit(UNIT)["Service"]
    assert f"/var/lib/{service['StateDirectory']}" == str(DEFAULT_STATE_DIR)
    assert service["LogsDirectory"] == "cq"


@pytest.mark.parametrize("setting", ["ProtectSystem", "ProtectHome", "PrivateTmp",
                                     "ReadOnlyPaths", "ProtectKernelModules",
                                     "RestrictSUIDSGID", "MemoryDenyWriteExecute",
                                     "NoNewPrivileges", "CapabilityBoundingSet"])
def test_systemd_hardening_leaves_emerge_working(setting):
    """Builds write /usr, /etc and /var/db/pkg, make setuid files, use tmpfs on
    /var/tmp/portage and /lib/modules: these settings would break some of them."""
    value = systemd_unit(UNIT)["Service"].get(setting, "no").strip().lower()
    assert value in ("no", "false", "0", ""), f"{setting}={value} breaks emerge jobs"


# --- logrotate ----------------------------------------------------------------------------

def test_logrotate_rotates_the_service_log_and_signals_a_reopen():
    text = LOGROTATE.read_text()
    blocks = dict(re.findall(r"^(/\S+)\s*\{(.*?)^\}", text, re.M | re.S))
    assert LOG_FILE in blocks, f"{LOG_FILE} is not rotated"
    block = blocks[LOG_FILE]
    assert re.search(r"^\s*missingok\s*$", block, re.M), "systemd logs to the journal"
    post = re.search(r"postrotate(.*?)endscript", block, re.S)
    assert post, "no postrotate: cq-server would keep writing to the rotated file"
    script = post[1]
    # A reload (SIGHUP) reopens the log; a restart would interrupt the running build.
    assert not re.search(r"\b(restart|stop|kill)\b", script), script
    assert re.search(r"systemctl (--\S+ )*reload cq-server\.service", script)
    assert re.search(r"/etc/init\.d/cq-server (--\S+ )*reload\b", script)
    done = subprocess.run(["sh", "-n", "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "copytruncate" not in block, "cq-server reopens its log: copytruncate loses lines"


def test_logrotate_rotates_the_nightly_log():
    nightly = (REPO / "etc" / "libexec" / "cq-portage-nightly").read_text()
    m = re.search(r"^log_file=\$\{CQ_NIGHTLY_LOG:-(/\S+)\}$", nightly, re.M)
    assert m, "the nightly job's default log file moved: update etc/logrotate.d/cq-portage"
    text = (REPO / "etc" / "logrotate.d" / "cq-portage").read_text()
    headers = [line.split()[:-1] for line in text.splitlines() if line.rstrip().endswith("{")]
    assert any(m[1] in paths for paths in headers)
    assert any("/var/log/cq-portage/postsync.log" in paths for paths in headers)


# --- example configs ----------------------------------------------------------------------

def test_config_keys_listed_here_are_the_loaders():
    """SERVER_KEYS mirrors config.py: a new key there must be documented in the example."""
    source = (REPO / "cq_portage" / "cq" / "config.py").read_text()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and len(node.args) == 3 and \
                isinstance(node.args[1], ast.Constant) and \
                node.args[1].value == "the server config":
            assert ast.literal_eval(node.args[2]) == SERVER_KEYS
            return
    pytest.fail("config.py no longer checks the top-level keys with c.mapping(...)")


def test_server_example_uses_known_keys_and_documents_all_of_them():
    text = SERVER_YAML.read_text()
    data = yaml.safe_load(text)
    assert isinstance(data, dict)
    assert set(data) <= SERVER_KEYS
    lines = text.splitlines()
    mentioned = set()
    for i, line in enumerate(lines):
        m = re.match(r"^#?([a-z_]+):", line)
        if not m or m[1] not in SERVER_KEYS:
            continue
        mentioned.add(m[1])
        above = lines[i - 1] if i else ""
        assert above.startswith("#") or " # " in line, f"{m[1]} has no comment"
    assert mentioned == SERVER_KEYS, f"not in the example: {sorted(SERVER_KEYS - mentioned)}"


def test_server_example_loads_and_keeps_builds_as_root():
    config = load_config(SERVER_YAML)
    assert config.run_as == ServerConfig().run_as, "builds must run as the (root) server"
    assert 0 in config.authorizer.uids
    assert config.state_dir == DEFAULT_STATE_DIR
    assert config.env_policy.denied("ROOT") and config.env_policy.denied("PORTAGE_CONFIGROOT")
    assert not config.env_policy.denied("USE") and not config.env_policy.denied("ABI_X86")
    assert config.incoming_hook is None


def test_service_defaults_point_at_the_installed_example():
    assert "CQ_SERVER_CONFIG=\"/etc/cq/cq-server.yaml\"" in CONFD.read_text()
    assert "/etc/cq/cq-server.yaml" in systemd_unit(UNIT)["Service"]["ExecStart"]


def test_emerge_example_parses():
    data = yaml.safe_load(EMERGE_YAML.read_text())
    assert isinstance(data, dict) and data
