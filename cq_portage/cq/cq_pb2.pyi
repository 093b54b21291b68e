from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Op(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SUBMIT: _ClassVar[Op]
    WAIT: _ClassVar[Op]
    STATUS: _ClassVar[Op]
    LIST: _ClassVar[Op]
    CANCEL: _ClassVar[Op]
    LOG: _ClassVar[Op]

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    UNKNOWN: _ClassVar[JobState]
    QUEUED: _ClassVar[JobState]
    RUNNING: _ClassVar[JobState]
    DONE: _ClassVar[JobState]
    FAILED: _ClassVar[JobState]
    CANCELLED: _ClassVar[JobState]
    INTERRUPTED: _ClassVar[JobState]

class HostState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HOST_UP: _ClassVar[HostState]
    HOST_DOWN: _ClassVar[HostState]
SUBMIT: Op
WAIT: Op
STATUS: Op
LIST: Op
CANCEL: Op
LOG: Op
UNKNOWN: JobState
QUEUED: JobState
RUNNING: JobState
DONE: JobState
FAILED: JobState
CANCELLED: JobState
INTERRUPTED: JobState
HOST_UP: HostState
HOST_DOWN: HostState

class cq_req(_message.Message):
    __slots__ = ("command", "args", "env", "protocol", "op", "job_id", "request_id", "dedupe_key", "wait_seconds", "log_offset", "labels", "after")
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    OP_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    DEDUPE_KEY_FIELD_NUMBER: _ClassVar[int]
    WAIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    LOG_OFFSET_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    command: str
    args: _containers.RepeatedScalarFieldContainer[str]
    env: _containers.RepeatedScalarFieldContainer[str]
    protocol: int
    op: Op
    job_id: int
    request_id: str
    dedupe_key: str
    wait_seconds: int
    log_offset: int
    labels: _containers.RepeatedScalarFieldContainer[str]
    after: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, command: _Optional[str] = ..., args: _Optional[_Iterable[str]] = ..., env: _Optional[_Iterable[str]] = ..., protocol: _Optional[int] = ..., op: _Optional[_Union[Op, str]] = ..., job_id: _Optional[int] = ..., request_id: _Optional[str] = ..., dedupe_key: _Optional[str] = ..., wait_seconds: _Optional[int] = ..., log_offset: _Optional[int] = ..., labels: _Optional[_Iterable[str]] = ..., after: _Optional[_Iterable[int]] = ...) -> None: ...

class job_info(_message.Message):
    __slots__ = ("id", "state", "args", "requester_uid", "requester_gid", "submitted", "started", "finished", "internal_status", "exit_status", "error", "position", "waiters", "log_path", "dedupe_key", "run_as", "host", "labels", "attempts", "after")
    ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    REQUESTER_UID_FIELD_NUMBER: _ClassVar[int]
    REQUESTER_GID_FIELD_NUMBER: _ClassVar[int]
    SUBMITTED_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    INTERNAL_STATUS_FIELD_NUMBER: _ClassVar[int]
    EXIT_STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    WAITERS_FIELD_NUMBER: _ClassVar[int]
    LOG_PATH_FIELD_NUMBER: _ClassVar[int]
    DEDUPE_KEY_FIELD_NUMBER: _ClassVar[int]
    RUN_AS_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    id: int
    state: JobState
    args: _containers.RepeatedScalarFieldContainer[str]
    requester_uid: int
    requester_gid: int
    submitted: float
    started: float
    finished: float
    internal_status: int
    exit_status: int
    error: str
    position: int
    waiters: int
    log_path: str
    dedupe_key: str
    run_as: str
    host: str
    labels: _containers.RepeatedScalarFieldContainer[str]
    attempts: int
    after: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, id: _Optional[int] = ..., state: _Optional[_Union[JobState, str]] = ..., args: _Optional[_Iterable[str]] = ..., requester_uid: _Optional[int] = ..., requester_gid: _Optional[int] = ..., submitted: _Optional[float] = ..., started: _Optional[float] = ..., finished: _Optional[float] = ..., internal_status: _Optional[int] = ..., exit_status: _Optional[int] = ..., error: _Optional[str] = ..., position: _Optional[int] = ..., waiters: _Optional[int] = ..., log_path: _Optional[str] = ..., dedupe_key: _Optional[str] = ..., run_as: _Optional[str] = ..., host: _Optional[str] = ..., labels: _Optional[_Iterable[str]] = ..., attempts: _Optional[int] = ..., after: _Optional[_Iterable[int]] = ...) -> None: ...

class host_info(_message.Message):
    __slots__ = ("name", "url", "labels", "state", "job_id", "since", "error")
    NAME_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    name: str
    url: str
    labels: _containers.RepeatedScalarFieldContainer[str]
    state: HostState
    job_id: int
    since: float
    error: str
    def __init__(self, name: _Optional[str] = ..., url: _Optional[str] = ..., labels: _Optional[_Iterable[str]] = ..., state: _Optional[_Union[HostState, str]] = ..., job_id: _Optional[int] = ..., since: _Optional[float] = ..., error: _Optional[str] = ...) -> None: ...

class cq_rep(_message.Message):
    __slots__ = ("internal_status", "exit_status", "protocol", "job_id", "state", "error", "merged", "jobs", "log", "log_offset", "log_eof", "hosts")
    INTERNAL_STATUS_FIELD_NUMBER: _ClassVar[int]
    EXIT_STATUS_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    MERGED_FIELD_NUMBER: _ClassVar[int]
    JOBS_FIELD_NUMBER: _ClassVar[int]
    LOG_FIELD_NUMBER: _ClassVar[int]
    LOG_OFFSET_FIELD_NUMBER: _ClassVar[int]
    LOG_EOF_FIELD_NUMBER: _ClassVar[int]
    HOSTS_FIELD_NUMBER: _ClassVar[int]
    internal_status: int
    exit_status: int
    protocol: int
    job_id: int
    state: JobState
    error: str
    merged: bool
    jobs: _containers.RepeatedCompositeFieldContainer[job_info]
    log: bytes
    log_offset: int
    log_eof: bool
    hosts: _containers.RepeatedCompositeFieldContainer[host_info]
    def __init__(self, internal_status: _Optional[int] = ..., exit_status: _Optional[int] = ..., protocol: _Optional[int] = ..., job_id: _Optional[int] = ..., state: _Optional[_Union[JobState, str]] = ..., error: _Optional[str] = ..., merged: bool = ..., jobs: _Optional[_Iterable[_Union[job_info, _Mapping]]] = ..., log: _Optional[bytes] = ..., log_offset: _Optional[int] = ..., log_eof: bool = ..., hosts: _Optional[_Iterable[_Union[host_info, _Mapping]]] = ...) -> None: ...
