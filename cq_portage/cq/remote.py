"""Runs jobs on a build host over SSH, as executor.py runs them here: output into the job's
log, exit status in the shell's convention. A host that cannot be reached or stops answering
raises HostDown, so that the runner can requeue the job instead of losing it."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from .execution import JOB_ID_VAR, HostDown, stopped
from ..sshconfig import SshSettings
from .hosts import BuildHost
from .job import JobState, Result, Status
from .serverjob import Job
from ..ssh import SshError, SshLost, SshRunner

log = logging.getLogger(__name__)


@dataclass
class RemoteExecutor:
    host: BuildHost
    settings: SshSettings
    ssh: SshRunner = field(init=False)
    _stopping: str | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.ssh = SshRunner(self.host.ssh, self.host.key_file, self.host.known_hosts,
                             connect_timeout=self.settings.connect_timeout)

    def check(self) -> None:
        """Raise HostDown unless the host answers."""
        try:
            self.ssh.check(self.settings.connect_timeout)
        except SshError as e:
            raise HostDown(str(e), ran=False) from None

    def run(self, job: Job) -> Result:
        """Run `job` there to its end (blocking). The job's environment is its request's
        variables on top of the SSH login's: this host's server environment means nothing
        there. It runs as the URL's user."""
        env = {**dict(job.env), JOB_ID_VAR: str(job.id)}
        argv = [job.command, *job.argv[1:]]
        log_path = Path(job.log_path)
        log_path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
        self._stopping = None
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW
                     | os.O_CLOEXEC, 0o640)  # a planted link is refused, not followed
        with open(fd, "ab") as out:
            try:
                status = self.ssh.run(argv, env, out, check_every=self.settings.check_seconds)
            except SshLost as e:  # dropped, or stopped answering (SshNoAnswer)
                if self._stopping:  # the channel was closed to stop it
                    return stopped(self._stopping, 0)
                raise HostDown(str(e), ran=True) from None
            except SshError as e:  # it never started: cannot connect, host key, auth
                raise HostDown(str(e), ran=False) from None
        if self._stopping:
            return stopped(self._stopping, status)
        return Result(JobState.DONE, Status.RAN, status)

    def stop(self, why: str, grace: float) -> bool:
        """Stop the running job (why: 'cancel' or 'shutdown'); the host sends SIGTERM, then
        SIGKILL after SshRunner.stop_grace seconds (`grace` is for local jobs)."""
        self._stopping = why
        return self.ssh.stop()

    def close(self) -> None:
        self.ssh.close()
