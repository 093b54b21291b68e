"""cq-server: receive, authenticate, authorize, dedupe, store, run one at a time, answer.

Requests are handled batch by batch: what arrived together is authenticated in parallel
(munged round trips), then handled in arrival order and stored in one commit. Requests from
the original client (no `protocol` field) are answered when their job ends; our clients get
the job id at once and long-poll with WAIT, so a wait survives a server restart.

The ROUTER socket is a plain one read from the event loop's own reader callback, not pyzmq's
asyncio layer: that layer costs a future, a poller round and enum arithmetic per message,
the largest share of the loop's time under a flood. A ROUTER send never blocks (a message to
a gone or stalled peer is dropped), so replies are sent at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sqlite3
import time
from collections import defaultdict, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import zmq

from ..yamlfile import ConfigError
from . import hook, statedir
from .auth import AuthError, Credential, Munge
from .config import REQUESTER, ServerConfig
from .executor import Executor, kill_orphan
from .job import JobState, RunAs, Status
from .remote import RemoteExecutor
from .runner import Runner, Runners
from .serverjob import Job
from .store import Settled, Store, Submission
from .wire import MAX_JOB_ID, BadRequest, Op, Request, build_reply, credential_from_frame, \
    parse_request, unknown_after

log = logging.getLogger(__name__)

BATCH = 512  # requests handled (and their submissions committed) together
RECV_BURST = 64  # frames taken off the socket before other callbacks get their turn
MAX_WAIT_SECONDS = 300
LOG_CHUNK = 64 << 10
LIST_LIMIT = 1000
PRUNE_SECONDS = 3600
# What a reload cannot change (ServerConfig field: its name in the config file).
RESTART_KEYS = {"host": "listen.host", "port": "listen.port", "state_dir": "state_dir",
                "munge_socket": "munge_socket", "hosts": "build_hosts", "ssh": "ssh"}


@dataclass
class Waiter:
    envelope: list[bytes]
    legacy: bool
    timer: asyncio.TimerHandle | None = None


@dataclass
class Refusal:
    status: int
    reason: str


@dataclass
class Authed:
    cred: Credential
    request: Request


@dataclass
class Incoming:
    """A request taken off the socket; `outcome` is set by a decoder thread (an exception:
    a bug, answered as an internal error)."""

    frames: list[zmq.Frame]
    cost: int  # bytes it holds, counted against limits.max_memory_bytes
    outcome: Authed | Refusal | BaseException | None = None


@dataclass
class Server:
    config: ServerConfig
    munge: Munge
    reload_config: Callable[[], ServerConfig] | None = None  # what SIGHUP calls
    store: Store = field(init=False)
    waiters: dict[int, list[Waiter]] = field(default_factory=lambda: defaultdict(list))

    def __post_init__(self) -> None:
        statedir.prepare(self.config.state_dir)  # raises UnsafeStateDir: one line
        self.log_dir = self.config.state_dir / "logs"
        statedir.create_store(self.config.state_dir / "cq.db")
        self.store = Store(self.config.state_dir / "cq.db")
        self.running_file = self.config.state_dir / "running"
        self.local: Executor | None = None
        runners = []
        for host in self.config.hosts:
            if host.ssh is None:
                self.local = executor = Executor(self.config.env_policy,
                                                 running_file=self.running_file,
                                                 log_root=self.log_dir)
            else:
                executor = RemoteExecutor(host, self.config.ssh)
            runners.append(Runner(host, self.store, executor, self.log_dir, self._notify,
                                  lambda: self.runners.wake(), self.config.ssh.retry_seconds))
        self.runners = Runners(runners)
        self.store.on_settled = self._settled
        self._decoders = ThreadPoolExecutor(4, thread_name_prefix="munge")
        # In arrival order; bounded in bytes (config.max_memory), not in entries: see _take.
        self._inbox: deque[Incoming] = deque()
        self._held = 0  # bytes of requests taken off the socket and not yet answered
        self._decoded = asyncio.Event()  # the oldest request in _inbox may be decoded
        self._wake_sent = False  # a decoder thread has asked the loop to set _decoded
        self._recv_soon = False  # a look at the socket is scheduled
        self._busy_logged = 0.0  # when "busy" was last logged
        self._stop = asyncio.Event()
        self.failed = False  # stopped by an internal error: exit status 1

    # -- life cycle ---------------------------------------------------------------------

    def recover(self) -> None:
        local = next((h.name for h in self.config.hosts if h.ssh is None), None)
        for job in self.store.recover():  # a remote job ended with its SSH connection
            killed = job.host in (None, local) and kill_orphan(self.running_file, job.id)
            log.warning("job %d was running when the server stopped: marked interrupted%s",
                        job.id, " (its leftover processes were killed)" if killed else "")
        self.prune()

    def prune(self) -> None:
        """Forget jobs that ended more than keep_finished_days ago, and their logs."""
        paths = self.store.prune(time.time() - self.config.keep_days * 86400)
        for path in paths:
            Path(path).unlink(missing_ok=True)
        if paths:
            log.info("forgot %d jobs that ended over %g days ago", len(paths),
                     self.config.keep_days)

    async def _prune_hourly(self) -> None:
        while True:
            await asyncio.sleep(PRUNE_SECONDS)
            try:
                self.prune()
            except Exception as e:  # e.g. a full disk: next hour
                log.error("cannot forget old jobs: %s: %s", type(e).__name__, e)

    async def serve(self, on_ready: Callable[[], None] | None = None,
                    on_stop: Callable[[], None] | None = None) -> None:
        self.recover()
        ctx = zmq.Context()
        sock = ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 1000)
        # A hard cap: a larger frame disconnects its peer before ZeroMQ allocates it; below
        # it, oversized requests are answered and dropped without being queued (_take).
        sock.setsockopt(zmq.MAXMSGSIZE, max(1 << 20, 2 * self._frame_limit()))
        sock.setsockopt(zmq.HEARTBEAT_IVL, 10000)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 30000)
        endpoint = f"tcp://{self.config.host}:{self.config.port}"
        try:
            sock.bind(endpoint)
        except zmq.ZMQError as e:
            sock.close(0)
            ctx.term()
            raise OSError(f"cannot listen on {endpoint}: {e}") from None
        self.sock = sock
        self._loop = loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        counts = self.store.counts()
        log.info("cq-server listening on %s (%d queued)", endpoint, counts.get("queued", 0))
        if on_ready:
            on_ready()
        runners = asyncio.create_task(self.runners.run(), name="runners")
        handler = asyncio.create_task(self._handle(), name="handler")
        pruner = asyncio.create_task(self._prune_hourly(), name="pruner")
        stop = asyncio.create_task(self._stop.wait())
        fd = sock.getsockopt(zmq.FD)
        loop.add_reader(fd, self._readable)
        self._readable()  # what arrived between bind and now signalled no one
        # A part that ends by itself is a bug: stop with one line rather than go deaf.
        done, _ = await asyncio.wait({stop, runners, handler, pruner},
                                     return_when=asyncio.FIRST_COMPLETED)
        if stop not in done:
            task = done.pop()
            error = task.exception() if not task.cancelled() else None
            self._fail(f"the {task.get_name()}", error)
            stop.cancel()
        log.info("stopping: no new requests")
        loop.remove_reader(fd)
        if on_stop:
            on_stop()
        for task in (handler, pruner):
            task.cancel()
        await self.runners.stop(self.config.stop_grace)
        runners.cancel()
        sock.close(linger=1000)
        ctx.term()
        self.store.close()
        self._decoders.shutdown(cancel_futures=True)  # their clients resend them
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)  # (it restores the default, which kills)
            signal.signal(sig, signal.SIG_IGN)  # stopping already: nothing more to do
        log.info("stopped")

    def _fail(self, part: str, error: BaseException | None) -> None:
        """A part of the server ended or failed by itself (a bug): stop with one line
        rather than stay up and not answer."""
        log.critical("stopping: internal error, %s ended: %s", part,
                     f"{type(error).__name__}: {error}" if error else "no error",
                     exc_info=error)
        self.failed = True
        self._stop.set()

    def reload(self) -> None:
        """SIGHUP: new authorization, environment policy, hook and limits; the queue, the
        running job and the listening socket stay as they are."""
        if self.reload_config is None:
            log.info("SIGHUP: no configuration file to reload")
            return
        try:
            new = self.reload_config()
        except ConfigError as e:  # a line per problem, as at start-up
            for problem in e.problems:
                log.error("SIGHUP: configuration not reloaded, keeping the old one: %s",
                          problem)
            return
        changed = [k for k in RESTART_KEYS if getattr(new, k) != getattr(self.config, k)]
        if changed:
            log.warning("SIGHUP: %s changed; that takes a restart",
                        ", ".join(RESTART_KEYS[k] for k in changed))
            new = replace(new, **{k: getattr(self.config, k) for k in changed})
        self.config = new
        if self.local:
            self.local.set_policy(new.env_policy)
        log.info("configuration reloaded")

    # -- requests -----------------------------------------------------------------------

    def _frame_limit(self) -> int:
        """The largest request frame: a credential (base64 of the payload, and then some)."""
        return self.config.limits.max_request_bytes * 4 // 3 + 4096

    def _readable(self) -> None:
        """The socket has frames, or may have (its descriptor is edge-triggered: after any
        send or receive only ZMQ_EVENTS tells). Take them, a burst at a time so that other
        callbacks and the handler get their turn; never blocking here keeps ZeroMQ's own
        queues drained. An exception here would leave the socket unread: the server stops."""
        self._recv_soon = False
        if self._stop.is_set():  # stopping (a reply may still ask for a look): read no more
            return
        try:
            for _ in range(RECV_BURST):
                try:
                    frames = self.sock.recv_multipart(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    return
                self._take(frames)
            self._look_soon()
        except Exception as e:  # noqa: BLE001 - reported, and the server stops
            self._fail("reading the socket", e)

    def _look_soon(self) -> None:
        if not self._recv_soon:
            self._recv_soon = True
            self._loop.call_soon(self._readable)

    def _take(self, frames: list[zmq.Frame]) -> None:
        """Start decoding a request in a worker thread, or refuse it at once.

        What unauthenticated peers can make the server hold is bounded in bytes: an oversize
        frame is answered and dropped here, and when the requests waiting (for munged, for a
        slow incoming hook) hold config.max_memory bytes, more are answered "busy"."""
        size = len(frames[-1]) if len(frames) > 1 else 0
        cost = 3 * size + 4096  # the frame, its copy and payload while decoded, bookkeeping
        refusal = None
        if size > self._frame_limit():
            refusal = (Status.REFUSED, f"request of {size} bytes is too large")
        elif self._held and self._held + cost > self.config.max_memory:  # one always fits
            refusal = (Status.SERVER_ERROR, "server busy: too many requests waiting; "
                                            "try again")
            if time.monotonic() - self._busy_logged > 10:
                self._busy_logged = time.monotonic()
                log.warning("busy: requests waiting hold %d bytes (limits.max_memory_bytes: "
                            "%d); refusing more", self._held, self.config.max_memory)
        if refusal:
            envelope = [f.bytes for f in frames[:-1]]
            del frames  # dropped before anything else is done with it
            self._error(envelope, *refusal)
            return
        self._held += cost
        incoming = Incoming(frames, cost)
        self._inbox.append(incoming)
        self._decoders.submit(self._decode, incoming)

    def _decode(self, incoming: Incoming) -> None:
        """In a decoder thread: decode, then wake the handler unless a wake-up is on its
        way (it is cleared before the handler looks, so none is missed)."""
        try:
            incoming.outcome = self._authenticate(incoming.frames)
        except BaseException as e:  # noqa: BLE001 - a bug: the handler answers it as one
            incoming.outcome = e  # (or, not an Exception, ends with it: the server stops)
        if not self._wake_sent:
            self._wake_sent = True
            self._loop.call_soon_threadsafe(self._woken)

    def _woken(self) -> None:
        self._wake_sent = False
        self._decoded.set()

    async def _handle(self) -> None:
        """Handle decoded requests in arrival order, a batch at a time: one commit a batch."""
        inbox = self._inbox
        while True:
            await self._decoded.wait()
            self._decoded.clear()
            while inbox and inbox[0].outcome is not None:
                batch = [inbox.popleft()]
                while len(batch) < BATCH and inbox and inbox[0].outcome is not None:
                    batch.append(inbox.popleft())
                try:
                    await self._handle_batch(batch)
                finally:
                    self._held -= sum(incoming.cost for incoming in batch)

    async def _handle_batch(self, batch: list[Incoming]) -> None:
        """Answer what is not a submission at once; store the submissions in one commit
        after. So a LIST may not show a job submitted just before it in the same batch: by
        another client (a REQ client waits for each answer: its requests never share one)."""
        submissions = []
        for incoming in batch:
            frames, outcome = incoming.frames, incoming.outcome
            envelope = [f.bytes for f in frames[:-1]]
            try:
                if isinstance(outcome, BaseException):
                    raise outcome
                if isinstance(outcome, Refusal):
                    log.warning("refused request from %s: %s", _peer(frames),
                                outcome.reason)
                    self._error(envelope, outcome.status, outcome.reason)
                elif outcome.request.op == Op.SUBMIT:
                    submissions.append((envelope, outcome))
                else:
                    self._answer(envelope, outcome)
            except Exception as e:  # one request's bug must not stop the others
                self._internal_error([envelope], e)
        if submissions:
            try:
                await self._submit(submissions)
            except Exception as e:
                self._internal_error([envelope for envelope, _ in submissions], e)

    def _internal_error(self, envelopes: list[list[bytes]], e: Exception,
                        undone: str = "not done") -> None:
        """An unexpected exception while answering: one log record (with the traceback), an
        error reply to each request it hit, and the server goes on. A full or failing disk
        is no bug: one line, however many submissions of a batch it refused."""
        many = f" ({len(envelopes)} requests of one batch)" if len(envelopes) > 1 else ""
        if statedir.disk_failing(e):
            error = f"no space left in STATE_DIR {self.config.state_dir}, or its file " \
                    f"system fails ({e}): {undone}"
            log.error("%s%s", error, many)
        else:
            error = f"internal error in cq-server ({type(e).__name__}: {str(e)[:200]}); its " \
                    "log has the details"
            log.error("internal error while answering a request: %s: %s%s", type(e).__name__,
                      e, many, exc_info=e)
        for envelope in envelopes:
            try:
                self._error(envelope, Status.SERVER_ERROR, error)
            except Exception:  # it cannot be sent either: the client times out and retries
                log.exception("cannot send the internal-error reply")

    def _authenticate(self, frames: list[zmq.Frame]) -> Authed | Refusal:
        """Runs in a worker thread: credential, authorization, then the payload."""
        limits = self.config.limits
        frame = frames[-1].bytes if len(frames) > 1 else b""  # _take refused larger ones
        try:
            cred = self.munge.decode(credential_from_frame(frame))
            self.config.authorizer.check(cred.uid, cred.gid)
            request = parse_request(cred.payload, limits)
            self.config.env_policy.check_request(request.env)
        except AuthError as e:
            return Refusal(Status.SERVER_ERROR if e.server_side else Status.REFUSED, str(e))
        except BadRequest as e:
            return Refusal(Status.REFUSED, str(e))
        return Authed(cred, request)

    def _reply(self, envelope: list[bytes], reply: bytes) -> None:
        try:
            self.sock.send_multipart([*envelope, reply], zmq.NOBLOCK)
        finally:
            self._look_soon()  # the send, even a failed one, may have taken the read edge

    def _error(self, envelope: list[bytes], status: int, error: str) -> None:
        """An answer about no job: a refusal, or why the server could not do it."""
        self._reply(envelope, build_reply(status, 0, error=error))

    async def _submit(self, batch: list[tuple[list[bytes], Authed]]) -> None:
        pending = []
        for envelope, authed in batch:
            cred, req = authed.cred, authed.request
            run_as = RunAs(cred.uid, cred.gid) if self.config.run_as == REQUESTER \
                else self.config.run_as
            job = Job(command=req.command, argv=req.argv, env=req.env, requester_uid=cred.uid,
                      requester_gid=cred.gid, run_as=run_as, dedupe_key=req.dedupe_key,
                      labels=req.labels, after=req.after)
            if (unknown := self.store.unknown(job.after)) is not None:
                self._error(envelope, Status.REFUSED, unknown_after(unknown))
                continue
            if not self.runners.accepts(job.labels):
                self._error(envelope, Status.REFUSED,
                            f"no build host has the labels {' '.join(job.labels)} "
                            f"(build hosts: {self.runners.describe()})")
                continue
            merge_into = None
            if self.config.incoming_hook:
                decision = await hook.ask(self.config.incoming_hook, self.config.hook_timeout,
                                          job, self.store.active(limit=1 << 20))
                if decision.action == "reject":
                    log.warning("hook rejected %s from uid %d: %s", _cmd(job), cred.uid,
                                decision.reason)
                    self._error(envelope, Status.REFUSED, decision.reason)
                    continue
                merge_into = decision.job_id
            pending.append((envelope, req, job, Submission(job, req.request_id, merge_into)))
        if not pending:
            return
        try:
            accepted = self.store.submit([p[-1] for p in pending])  # durable before any answer
        except sqlite3.Error as e:  # only these are unanswered yet
            self._internal_error([p[0] for p in pending], e, "submission not stored")
            return
        for (envelope, req, job, _), acc in zip(pending, accepted):
            log.info("job %d %s from uid %d: %s", acc.job_id,
                     "merged" if acc.merged else "queued", job.requester_uid, _cmd(job))
            if acc.failed:  # a job it needed had ended badly: its final answer now
                self._reply(envelope, self._job_reply(self.store.get(acc.job_id),
                                                      legacy=req.legacy))
            elif req.legacy:
                self.waiters[acc.job_id].append(Waiter(envelope, legacy=True))
            else:
                self._reply(envelope, build_reply(
                    Status.RAN, 0, job_id=acc.job_id, merged=acc.merged, state=JobState.QUEUED))
        self.runners.wake()

    def _settled(self, settled: Settled) -> None:
        """Jobs that waited for others: failed ones are told as any ended job; ready ones
        may go to any idle host."""
        for job in settled.failed:
            self._notify(job)
        if settled.unblocked:
            self.runners.wake()

    def _answer(self, envelope: list[bytes], authed: Authed) -> None:
        req, cred = authed.request, authed.cred
        if req.op == Op.LIST:
            self._reply(envelope, self._list_reply())
            return
        if not 0 <= req.job_id <= MAX_JOB_ID or not 0 <= req.log_offset <= MAX_JOB_ID:
            self._error(envelope, Status.REFUSED,
                        f"job id or log offset out of range (0 to {MAX_JOB_ID})")
            return
        job = self._job(req.job_id)
        if job is None:
            self._reply(envelope, build_reply(Status.NOT_FOUND, 0, job_id=req.job_id,
                                              error=f"no job {req.job_id}"))
        elif req.op == Op.WAIT and not job.state.ended:
            self._add_waiter(job.id, Waiter(envelope, legacy=False), req.wait_seconds)
        elif req.op == Op.CANCEL:
            self._reply(envelope, self._cancel(job, cred))
        elif req.op == Op.LOG:
            self._reply(envelope, self._log_reply(job, req.log_offset))
        else:  # STATUS, or WAIT for a job that has ended
            self._reply(envelope, self._job_reply(job))

    def _add_waiter(self, job_id: int, waiter: Waiter, seconds: int) -> None:
        seconds = min(seconds or 30, MAX_WAIT_SECONDS)
        loop = asyncio.get_running_loop()
        waiter.timer = loop.call_later(seconds, self._wait_expired, job_id, waiter)
        self.waiters[job_id].append(waiter)

    def _wait_expired(self, job_id: int, waiter: Waiter) -> None:
        if waiter in self.waiters.get(job_id, []):
            self.waiters[job_id].remove(waiter)
            self._reply_waiter(waiter.envelope, job_id)

    def _job_reply(self, job: Job, legacy: bool = False) -> bytes:
        r = job.result
        position = self.store.position(job.id) if job.state == JobState.QUEUED \
            and not job.unmet else None
        return build_reply(r.internal_status if r else Status.RAN, r.exit_status if r else 0,
                           legacy=legacy, job_id=job.id, state=job.state,
                           error=r.error if r else None, jobs=[job.info(position)])

    def _list_reply(self) -> bytes:
        jobs, position = [], 0
        for job in self.store.active(LIST_LIMIT):
            ready = job.state == JobState.QUEUED and not job.unmet  # waiting ones: no place
            position += ready
            jobs.append(job.info(position if ready else None))
        jobs += [job.info() for job in self.store.recent(20)]
        return build_reply(Status.RAN, 0, jobs=jobs, hosts=self.runners.infos())

    def _log_reply(self, job: Job, offset: int) -> bytes:
        data = b""
        if job.log_path:
            try:
                with open(statedir.open_under(self.log_dir, job.log_path, os.O_RDONLY),
                          "rb") as f:
                    if offset < os.fstat(f.fileno()).st_size:  # a file system's own limit
                        f.seek(offset)                        # may be below MAX_JOB_ID
                        data = f.read(LOG_CHUNK)
            except FileNotFoundError:
                pass
            except OSError as e:  # ELOOP: a link planted where the log was
                return build_reply(Status.SERVER_ERROR, 0, job_id=job.id,
                                   error=f"cannot read the log of job {job.id}: {e.strerror}")
        eof = job.state.ended and len(data) < LOG_CHUNK
        return build_reply(Status.RAN, 0, job_id=job.id, state=job.state, log=data,
                           log_offset=offset + len(data), log_eof=eof)

    def _cancel(self, job: Job, cred: Credential) -> bytes:
        if cred.uid not in (0, os.getuid(), job.requester_uid):
            return build_reply(Status.REFUSED, 0, job_id=job.id,
                               error=f"uid {cred.uid} may not cancel job {job.id} "
                                     f"(submitted by uid {job.requester_uid})")
        if job.state == JobState.QUEUED:
            self.store.cancel_queued(job, f"cancelled by uid {cred.uid}")
            log.info("job %d cancelled by uid %d", job.id, cred.uid)
            self._notify(job)
        elif (runner := self.runners.running(job.id)) is not None:
            log.info("job %d: stopping it on %s, cancelled by uid %d", job.id,
                     runner.host.name, cred.uid)
            runner.executor.stop("cancel", grace=10)
        else:
            return build_reply(Status.REFUSED, 0, job_id=job.id,
                               error=f"job {job.id} has already ended ({job.state.value})")
        return self._job_reply(job)

    def _job(self, job_id: int) -> Job | None:
        runner = self.runners.running(job_id)
        return runner.running if runner else self.store.get(job_id)

    def _notify(self, job: Job) -> None:
        r = job.result
        log.info("job %d %s: internal status %d, exit status %d%s", job.id, job.state.value,
                 r.internal_status, r.exit_status, f" ({r.error})" if r.error else "")
        for waiter in self.waiters.pop(job.id, []):
            if waiter.timer:
                waiter.timer.cancel()
            self._reply_waiter(waiter.envelope, job.id, job, legacy=waiter.legacy)

    def _reply_waiter(self, envelope: list[bytes], job_id: int, job: Job | None = None,
                      legacy: bool = False) -> None:
        """A waiter's answer, from a timer or a job's end: errors as in _handle."""
        try:
            self._reply(envelope, self._job_reply(job or self._job(job_id), legacy))
        except Exception as e:
            self._internal_error([envelope], e)


def _peer(frames: list[zmq.Frame]) -> str:
    try:
        return frames[-1].get("Peer-Address") or "?"
    except zmq.ZMQError:
        return "?"


def _cmd(job: Job) -> str:
    text = " ".join(job.argv)
    return text if len(text) <= 120 else text[:117] + "..."
