"""cq-emerge --postsync: what Portage's postsync hook runs after a sync.

Portage runs hooks in /etc/portage/postsync.d/ once per sync with no arguments, and hooks in
/etc/portage/repo.postsync.d/ once per repository with NAME URI PATH. By default cq-emerge
acts on the first kind only, so one sync starts one update; `host: {postsync: [REPO, ...]}`
makes it act after those repositories instead, and `postsync: false` turns it off. The
update itself (plan, builds, installs of this host's groups) runs in the background, so the
sync returns at once, and logs to EROOT/var/log/cq-portage/postsync.log. It runs in a clean
environment, once the syncing process (CQ_PORTAGE_SYNC_PID, which the hook sets to its
parent, emerge or emaint) has exited: see background.py for why.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TextIO

from cq_portage.emerge.background import clean_environment, start_update
from cq_portage.emerge.common import EXIT_OK
from cq_portage.emerge.profiles import Config

NIGHTLY_ENV = "CQ_PORTAGE_NIGHTLY"  # set by the nightly job, which runs cq-emerge itself
SYNC_PID_ENV = "CQ_PORTAGE_SYNC_PID"  # set by the hook: the syncing process to wait for


def run_postsync(config: Config, repo_args: list[str], stdout: TextIO = sys.stdout) -> int:
    setting, groups = config.host.postsync, config.host.groups
    repo = repo_args[0] if repo_args else None
    if os.environ.get(NIGHTLY_ENV):
        stdout.write("cq-emerge: postsync: the nightly job updates this host itself\n")
        return EXIT_OK
    if setting is False:
        stdout.write(f"cq-emerge: postsync: off (host: {{postsync: false}} in {config.path})\n")
        return EXIT_OK
    if not groups:
        stdout.write(f"cq-emerge: postsync: {no_host_groups(config)}\n")
        return EXIT_OK
    if (repo is None) != (setting is True) or (repo is not None and repo not in setting):
        return EXIT_OK  # not the call this host acts on (see the module docstring)
    root = Path(os.environ.get("EROOT") or os.environ.get("PORTAGE_OVERRIDE_EPREFIX", "/"))
    log_file = root / "var/log/cq-portage/postsync.log"  # appended to; logrotate trims it
    environ = clean_environment(os.environ)
    environ.pop(SYNC_PID_ENV, None)
    start_update(config.path, groups, log_file, "after a sync", environ=environ,
                 after_pid=_sync_pid(stdout))
    stdout.write(f"cq-emerge: postsync: updating {', '.join(groups)} in the background "
                 f"(log: {log_file})\n")
    return EXIT_OK


def _sync_pid(stdout: TextIO) -> int | None:
    value = os.environ.get(SYNC_PID_ENV, "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) <= 1:
        stdout.write(f"cq-emerge: postsync: {SYNC_PID_ENV}={value!r} is not a process id; "
                     "not waiting for the sync to end\n")
        return None
    return int(value)


def no_host_groups(config: Config) -> str:
    return (f"no host: {{groups: [...]}} in {config.path}: this host updates nothing by "
            "itself")


def print_host_groups(config: Config, stdout: TextIO = sys.stdout,
                      stderr: TextIO = sys.stderr) -> int:
    """cq-emerge --host-groups: what the nightly job asks before it syncs anything."""
    stdout.write(" ".join(config.host.groups) + "\n")
    if not config.host.groups:
        stderr.write(f"cq-emerge: {no_host_groups(config)}\n")
    return EXIT_OK
