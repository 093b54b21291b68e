"""Submit, wait, status, list, cancel, log: the client side of the queue, as a library.

Every request carries a fresh MUNGE credential (the server refuses replays). Waiting is a
long poll that is re-sent, with a new credential, after a lost connection or a server
restart, for as long as `timeout` allows. A server that speaks only the original protocol is
detected by its reply, which then is the job's final result.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from typing import NamedTuple

from . import cq_pb2 as pb
from .auth import AuthError, Munge
from .job import HostInfo, JobInfo, JobState, Status
from .transport import Connection, NoAnswer, NotConnected, TransportError
from .wire import DEFAULT_PORT, BadReply, Op, build_request, host_record, job_record, \
    job_state, parse_reply
from .wire import valid_label  # noqa: F401  (the one door: emerge/ checks labels here)


WAIT_SECONDS = 20


class ClientError(Exception):
    """A one-line reason the request failed."""


class ServerUnreachable(ClientError):
    pass


class ServerSilent(ServerUnreachable):
    """Connected, but no answer."""


class NoCredential(ClientError):
    """MUNGE could not make a credential (munged not running, its socket unreadable)."""


class BadServerReply(ClientError):
    """A reply that is malformed, truncated or does not answer the request: never trusted
    to say how a job ended."""


def _check(ok: bool, what: str) -> None:
    if not ok:
        raise BadServerReply(f"unexpected reply from the server: {what}")


def _converted(convert: Callable, part):
    """A part of a reply as a record: one with no job state we know is a bad reply."""
    try:
        return convert(part)
    except BadReply as e:
        raise BadServerReply(f"unexpected reply from the server: {e}") from None


def checked_outcome(rep: pb.cq_rep, job_id: int | None = None) -> "Outcome":
    """How a job ended, from a reply that must make sense: a status a shell can exit with,
    the job asked about, and DONE exactly when the command ran."""
    _check(rep.exit_status <= 255, f"exit status {rep.exit_status} is above 255")
    if rep.HasField("protocol"):
        _check(rep.HasField("state"), "no job state")
        _check(job_id is None or rep.job_id == job_id,
               f"about job {rep.job_id}, not job {job_id}")
        state = _converted(job_state, rep.state)
        _check((state == JobState.DONE) == (rep.internal_status == Status.RAN),
               f"state {state.name} with internal status {rep.internal_status}")
    else:  # the original server only says whether it ran
        state = JobState.DONE if rep.internal_status >= 0 else JobState.FAILED
    return Outcome(rep.job_id if rep.HasField("job_id") else None, rep.internal_status,
                   rep.exit_status, state, rep.error or None)


class Refused(ClientError):
    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status


class Outcome(NamedTuple):  # not a dataclass: see wire.Limits; copy with _replace
    """How a job ended, as told by the server."""

    job_id: int | None
    internal_status: int
    exit_status: int
    state: JobState  # a str too: "done", "failed", "cancelled", "interrupted", ...
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.internal_status == Status.RAN and self.exit_status == 0

    @property
    def dependency_failed(self) -> bool:
        """It never ran: a job it was to run after did not end well."""
        return self.internal_status == Status.DEPENDENCY_FAILED


class Submitted(NamedTuple):
    job_id: int
    merged: bool


def env_pairs(env: Mapping[str, str] | Iterable[str]) -> list[str]:
    if isinstance(env, Mapping):
        return [f"{k}={v}" for k, v in env.items()]
    return list(env)


class Client:
    def __init__(self, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
                 munge_socket: str | None = None, timeout: float = 30.0):
        """`munge_socket`: munged's socket; None: libmunge's default."""
        self.address = f"{host}:{port}"
        self.munge = Munge(munge_socket)
        self.timeout = timeout
        self.conn = Connection(f"tcp://{host}:{port}")

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, payload: bytes, answer_timeout: float | None = None) -> pb.cq_rep:
        """One request; retried after transport failures until `timeout` has passed."""
        deadline = time.monotonic() + self.timeout
        while True:
            try:  # a fresh credential each try: replays are refused
                frame = self.munge.encode(payload) + b"\0"
            except AuthError as e:
                raise NoCredential(str(e)) from None
            left = max(0.1, deadline - time.monotonic())
            try:
                rep = parse_reply(self.conn.exchange(frame, left, answer_timeout))
            except BadReply as e:
                raise BadServerReply(f"cq-server at {self.address}: {e}") from None
            except NotConnected:
                raise ServerUnreachable(
                    f"no answer from cq-server at {self.address} within {self.timeout:g}s "
                    f"(is it running? is the address right?)") from None
            except TransportError as e:
                if time.monotonic() >= deadline:
                    kind = ServerSilent if isinstance(e, NoAnswer) else ServerUnreachable
                    raise kind(f"cq-server at {self.address}: {e}") from None
                time.sleep(0.2)
                continue
            _check(rep.exit_status <= 255 and all(j.exit_status <= 255 for j in rep.jobs),
                   "an exit status above 255")
            if rep.HasField("protocol") and rep.internal_status < 0 and not rep.HasField("state"):
                raise Refused(rep.internal_status, rep.error or "refused by the server")
            return rep

    def submit(self, argv: list[str], env: Mapping[str, str] | Iterable[str] = (),
               dedupe_key: str | None = None, legacy: bool = False,
               labels: Iterable[str] = (), after: Iterable[int] = ()) -> Submitted | Outcome:
        """Queue a job, to run on a build host that has all of `labels`, once the jobs
        `after` names have ended DONE with exit status 0 (if one ends otherwise, the job
        fails without running). Against the original server (which knows neither) this
        blocks and returns its Outcome: a job there starts after the ones submitted before,
        but runs even if they failed.

        The original server answers only when the job has ended, so by default a job of
        longer than `timeout` on it looks like a server that does not answer; `legacy`
        waits for as long as the connection lives instead.
        """
        payload = build_request(Op.SUBMIT, argv, env_pairs(env), request_id=os.urandom(16).hex(),
                                dedupe_key=dedupe_key, labels=list(labels) or None,
                                after=list(after) or None)
        try:
            rep = self._call(payload, answer_timeout=None if legacy else self.timeout)
        except ServerSilent as e:
            raise ServerSilent(f"{e} (an original cq server answers only when the job "
                                    "has ended: use --legacy to wait for it)") from None
        if not rep.HasField("protocol"):
            return checked_outcome(rep)
        _check(rep.HasField("job_id") and rep.job_id > 0, "no job id for the submission")
        return Submitted(rep.job_id, rep.merged)

    def wait(self, job_id: int, on_update: Callable[[JobInfo], None] | None = None,
             poll: int = WAIT_SECONDS) -> Outcome:
        """Until the job ends; `on_update` hears of it at least every `poll` seconds."""
        while True:
            rep = self._call(build_request(Op.WAIT, job_id=job_id, wait_seconds=poll),
                             answer_timeout=poll + self.timeout)
            if not rep.HasField("state") or _converted(job_state, rep.state).ended:
                return checked_outcome(rep, job_id)
            if on_update:
                on_update(_one_job(rep, job_id))

    def run(self, argv: list[str], env: Mapping[str, str] | Iterable[str] = (),
            dedupe_key: str | None = None, legacy: bool = False,
            on_update: Callable[[JobInfo], None] | None = None,
            labels: Iterable[str] = (), after: Iterable[int] = ()) -> Outcome:
        submitted = self.submit(argv, env, dedupe_key, legacy, labels, after)
        if isinstance(submitted, Outcome):
            return submitted
        return self.wait(submitted.job_id, on_update)

    def status(self, job_id: int) -> JobInfo:
        return _one_job(self._call(build_request(Op.STATUS, job_id=job_id), self.timeout),
                        job_id)

    def list(self) -> list[JobInfo]:
        return self.overview()[0]

    def overview(self) -> tuple[list[JobInfo], list[HostInfo]]:
        """The queue (running, queued, then recently ended jobs) and the build hosts."""
        rep = self._call(build_request(Op.LIST), self.timeout)
        return [_converted(job_record, j) for j in rep.jobs], list(map(host_record, rep.hosts))

    def cancel(self, job_id: int) -> JobInfo:
        return _one_job(self._call(build_request(Op.CANCEL, job_id=job_id), self.timeout),
                        job_id)

    def log(self, job_id: int, offset: int = 0) -> tuple[bytes, int, bool]:
        """A chunk of the job's output from `offset`: (data, next offset, end reached)."""
        rep = self._call(build_request(Op.LOG, job_id=job_id, log_offset=offset), self.timeout)
        _check(rep.job_id == job_id and rep.HasField("state"), f"no log of job {job_id}")
        _check(rep.log_offset == offset + len(rep.log),
               f"log offset {rep.log_offset} after {len(rep.log)} bytes from {offset}")
        return rep.log, rep.log_offset, rep.log_eof

    def log_tail(self, job_id: int, size: int = 65536) -> bytes:
        """About the last `size` bytes of an ended job's output, without reading the rest: a
        reply holds one chunk from any offset, and says whether it reaches the end, so the
        end is found by doubling the offset and then halving the gap (2·log2(log / chunk)
        requests, not log / chunk)."""
        full, past, offset = 0, None, 0  # a whole chunk follows `full`, none `past`
        while True:
            data, end, eof = self.log(job_id, offset)
            if eof and data or not data and offset == 0:
                break
            if data:
                full = offset
            else:
                past = offset
            if past is not None and past - full <= 1:  # a job still writing: no chunk ends it
                end = past
                break
            offset = (full + past) // 2 if past is not None else max(2 * offset, len(data))
        kept, offset = b"", max(0, end - size)
        while True:
            data, offset, eof = self.log(job_id, offset)
            kept += data
            if eof or not data:
                return kept[-size:]


def _one_job(rep: pb.cq_rep, job_id: int) -> JobInfo:
    _check(len(rep.jobs) == 1 and rep.jobs[0].id == job_id, f"no job {job_id} in the reply")
    return _converted(job_record, rep.jobs[0])
