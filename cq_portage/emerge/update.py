"""cq-emerge without --pretend: submit the builds, wait, install each package when it is ready.

For one group (the host's own) every plan entry is tracked: binary packages are installed at
once, built ones when their job ends well, always after the plan entries they depend on; a
failed build skips its dependants but not the rest; a failed install stops the group. With
several groups (a build host pre-building) only the builds are submitted and waited for.

How a batch is installed is the `installer`'s business: here with `sh SCRIPT`
(run_locally), or on another host over SSH (fleet mode, remote.py); everything else
(what is ready, what a failure skips or stops) is the same wherever the host is.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from cq_portage.buildroot.roots import BUILT_PREFIX
from cq_portage.cq.client import Client, ClientError, JobState, Outcome, Refused
from cq_portage.emerge.install import install_script
from cq_portage.emerge.install_log import install_failure
from cq_portage.emerge.jobs import BuildJob, entry_key, wire_key
from cq_portage.emerge.pending import Pending
from cq_portage.emerge.plan import BINARY, Plan, PlanEntry
from cq_portage.emerge.progress import Progress

log = logging.getLogger(__name__)
POLL_SECONDS = 2


def wait_all(client: Client, ids: Iterable[int], on_end: Callable[[int, Outcome], None],
             on_poll: Callable[[list], None]) -> None:
    """Until every job has ended, calling on_end(job id, outcome) for each as it ends.
    Waiting goes in id order (one requester's jobs start in that order), but each poll of
    the queue (on_poll gets the list) also collects jobs that ended out of turn: with
    several build hosts a later job may end first, and its installs need not wait."""
    remaining = sorted(set(ids))
    ended: set[int] = set()
    current = 0

    def poll(_job) -> None:  # the job waited for, still queued or running
        jobs = client.list()
        on_poll(jobs)
        active = {j.id for j in jobs if not j.state.ended}
        for job_id in remaining:
            if job_id not in ended and job_id not in active and job_id != current:
                ended.add(job_id)
                on_end(job_id, client.wait(job_id, poll=POLL_SECONDS))

    for current in remaining:
        if current not in ended:
            outcome = client.wait(current, poll, poll=POLL_SECONDS)
            ended.add(current)
            on_end(current, outcome)


class Installer(Protocol):
    def __call__(self, script: str, log_file: Path) -> tuple[int, str]:
        """Run the install script, its output into log_file: (exit status, why it failed
        when the script could not run at all, else "")."""


def run_locally(script: str, log_file: Path) -> tuple[int, str]:
    """The installer of this host: `sh SCRIPT`, the script kept next to its log."""
    path = log_file.with_suffix(".sh")
    path.write_text(script)
    with open(log_file, "wb") as out:
        return subprocess.run(["sh", str(path)], stdin=subprocess.DEVNULL, stdout=out,
                              stderr=subprocess.STDOUT).returncode, ""


_BUILT = re.compile(r"=\S+-(\d+)::\S+$")  # what follows BUILT_PREFIX


def _why_failed(lines: list[str]) -> str:
    """The line of a failed build's log that says why: the build root's own one line
    ("build host's ::gentoo has no =...; sync the build host"), else the last ebuild error
    ("ERROR: cat/pkg-1::repo failed (compile phase): its die message"), else emerge's last
    "!!! ..." line; "" when there is none."""
    for line in reversed(lines):
        if line.startswith("cq-build-root: "):
            return line.removeprefix("cq-build-root: ")
    for at in range(len(lines) - 1, -1, -1):
        if lines[at].startswith("* ERROR: "):
            detail = lines[at + 1].lstrip("* ") if at + 1 < len(lines) else ""
            return " ".join((lines[at].removeprefix("* "), detail)).strip()
    return next((line.removeprefix("!!! ") for line in reversed(lines)
                 if line.startswith("!!! ")), "")


def _needs(entry: PlanEntry) -> set[str]:
    """What must be installed before `entry`, or with it."""
    return {*entry.depends, *entry.merge_with}


@dataclass
class Item:
    """One line of progress: a plan entry (installing) or a build job (building only)."""

    name: str
    key: str | None  # the build's dedupe key; None: a binary package is there already
    entry: PlanEntry | None = None
    state: str = "waiting"
    detail: str = ""
    job_id: int | None = None
    cpv_: str | None = None  # a build's cpv, when its name says more (see _build_names)

    @property
    def cpv(self) -> str:
        return self.entry.cpv if self.entry else self.cpv_ or self.name

    @property
    def went_wrong(self) -> bool:
        return self.state in ("failed", "skipped")

    def to_json(self) -> dict:
        return {"cpv": self.cpv, "state": self.state, "job_id": self.job_id,
                "detail": self.detail}


def _build_names(jobs: list[BuildJob]) -> list[str]:
    """Progress names of builds: the cpv, with the USE when several instances of one
    version are built (progress lines are keyed by name), numbered if still ambiguous."""
    per_cpv = Counter(job.cpv for job in jobs)
    names: list[str] = []
    for job in jobs:
        name = job.cpv
        if per_cpv[job.cpv] > 1:
            name += f" [{' '.join(job.use) or '-'}]"
        base, number = name, 2
        while name in names:  # same USE, other variables (CFLAGS, ...)
            name, number = f"{base} #{number}", number + 1
        names.append(name)
    return names


@dataclass
class Summary:
    group: str | None
    items: list[Item]
    submitted: int = 0
    reused: int = 0
    install_logs: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        done = {"installed"} if self.group else {"built"}
        return all(i.state in done for i in self.items)

    def counts(self) -> str:
        """'2 built, 1 failed', or 'nothing to do'."""
        counts = Counter(item.state for item in self.items)
        return ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "nothing to do"

    def line(self) -> str:
        """'2 built (2 build job(s) submitted, 1 reused)': what a report says of it."""
        return f"{self.counts()} ({self.submitted} build job(s) submitted, {self.reused} reused)"


@dataclass
class Update:
    client: Client
    jobs: list[BuildJob]
    pending: Pending | None  # None: nothing kept (a fleet's hosts: the fleet keeps its ids)
    progress: Progress
    plan: Plan | None = None  # the group to install; None: build only
    log_dir: Path = Path("/var/log/cq-portage")
    ids: dict[str, int] = field(default_factory=dict)
    stopped: str | None = None  # why installing stopped
    installer: Installer = run_locally
    built: dict[int, int] = field(default_factory=dict)  # job id: build id of what it made

    def __post_init__(self) -> None:
        if self.plan is not None:
            self.items = [Item(e.cpv, None if e.action == BINARY else entry_key(self.plan, e), e,
                               "binary" if e.action == BINARY else "waiting")
                          for e in self.plan.entries]
        else:
            self.items = [Item(name, j.key, None, cpv_=j.cpv)
                          for name, j in zip(_build_names(self.jobs), self.jobs)]
        self.summary = Summary(self.plan.group.name if self.plan else None, self.items)

    # -- submitting ---------------------------------------------------------------------

    def submit(self) -> None:
        """Queue every build, or reuse this host's earlier submission of it."""
        assert self.pending is not None
        for job in self.jobs:
            known = self.pending.jobs.get(job.key)
            if known is not None and self._reusable(known):
                self.ids[job.key] = known
                self.summary.reused += 1
                continue
            submitted = self.client.submit(list(job.argv), job.environment,
                                           dedupe_key=wire_key(job.key), labels=job.labels,
                                           after=[self.ids[key] for key in job.after])
            if isinstance(submitted, Outcome):
                raise RuntimeError(f"the server at {self.client.address} speaks only the "
                                   "original cq protocol; cq-emerge needs cq-portage's cq-server")
            self.ids[job.key] = submitted.job_id
            self.pending.jobs[job.key] = submitted.job_id
            self.pending.save()  # before waiting: a client that goes away keeps its jobs
            self.summary.submitted += 1
        self._show_submitted()

    def adopt(self, ids: Mapping[str, int]) -> None:
        """Take the job ids of builds submitted by someone else (fleet mode submits once
        for every host)."""
        self.ids.update({job.key: ids[job.key] for job in self.jobs})
        self._show_submitted()

    def _show_submitted(self) -> None:
        for item in self.items:
            if item.key is not None:
                item.job_id = self.ids[item.key]
                self._show(item, "queued", f"(job {item.job_id})")
            else:
                self._show(item, "binary", "(its binary package is ready)")

    def _reusable(self, job_id: int) -> bool:
        try:
            info = self.client.status(job_id)
        except Refused:  # unknown, or pruned by now: submit it again
            return False
        return not info.state.ended or (info.state == JobState.DONE and info.exit_status == 0)

    # -- waiting and installing ----------------------------------------------------------

    def wait_and_install(self) -> Summary:
        self.install_ready()
        wait_all(self.client, self.ids.values(), self._ended_then_install, self.refresh)
        return self.finish()

    def _ended_then_install(self, job_id: int, outcome: Outcome) -> None:
        self.job_ended(job_id, self.explained(job_id, outcome))
        self.install_ready()

    def finish(self) -> Summary:
        """Every job has ended: what is left uninstalled is skipped, and why."""
        for item in self.items:
            if item.state in ("binary", "built") and self.plan is not None:
                self._show(item, "skipped", self.stopped or "not installed")
            elif item.state in ("waiting", "queued", "building"):  # its build never ended
                self._show(item, "skipped", self.stopped or "(its build was not waited for)")
        return self.summary

    def refresh(self, jobs: list | None = None) -> None:
        """Show the queue's state of the builds (`jobs`: the server's list, else asked)."""
        jobs = self.client.list() if jobs is None else jobs
        active = {j.id: j for j in jobs if not j.state.ended}
        for item in self.items:
            info = active.get(item.job_id)
            if info is None or item.state not in ("queued", "building"):
                continue
            if info.state == JobState.RUNNING:
                self._show(item, "building", f"(job {info.id})")
            else:
                where = (f"position {info.position}" if info.position is not None else
                         "after " + ", ".join(map(str, info.after)))  # waits for its deps
                self._show(item, "queued", f"(job {info.id}, {where})")

    def job_ended(self, job_id: int, outcome: Outcome) -> None:
        for item in self.items:
            if item.job_id != job_id:
                continue
            if self.pending is not None:
                self.pending.forget([item.key])  # ended: nothing left to wait for
            if item.state == "skipped":  # what it needed failed: said so already
                continue
            if outcome.ok:
                self._show(item, "built")
            elif outcome.dependency_failed:
                self._show(item, "skipped", f"(job {job_id} did not run: {outcome.error})")
            else:
                why = outcome.error or f"exit status {outcome.exit_status}"
                self._show(item, "failed", f"(job {job_id}: {why}; build log: "
                                           f"cq-client -h {self.client.address.split(':')[0]} "
                                           f"--log {job_id})")
        if self.pending is not None:
            self.pending.save()

    def explained(self, job_id: int, outcome: Outcome) -> Outcome:
        """What a build's log says, read here, in the thread that owns the client (not in
        the hosts' threads): which instance a good build made (kept in `built`, so that
        exactly that one is installed), or why a failed one failed (in its error)."""
        if outcome.dependency_failed or not outcome.ok and outcome.error:
            return outcome
        lines = self._log_lines(job_id)
        if outcome.ok:
            built = next((line for line in reversed(lines) if line.startswith(BUILT_PREFIX)),
                         None)
            match = built and _BUILT.match(built.removeprefix(BUILT_PREFIX))
            if match:
                self.built[job_id] = int(match.group(1))
            return outcome
        said = _why_failed(lines)
        return outcome._replace(error=f"exit status {outcome.exit_status}: {said}"
                                ) if said else outcome

    def _log_lines(self, job_id: int) -> list[str]:
        """The last lines of a job's log (what says how it ended is at its end)."""
        try:
            tail = self.client.log_tail(job_id)
        except ClientError:
            return []
        return [line.strip() for line in tail.decode(errors="replace").splitlines()]

    def install_ready(self) -> None:
        """Install, in one emerge, every package that is ready (binary, or built) and whose
        plan dependencies are installed or in the same batch; a package whose update forces
        slot-operator rebuilds goes only together with those rebuilds (merge_with)."""
        if self.plan is None or self.stopped:
            return
        self._skip_blocked()
        done = {i.cpv for i in self.items if i.state == "installed"}
        ready = {i.cpv for i in self.items if i.state in ("binary", "built")}
        changed = True
        while changed:  # drop what needs something neither installed nor going in with it
            changed = False
            for item in self.items:
                if item.cpv in ready and not _needs(item.entry) <= done | ready:
                    ready.discard(item.cpv)
                    changed = True
        batch = [i for i in self.items if i.cpv in ready]
        if batch:
            self._install(batch)

    def _skip_blocked(self) -> None:
        """Skip what needs a package that failed or was skipped, transitively."""
        blocked = {i.cpv for i in self.items if i.went_wrong}
        changed = True
        while changed:
            changed = False
            for item in self.items:
                hit = sorted(blocked & _needs(item.entry))
                if hit and item.state not in ("failed", "skipped", "installed"):
                    self._show(item, "skipped", f"(needs {hit[0]})")
                    blocked.add(item.cpv)
                    changed = True

    def _install(self, batch: list[Item]) -> None:
        for item in batch:
            self._show(item, "installing")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        logfile = self.log_dir / (f"install-{self.plan.group.name}-{stamp}-"
                                  f"{batch[0].job_id or 0}.log")
        self.summary.install_logs.append(str(logfile))
        entries = [dataclasses.replace(i.entry, binary_build_id=self.built[i.job_id])
                   if i.key is not None and i.job_id in self.built else i.entry for i in batch]
        status, error = self.installer(install_script(self.plan, entries), logfile)
        if status == 0:
            for item in batch:
                self._show(item, "installed")
            return
        why = error or f"exit status {status}"
        self.stopped = f"(install of the group stopped: see {logfile})"
        said = None if error else install_failure(logfile)
        culprit = next((i for i in batch if said and i.cpv == said.cpv), None)
        why = str(said) if said and culprit is None else why
        for item in batch:
            if culprit is None:
                self._show(item, "failed", f"(install failed, {why}: {logfile})")
            elif item is culprit:  # one line: which package, what failed
                self._show(item, "failed", f"({said.reason}; log: {logfile})")
            else:
                self._show(item, "skipped", f"(in the emerge that failed on {culprit.cpv})")

    def _show(self, item: Item, state: str, detail: str = "") -> None:
        item.state, item.detail = state, detail
        self.progress.set(item.name, state, detail)
