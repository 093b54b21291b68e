"""Messages on the wire: parse and check requests, build replies (cq.proto).

Compatible with the original C cq: a request frame is a MUNGE credential as text plus one
NUL; its payload is a `cq_req` whose `args` and `env` end with an "" marker. Replies are
plain (not munged) `cq_rep` frames.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import NamedTuple

from google.protobuf.message import DecodeError

from . import cq_pb2 as pb
from .job import HostInfo, JobInfo, JobState

PROTOCOL_VERSION = 1
DEFAULT_HOST = "0.0.0.0"
DEFAULT_PORT = 48005
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
LABEL = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,63}\Z")  # a build host's label: amd64, arm64
MAX_LABELS = 32
MAX_JOB_ID = (1 << 63) - 1  # SQLite's INTEGER: a larger id cannot name a job

Op = pb.Op
# The one place protobuf's JobState meets job.JobState: UNKNOWN (0) is no state of a job.
_WIRE_STATE = {state: pb.JobState.Value(state.name) for state in JobState}
_STATE = {number: state for state, number in _WIRE_STATE.items()}
_JOB_OPTIONAL = ("started", "finished", "internal_status", "exit_status", "error", "position",
                 "log_path", "dedupe_key", "host")


def valid_label(name: str) -> bool:
    """A build host's label the server takes: amd64, arm64, ..."""
    return bool(LABEL.match(name))


class BadRequest(ValueError):
    """A request we refuse; the message is the one-line reason sent back."""


# NamedTuple, not a dataclass: importing dataclasses (inspect, ast, dis) and building
# a class costs cq-client ~8 ms of each job's start-up; these records are read-only anyway.
class Limits(NamedTuple):
    max_request_bytes: int = 1 << 20
    max_args: int = 4096
    max_env: int = 1024
    max_string_bytes: int = 128 << 10
    max_after: int = 1024  # job ids in one submission's `after`


class Request(NamedTuple):
    op: int
    command: str
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    legacy: bool  # sent by the original client: answer only when the job ends
    job_id: int | None = None
    request_id: str | None = None
    dedupe_key: str | None = None
    wait_seconds: int = 0
    log_offset: int = 0
    labels: tuple[str, ...] = ()  # a build host must have them all to run the job
    after: tuple[int, ...] = ()  # jobs that must end DONE with exit status 0 before it starts


def _strings(values, what: str, limits: Limits) -> list[str]:
    out = list(values)
    for value in out:
        if isinstance(value, bytes):  # upb hands back bytes for invalid UTF-8 in proto2
            raise BadRequest(f"{what} is not valid UTF-8")
        if "\0" in value:
            raise BadRequest(f"{what} contains a NUL byte")
        if len(value.encode()) > limits.max_string_bytes:
            raise BadRequest(f"{what} is longer than {limits.max_string_bytes} bytes")
    if out and out[-1] == "":  # the original client's end marker
        out.pop()
    return out


def parse_env(pairs: list[str]) -> tuple[tuple[str, str], ...]:
    env = []
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not ENV_NAME.match(name):
            raise BadRequest(f"malformed environment entry {pair[:80]!r}: want NAME=value")
        env.append((name, value))
    return tuple(env)


def parse_request(payload: bytes, limits: Limits) -> Request:
    if len(payload) > limits.max_request_bytes:
        raise BadRequest(f"request of {len(payload)} bytes exceeds {limits.max_request_bytes}")
    msg = pb.cq_req()
    try:
        msg.ParseFromString(payload)
    except (DecodeError, RuntimeError, ValueError) as e:
        raise BadRequest(f"malformed request: not a cq_req message ({e})") from None
    if not msg.IsInitialized():  # parsing does not check required fields
        raise BadRequest("malformed request: required field 'command' missing")
    if len(msg.args) > limits.max_args + 1:
        raise BadRequest(f"more than {limits.max_args} arguments")
    if len(msg.env) > limits.max_env + 1:
        raise BadRequest(f"more than {limits.max_env} environment entries")
    command = _strings([msg.command], "the command", limits)
    command = command[0] if command else ""
    args = _strings(msg.args, "an argument", limits)
    env = parse_env(_strings(msg.env, "an environment entry", limits))
    for text in (msg.request_id, msg.dedupe_key):
        if isinstance(text, bytes) or len(text) > 1024:
            raise BadRequest("request_id or dedupe_key is not UTF-8 text of at most 1024 bytes")
    labels = parse_labels(msg.labels)
    after = parse_after(msg.after, limits)
    op = msg.op
    if op not in Op.values():
        raise BadRequest(f"unknown operation {op}")
    if op == Op.SUBMIT:
        if not args and command:
            args = [command]
        if not args or not command:
            raise BadRequest("empty command: nothing to run")
    elif op != Op.LIST and not msg.HasField("job_id"):
        raise BadRequest(f"{Op.Name(op)} needs a job id")
    return Request(
        op=op, command=command, argv=tuple(args), env=env,
        legacy=not msg.HasField("protocol"),
        job_id=msg.job_id if msg.HasField("job_id") else None,
        request_id=msg.request_id or None,
        dedupe_key=msg.dedupe_key or None,
        wait_seconds=msg.wait_seconds, log_offset=msg.log_offset, labels=labels,
        after=after,
    )


