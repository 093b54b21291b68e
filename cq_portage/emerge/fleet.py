"""Fleet mode: update every host of a group from an admin host, over SSH.

1. Plans: each host's own `cq-emerge --local --pretend --json -g GROUP`, hosts in parallel
   (remote.py). A host that cannot be reached or planned is reported and left out.
2. Builds: the jobs of every plan, deduplicated by key (jobs.build_jobs), submitted once
   with the admin host's MUNGE credential; kept in the admin's pending state like a local
   run's, so an interrupted fleet run picks its builds up again.
3. Installs: one update.Update per host, fed the outcome of each build as it ends; it
   installs on its host over SSH what is ready there (hosts in parallel, each host
   serially), skips dependants of failed builds, and stops only that host when an install
   fails.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TextIO

from cq_portage.cq.client import Client, ClientError, Outcome
from cq_portage.emerge.common import (EXIT_FAILURE, EXIT_NO, EXIT_OK, EXIT_USAGE, Output,
                                      confirm, make_client)
from cq_portage.emerge.fleet_report import (print_plans, print_pretend_json, report,
                                            say_nothing_to_merge)
from cq_portage.emerge.jobs import BuildJob, build_jobs
from cq_portage.emerge.logs import prune_logs
from cq_portage.emerge.pending import STATE_DIR, Busy, Pending, state_name
from cq_portage.emerge.plan import Plan
from cq_portage.emerge.plan_json import profile_to_json
from cq_portage.emerge.profiles import Config, GroupProfile
from cq_portage.emerge.progress import Progress
from cq_portage.emerge.remote import HostRun, RemoteError, RemoteHost
from cq_portage.emerge.update import Update, wait_all

log = logging.getLogger(__name__)
_MAX_THREADS = 32  # plans fetched at once


class Labelled:
    """A Progress shared by threads, each line named after its host (or "build")."""

    def __init__(self, progress: Progress, label: str, lock: threading.Lock):
        self.progress, self.label, self.lock = progress, label, lock

    def set(self, name: str, state: str, detail: str = "") -> None:
        with self.lock:
            self.progress.set(f"{self.label}: {name}", state, detail)


def ssh_files_problem(config: Config) -> str | None:
    """The SSH key and known_hosts must be readable before any host is tried: the first of
    them that is not (the key before known_hosts), in one line."""
    unreadable = config.ssh.unreadable()
    if not unreadable:
        return None
    what, path = unreadable[0]
    return (f"{config.path}: ssh.{what} {path} cannot be read (fleet mode reaches "
            f"the group's hosts with it; set ssh: {{{what}: FILE}})")


def fetch_plans(runs: list[HostRun]) -> None:
    def fetch(run: HostRun) -> None:
        try:
            run.plan = run.remote.plan()
        except RemoteError as e:
            run.error, run.report = str(e), e.report
        except Exception as e:  # noqa: BLE001 - one host's surprise must not stop the rest
            log.debug("planning on %s", run.label, exc_info=True)
            run.error = f"{type(e).__name__}: {e}"

    with ThreadPoolExecutor(min(len(runs), _MAX_THREADS)) as pool:
        list(pool.map(fetch, runs))


def profile_drift(ours: dict, plan: Plan) -> list[str]:
    """The profile keys whose value in the host's config differs from ours: a site's
    copies of the config drifting apart (the host's own plan and builds still follow its
    copy, as its local runs would)."""
    theirs = profile_to_json(plan.group)
    return [key for key in ours if ours[key] != theirs.get(key)]


def needed_by(runs: list[HostRun], jobs: list[BuildJob]) -> dict[str, list[str]]:
    """Dedupe key -> the hosts whose plan needs that build."""
    hosts: dict[str, list[str]] = {job.key: [] for job in jobs}
    for run in runs:
        if run.plan is not None:
            for job in build_jobs([run.plan]):
                hosts[job.key].append(run.label)
    return hosts


def run_fleet(config: Config, groups: list[GroupProfile], output: Output, *,
              pretend: bool = False, ask: bool = False, stdout: TextIO = sys.stdout,
              stderr: TextIO = sys.stderr) -> int:
    problem = ssh_files_problem(config)
    if problem:
        stderr.write(f"cq-emerge: {problem}\n")
        return EXIT_USAGE
    runs = [HostRun(RemoteHost(target, group.name, config.ssh))
            for group in groups for target in group.hosts]
    try:
        return _run(config, groups, output, runs, pretend, ask, stdout, stderr)
    except KeyboardInterrupt:
        stderr.write("cq-emerge: interrupted\n")
        return EXIT_NO
    finally:
        for run in runs:
            run.remote.close()


def _run(config: Config, groups: list[GroupProfile], output: Output, runs: list[HostRun],
         pretend: bool, ask: bool, stdout: TextIO, stderr: TextIO) -> int:
    fetch_plans(runs)
    profiles = {group.name: profile_to_json(group) for group in groups}
    for run in runs:
        if run.error:
            stderr.write(f"!!! cq-emerge: host {run.label} (group {run.group}): "
                         f"{run.error}\n" + (f"{run.report}\n" if run.report else ""))
        elif (drift := profile_drift(profiles[run.group], run.plan)):
            stderr.write(f"cq-emerge: warning: host {run.label}: its config gives group "
                         f"{run.group} another {', '.join(drift)} than {config.path} "
                         "(it plans with its own)\n")
    planned = [run for run in runs if run.plan is not None]
    jobs = build_jobs([run.plan for run in planned])
    hosts_of = needed_by(runs, jobs)
    if pretend:
        if output.json:
            print_pretend_json(runs, jobs, hosts_of, stdout)
        else:
            print_plans(runs, jobs, hosts_of, output, stdout)
        return EXIT_OK if all(run.error is None for run in runs) else EXIT_FAILURE
    if not any(run.plan.entries for run in planned):
        say_nothing_to_merge(runs, output, stdout)
        report(runs, None, None, output, stdout, stderr)
        return EXIT_OK if all(run.ok for run in runs) else EXIT_FAILURE
    if not output.quiet and not output.json:
        print_plans(runs, jobs, hosts_of, output, stdout)
    hosts = sum(1 for run in planned if run.plan.entries)
    if ask and not confirm(len(jobs), sum(len(run.plan.entries) for run in planned),
                           output.colour, f" on {hosts} host{'s' * (hosts != 1)}"):
        stdout.write("\nQuitting.\n\n")
        return EXIT_NO
    return _update(config, groups, runs, planned, jobs, hosts_of, output, stdout, stderr)


def _update(config: Config, groups: list[GroupProfile], runs: list[HostRun],
            planned: list[HostRun], jobs: list[BuildJob], hosts_of: dict[str, list[str]],
            output: Output, stdout: TextIO, stderr: TextIO) -> int:
    state_dir = Path(os.environ.get("PORTAGE_OVERRIDE_EPREFIX") or "/") / STATE_DIR
    prune_logs(state_dir / "logs", config.keep_logs_days)
    client = make_client(config.server)
    progress = output.progress(stdout)
    lock = threading.Lock()
    lock_name = state_name("fleet", groups)
    builder: Update | None = None
    fatal: str | None = None
    try:
        with Pending.open(state_dir, lock_name) as pending:
            builder = Update(client, jobs, pending, Labelled(progress, "build", lock),
                             log_dir=state_dir / "logs")
            builder.submit()
            for run in planned:
                run.update = Update(client, build_jobs([run.plan]), None,
                                    Labelled(progress, run.label, lock), run.plan,
                                    state_dir / "logs" / "fleet" / _safe(run.label),
                                    installer=run.remote.install)
                run.update.built = builder.built  # what each build made, read by the builder
                run.update.adopt(builder.ids)
            fatal = _wait_and_install(client, builder, planned)
    except (Busy, ClientError, RuntimeError) as e:
        stderr.write(f"cq-emerge: {e}\n")
        return EXIT_FAILURE
    except KeyboardInterrupt:  # before any install started: nothing to let finish
        stderr.write("cq-emerge: interrupted; what was submitted stays queued and the next "
                     "run picks it up\n")
        return EXIT_FAILURE
    finally:
        client.close()
    if fatal:
        stderr.write(f"cq-emerge: {fatal}\n")
    report(runs, builder.summary, hosts_of, output, stdout, stderr)
    ok = fatal is None and builder.summary.ok and all(run.ok for run in runs)
    return EXIT_OK if ok else EXIT_FAILURE


def _wait_and_install(client: Client, builder: Update, planned: list[HostRun]) -> str | None:
    """Wait for the builds (update.wait_all) and hand each outcome, as it comes, to the
    hosts that need it; every host installs in its own thread. Returns why waiting
    stopped early (the server went away, Ctrl-C), or None."""
    workers = [threading.Thread(target=_host_worker, args=(run,), name=f"host {run.label}",
                                daemon=True) for run in planned]
    fatal = None
    try:
        for worker in workers:
            worker.start()
        def ended(job_id: int, outcome: Outcome) -> None:
            outcome = builder.explained(job_id, outcome)
            builder.job_ended(job_id, outcome)
            for run in planned:
                if job_id in run.update.ids.values():
                    run.events.put((job_id, outcome))

        wait_all(client, builder.ids.values(), ended, builder.refresh)
    except ClientError as e:
        fatal = f"stopped waiting for the builds: {e}"
    except KeyboardInterrupt:
        # Installs under way finish (cutting an emerge short could leave a host half
        # merged); nothing new starts. Queued builds stay, kept in the pending state.
        for run in planned:
            run.update.stopped = "(interrupted)"
        fatal = ("interrupted: installs under way were let finish; the builds stay queued "
                 "and the next run picks them up")
    finally:
        for run in planned:
            run.events.put(None)
        for worker in workers:
            if worker.is_alive():
                worker.join()
    return fatal


def _host_worker(run: HostRun) -> None:
    """Install on one host, serially, whatever each ended build makes ready there."""
    update = run.update
    try:
        update.install_ready()  # binary packages need no build
        while (event := run.events.get()) is not None:
            job_id, outcome = event
            update.job_ended(job_id, outcome)
            update.install_ready()
    except Exception as e:  # noqa: BLE001 - reported for this host; the others go on
        log.debug("installing on %s", run.label, exc_info=True)
        run.error = f"{type(e).__name__}: {e}"
        while run.events.get() is not None:
            pass
    update.finish()


def _safe(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", label)
