"""One host of a fleet, seen from the admin host over SSH: its plan (`cq-emerge --local
--pretend --json -g GROUP` run there), running install scripts there, and how its part of a
fleet run went (HostRun).

Everything goes through cq_portage.ssh.SshRunner (known_hosts checked, one connection reused). The
runner merges the command's stderr into its output, so the plan document is found as the
JSON object that starts on a line of its own ("{"); what surrounds it is the host's
messages, shown when something went wrong.
"""

from __future__ import annotations

import io
import json
import logging
import queue
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from cq_portage.ssh import SshError, SshRunner
from cq_portage.sshconfig import SshTarget
from cq_portage.sshconfig import SshSettings
from cq_portage.emerge.plan import Plan
from cq_portage.emerge.plan_json import PlanFormatError, plan_from_json
from cq_portage.emerge.update import Summary, Update

log = logging.getLogger(__name__)
# Always local there: with a shared config the host would otherwise go fleet itself.
PLAN_FLAGS = ("--local", "--pretend", "--json")
# sshd hands the command to the login shell as one argument, which Linux caps at 128 KiB
# (MAX_ARG_STRLEN); the script travels in it because the channel's stdin is the job's
# lifeline (cq_portage.ssh), so a longer script is refused here with a clear reason.
MAX_SCRIPT = 120_000


class RemoteError(Exception):
    """The host could not give its plan or run a script; one line saying why. `report`
    holds Portage's own explanation when the plan itself failed."""

    def __init__(self, message: str, report: str = ""):
        super().__init__(message)
        self.report = report


def host_label(target: SshTarget) -> str:
    """How reports name a host: its name, with the port when it is not 22."""
    return target.host if target.port == 22 else target.address


def split_json(text: str) -> tuple[dict | None, str]:
    """(the JSON object starting on a line of its own, the rest of the text)."""
    lines = text.splitlines(keepends=True)
    offset = 0
    for line in lines:
        if line.rstrip("\n") == "{":
            try:
                doc, end = json.JSONDecoder().raw_decode(text, offset)
            except ValueError:
                break
            if isinstance(doc, dict):
                return doc, text[:offset] + text[end:]
            break
        offset += len(line)
    return None, text


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


@dataclass
class RemoteHost:
    target: SshTarget
    group: str
    ssh: SshSettings
    runner: SshRunner = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.runner = SshRunner(self.target, self.ssh.key_file, self.ssh.known_hosts,
                                connect_timeout=self.ssh.connect_timeout)

    @property
    def label(self) -> str:
        return host_label(self.target)

    def plan(self) -> Plan:
        argv = [*self.ssh.command, *PLAN_FLAGS, "--group", self.group]
        out = io.BytesIO()
        try:
            status = self._run(argv, out)
        except SshError as e:
            raise RemoteError(str(e)) from None
        text = out.getvalue().decode(errors="replace")
        doc, messages = split_json(text)
        log.debug("%s: plan exit %s, messages: %s", self.label, status, messages.strip())
        if status == 127 and doc is None:
            raise RemoteError(f"{shlex.join(self.ssh.command)} not found there (exit 127; "
                              "set ssh.command in the config)")
        if doc is not None and doc.get("errors"):
            report = "\n".join(e.get("report", "") for e in doc["errors"])
            raise RemoteError(f"cannot plan group {self.group} there", report)
        if status != 0 or doc is None:
            raise RemoteError(f"cq-emerge there exited {status}: {_last_line(messages)}")
        plans = [p for p in doc.get("plans", []) if p.get("group") == self.group]
        if len(plans) != 1:
            raise RemoteError(f"cq-emerge there gave no plan for group {self.group}")
        try:
            return plan_from_json(plans[0])
        except PlanFormatError as e:
            raise RemoteError(f"its plan cannot be read here: {e}") from None

    def install(self, script: str, log_file: Path) -> tuple[int, str]:
        """Run an install script there (`sh -c SCRIPT`); it is kept next to its log here."""
        log_file.with_suffix(".sh").write_text(script)
        if len(script.encode()) > MAX_SCRIPT:
            why = (f"install script of {len(script.encode())} bytes, over {MAX_SCRIPT} for "
                   "one SSH command")
            log_file.write_text(f"cq-emerge: {why}\n")
            return 255, why
        with open(log_file, "wb") as out:
            try:
                return self._run(["sh", "-c", script, "cq-emerge-install"], out), ""
            except SshError as e:
                out.write(f"\ncq-emerge: {e}\n".encode())
                return 255, str(e)

    def _run(self, argv: list[str], out) -> int:
        """runner.run(), given up when the host stops answering (checked every
        connect_timeout seconds): a frozen host keeps TCP up and the run waiting."""
        return self.runner.run(argv, {}, out, check_every=self.ssh.connect_timeout)

    def close(self) -> None:
        self.runner.close()


@dataclass
class HostRun:
    """One host through the run: its plan, or why there is none; its update."""

    remote: RemoteHost
    plan: Plan | None = None
    error: str | None = None  # unreachable, plan failed, ...: one line
    report: str = ""  # Portage's explanation of a failed plan
    update: Update | None = None
    # (job id, Outcome) of each build it needs as it ends; None when all have
    events: queue.Queue = field(default_factory=queue.Queue)

    @property
    def label(self) -> str:
        return self.remote.label

    @property
    def group(self) -> str:
        return self.remote.group

    @property
    def summary(self) -> Summary | None:
        return self.update.summary if self.update else None

    @property
    def ok(self) -> bool:
        if self.error is not None or self.plan is None:
            return False
        return self.update is None or self.update.summary.ok