def parse_labels(labels) -> tuple[str, ...]:
    """Sorted and without repeats: a set, written the same way whoever sent it."""
    if len(labels) > MAX_LABELS:
        raise BadRequest(f"more than {MAX_LABELS} labels")
    for label in labels:
        if isinstance(label, bytes) or not valid_label(label):
            raise BadRequest(f"bad label {str(label)[:80]!r}: want letters, digits, "
                             "'_', '.', '+' or '-', at most 64")
    return tuple(sorted(set(labels)))


def parse_after(ids, limits: Limits) -> tuple[int, ...]:
    """Sorted and without repeats; 0 and ids SQLite cannot hold name no job."""
    if len(ids) > limits.max_after:
        raise BadRequest(f"more than {limits.max_after} jobs to run after")
    for job_id in ids:
        if not 0 < job_id <= MAX_JOB_ID:
            raise BadRequest(unknown_after(job_id))
    return tuple(sorted(set(ids)))


def unknown_after(job_id: int) -> str:
    return f"job {job_id} it should run after is unknown"


def build_request(op: int = Op.SUBMIT, argv: list[str] | tuple[str, ...] = (),
                  env: list[str] | tuple[str, ...] = (), **fields) -> bytes:
    """A request as our client sends it: exact about the original's end markers."""
    msg = pb.cq_req(command=argv[0] if argv else "", args=[*argv, ""], env=[*env, ""],
                    protocol=PROTOCOL_VERSION, op=op,
                    **{k: v for k, v in fields.items() if v is not None})
    return msg.SerializeToString()


def build_reply(status: int, exit_status: int = 0, *, legacy: bool = False,
                state: JobState | None = None, jobs: Iterable[JobInfo] = (),
                hosts: Iterable[HostInfo] = (), **fields) -> bytes:
    msg = pb.cq_rep(internal_status=int(status), exit_status=exit_status)
    if not legacy:
        msg.protocol = PROTOCOL_VERSION
        if state is not None:
            msg.state = _WIRE_STATE[state]
        msg.jobs.extend(map(job_message, jobs))
        msg.hosts.extend(map(host_message, hosts))
        for name, value in fields.items():
            if value is not None:
                setattr(msg, name, value)
    return msg.SerializeToString()


def job_message(job: JobInfo) -> pb.job_info:
    return _message(pb.job_info, job, state=_WIRE_STATE[job.state])


def host_message(host: HostInfo) -> pb.host_info:
    return _message(pb.host_info, host, up=None, state=pb.HOST_UP if host.up else pb.HOST_DOWN)


def _message(kind, record: NamedTuple, **wire_fields):
    """A job_info or host_info of a record; None fields are left unset, as are those that
    `wire_fields` sets to None (they have no field on the wire)."""
    fields = {**record._asdict(), **wire_fields}
    return kind(**{name: value for name, value in fields.items() if value is not None})


def job_state(number: int) -> JobState:
    """A job state off the wire."""
    if number not in _STATE:
        raise BadReply(f"unknown job state {number}")
    return _STATE[number]


def job_record(msg: pb.job_info) -> JobInfo:
    return JobInfo(id=msg.id, state=job_state(msg.state), args=tuple(msg.args),
                   requester_uid=msg.requester_uid, requester_gid=msg.requester_gid,
                   submitted=msg.submitted, waiters=msg.waiters, run_as=msg.run_as,
                   labels=tuple(msg.labels), attempts=msg.attempts, after=tuple(msg.after),
                   **{name: getattr(msg, name) if msg.HasField(name) else None
                      for name in _JOB_OPTIONAL})


def host_record(msg: pb.host_info) -> HostInfo:
    return HostInfo(msg.name, msg.url, tuple(msg.labels), msg.state == pb.HOST_UP, msg.since,
                    msg.error if msg.HasField("error") else None,
                    msg.job_id if msg.HasField("job_id") else None)


class BadReply(ValueError):
    pass


def parse_reply(frame: bytes) -> pb.cq_rep:
    msg = pb.cq_rep()
    try:
        msg.ParseFromString(frame)
    except (DecodeError, RuntimeError, ValueError) as e:
        raise BadReply(f"malformed reply from server: {e}") from None
    if not msg.IsInitialized():
        raise BadReply("malformed reply from server: required fields missing")
    return msg


def credential_from_frame(frame: bytes) -> bytes:
    """The credential text of a request frame: the original client sends it NUL-terminated."""
    cred = frame[:-1] if frame.endswith(b"\0") else frame
    if not cred.startswith(b"MUNGE:") or b"\0" in cred:
        raise BadRequest("not a MUNGE credential")
    return cred
