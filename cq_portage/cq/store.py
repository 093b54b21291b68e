"""The durable job store: SQLite in WAL mode, one connection, owned by the server's loop.

A submission is committed (fsync'd: synchronous=FULL) before the server answers it. The end of
one job and the start of the next share a transaction, so a serial queue costs one commit per
job. Waiters are not stored: they are connections, and a client that comes back asks by id.

Dependencies (`after`): a queued job counts in `unmet` the jobs it waits for that have not
ended, and `deps` holds those pairs until they end. Only jobs with unmet = 0 are ready; a
dependency that ends otherwise than DONE with exit status 0 fails its dependants at once, in
the same transaction, and theirs in turn. Ids in `after` are older than the job, so there are
no cycles. With no `after` anywhere, `deps` is empty and scheduling is what it was.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from .job import JobState, Result, RunAs, Status
from .serverjob import Job

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,   -- never reused: clients come back by id
    state TEXT NOT NULL,
    command TEXT NOT NULL,
    argv TEXT NOT NULL,                     -- JSON list
    env TEXT NOT NULL,                      -- JSON [[name, value], ...] as requested
    run_uid INTEGER, run_gid INTEGER,
    requester_uid INTEGER NOT NULL, requester_gid INTEGER NOT NULL,
    key TEXT NOT NULL, dedupe_key TEXT,
    submitted REAL NOT NULL, started REAL, finished REAL,
    internal_status INTEGER, exit_status INTEGER, error TEXT,
    log_path TEXT,
    waiters INTEGER NOT NULL DEFAULT 1,
    labels TEXT NOT NULL DEFAULT '',        -- space-separated; a host must have them all
    host TEXT,                              -- the build host that runs or ran it
    attempts INTEGER NOT NULL DEFAULT 0,    -- times started (a host that went down: requeued)
    after TEXT NOT NULL DEFAULT '',         -- space-separated ids: start once all ended well
    unmet INTEGER NOT NULL DEFAULT 0        -- of those, how many have not ended yet
);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs(state, id);
CREATE INDEX IF NOT EXISTS jobs_queued_by_key ON jobs(key) WHERE state = 'queued';
CREATE TABLE IF NOT EXISTS requests (
    request_id TEXT PRIMARY KEY, job_id INTEGER NOT NULL, uid INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS requests_by_job ON requests(job_id);
CREATE TABLE IF NOT EXISTS deps (           -- (a job not ended yet, a queued job waiting for it)
    after_id INTEGER NOT NULL, job_id INTEGER NOT NULL, PRIMARY KEY (after_id, job_id)
) WITHOUT ROWID;
"""
# Built after the columns that a database of an older version lacks have been added.
INDEXES = """
DROP INDEX IF EXISTS jobs_queued_by_requester;  -- replaced by ready_by_requester
CREATE INDEX IF NOT EXISTS jobs_ready ON jobs(id) WHERE state = 'queued' AND unmet = 0;
CREATE INDEX IF NOT EXISTS jobs_ready_by_requester ON jobs(requester_uid, id)
    WHERE state = 'queued' AND unmet = 0;
"""
ADDED_COLUMNS = {"labels": "TEXT NOT NULL DEFAULT ''", "host": "TEXT",
                 "attempts": "INTEGER NOT NULL DEFAULT 0", "after": "TEXT NOT NULL DEFAULT ''",
                 "unmet": "INTEGER NOT NULL DEFAULT 0"}


@dataclass(frozen=True)
class Submission:
    job: Job
    request_id: str | None = None
    merge_into: int | None = None  # the incoming hook's choice


@dataclass(frozen=True)
class Accepted:
    job_id: int
    merged: bool
    failed: bool = False  # a job it should run after had already ended badly: it never runs


@dataclass
class Settled:
    """What a commit did to jobs waiting for others; told to Store.on_settled."""

    failed: list[Job] = field(default_factory=list)  # ended FAILED: a dependency did
    unblocked: bool = False  # a dependency ended well: a waiting job may be ready


def _job(row: sqlite3.Row) -> Job:
    state = JobState(row["state"])
    result = None
    if state.ended:
        result = Result(state, row["internal_status"], row["exit_status"] or 0, row["error"])
    return Job(command=row["command"], argv=tuple(json.loads(row["argv"])),
               env=tuple(tuple(p) for p in json.loads(row["env"])),
               requester_uid=row["requester_uid"], requester_gid=row["requester_gid"],
               run_as=RunAs(row["run_uid"], row["run_gid"]), dedupe_key=row["dedupe_key"],
               id=row["id"], state=state, submitted=row["submitted"], started=row["started"],
               finished=row["finished"], result=result, waiters=row["waiters"],
               log_path=row["log_path"], labels=tuple(row["labels"].split()),
               host=row["host"], attempts=row["attempts"],
               after=tuple(int(i) for i in row["after"].split()), unmet=row["unmet"])


class Store:
    CHECKPOINT_SECONDS = 0.25
    WAL_LIMIT = 4 << 20  # bytes of WAL past which a checkpoint may make writers wait

    def __init__(self, path: Path):
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        # Checkpoints copy the WAL into the database; done by the committing connection they
        # stall whichever submission crosses the threshold, so a thread does them instead.
        self.db.execute("PRAGMA wal_autocheckpoint=0")
        self.db.execute("PRAGMA cache_size=-65536")  # 64 MiB: a deep queue stays in memory
        self.db.executescript(SCHEMA)
        have = {row["name"] for row in self.db.execute("PRAGMA table_info(jobs)")}
        for name, kind in ADDED_COLUMNS.items():
            if name not in have:
                self.db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {kind}")
        self.db.executescript(INDEXES)
        # Told after each commit that failed or unblocked waiting jobs (on the same thread).
        self.on_settled: Callable[[Settled], None] | None = None
        self._settled = Settled()  # of the transaction under way
        # False: `deps` is empty, so an ending job has nobody to tell (the fast path). Set
        # when rows go in; cleared only after a commit that took rows out left none.
        self._deps = self._deps_left()
        self._deps_taken = False
        self._closing = threading.Event()
        self._checkpointer = threading.Thread(target=self._checkpoint, daemon=True,
                                              name="checkpoint")
        self._checkpointer.start()

    def _checkpoint(self) -> None:
        failing = False
        with closing(sqlite3.connect(self.path, isolation_level=None)) as db:
            while not self._closing.wait(self.CHECKPOINT_SECONDS):
                try:  # a full disk must not end the thread, or the WAL grows without bound
                    db.execute(f"PRAGMA wal_checkpoint({self._checkpoint_mode()})")
                except sqlite3.Error as e:
                    if not failing:
                        log.error("checkpoint of %s failed (%s); retrying every %gs", self.path,
                                  e, self.CHECKPOINT_SECONDS)
                    failing = True
                    continue
                if failing:
                    log.warning("checkpoint of %s works again", self.path)
                failing = False

    def _checkpoint_mode(self) -> str:
        """PASSIVE never stalls a submission, but under a steady stream of commits it never
        catches up with the last one, and only a WAL copied to its end is started afresh:
        past WAL_LIMIT, TRUNCATE holds the writers back for the moment it takes."""
        try:
            size = os.stat(f"{self.path}-wal").st_size
        except OSError:
            return "PASSIVE"
        return "TRUNCATE" if size > self.WAL_LIMIT else "PASSIVE"

    def close(self) -> None:
        self._closing.set()
        self._checkpointer.join()
        try:
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as e:  # a full disk: the WAL is replayed at the next start
            log.error("final checkpoint of %s failed: %s", self.path, e)
        self.db.close()

    @contextmanager
    def _tx(self) -> Iterator[None]:
        self._settled, self._deps_taken = Settled(), False
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self.db.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:  # a COMMIT that failed (disk full) may leave it open
                try:
                    self.db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            raise
        if self._deps_taken:
            self._deps = self._deps_left()
        settled = self._settled
        if (settled.failed or settled.unblocked) and self.on_settled:
            self.on_settled(settled)

    def _deps_left(self) -> bool:
        return self.db.execute("SELECT EXISTS (SELECT 1 FROM deps)").fetchone()[0] == 1

    def recover(self) -> list[Job]:
        """Jobs left running by a dead server end as interrupted; they are never re-run."""
        with self._tx():
            rows = self.db.execute("SELECT * FROM jobs WHERE state = 'running'").fetchall()
            self.db.execute(
                "UPDATE jobs SET state = 'interrupted', finished = ?, internal_status = ?, "
                "error = 'the server stopped while the job ran; it was not re-run' "
                "WHERE state = 'running'", (time.time(), int(Status.INTERRUPTED)))
            for row in rows:
                self._settle(row["id"], ok=False, how=JobState.INTERRUPTED.value)
        return [_job(r) for r in rows]

    def submit(self, batch: list[Submission]) -> list[Accepted]:
        """Store a batch in one transaction: one fsync however many arrived together."""
        out = []
        now = time.time()
        with self._tx():
            for sub in batch:
                out.append(self._submit_one(sub, now))
        return out

    def _submit_one(self, sub: Submission, now: float) -> Accepted:
        job, db = sub.job, self.db
        if sub.request_id:
            row = db.execute("SELECT job_id FROM requests WHERE request_id = ? AND uid = ?",
                             (sub.request_id, job.requester_uid)).fetchone()
            if row:  # a resent submission: same answer as the first time
                return Accepted(row[0], merged=False)
        target, key = None, job.key  # (a hash of the command line: computed once)
        if sub.merge_into is not None:  # the hook may also join the running job
            target = db.execute("SELECT id FROM jobs WHERE id = ? AND state IN "
                                "('queued', 'running')", (sub.merge_into,)).fetchone()
        else:
            target = db.execute(
                "SELECT id FROM jobs WHERE key = ? AND state = 'queued' ORDER BY id LIMIT 1",
                (key,)).fetchone()
        failed = False
        if target:  # it keeps its own `after`: the same work, already placed
            job_id, merged = target[0], True
            db.execute("UPDATE jobs SET waiters = waiters + 1 WHERE id = ?", (job_id,))
        else:
            merged = False
            waits, bad = self._dependencies(job.after)
            job_id = db.execute(
                "INSERT INTO jobs (state, command, argv, env, run_uid, run_gid, requester_uid,"
                " requester_gid, key, dedupe_key, submitted, labels, after, unmet)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                ("queued", job.command, json.dumps(job.argv), json.dumps(job.env),
                 job.run_as.uid, job.run_as.gid, job.requester_uid, job.requester_gid,
                 key, job.dedupe_key, now, " ".join(job.labels),
                 " ".join(map(str, job.after)), 0 if bad else len(waits))).lastrowid
            if bad:  # accepted, and ended at once: its client learns it as any job's end
                failed = self._fail_unrun(job_id, bad, now)
            elif waits:
                db.executemany("INSERT INTO deps VALUES (?, ?)", [(i, job_id) for i in waits])
                self._deps = True
        if sub.request_id:
            db.execute("INSERT INTO requests VALUES (?, ?, ?)",
                       (sub.request_id, job_id, job.requester_uid))
        return Accepted(job_id, merged, failed)

    def _dependencies(self, after: tuple[int, ...]) -> tuple[list[int], str | None]:
        """Of `after`: the jobs that have not ended yet, and why the job cannot run (the
        first that ended otherwise than well), or None."""
        waits = []
        for job_id in after:
            row = self.db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:  # checked before the hook; forgotten since (prune)
                return [], f"job {job_id} it needed is unknown"
            dep = _job(row)
            if not dep.state.ended:
                waits.append(job_id)
            elif not dep.result.ok:
                return [], f"job {job_id} it needed ended: {dep.result.how}"
        return waits, None

    def unknown(self, ids: tuple[int, ...]) -> int | None:
        """The first of `ids` that names no job."""
        for job_id in ids:
            if self.db.execute("SELECT 1 FROM jobs WHERE id = ?", (job_id,)).fetchone() is None:
                return job_id
        return None

    def finish_and_start(self, ended: Job | None, log_dir: Path, host: str = "local",
                         labels: frozenset[str] = frozenset()) -> Job | None:
        """Record how `ended` ended and start the next job that `host`, which has `labels`,
        may run, in one commit."""
        with self._tx():
            if ended is not None:
                self._finish(ended)
            row = self._next_for(labels)
            if row is None:
                return None
            job = _job(row)
            job.state, job.started, job.host = JobState.RUNNING, time.time(), host
            job.attempts += 1
            if job.log_path is None:  # a requeued job goes on with the log it has
                job.log_path = str(log_dir / f"{job.id // 1000:04d}" / f"{job.id}.log")
            self.db.execute("UPDATE jobs SET state = 'running', started = ?, log_path = ?, "
                            "host = ?, attempts = ? WHERE id = ?",
                            (job.started, job.log_path, host, job.attempts, job.id))
            return job

    def _next_for(self, labels: frozenset[str]) -> sqlite3.Row | None:
        """The oldest ready job (queued, not waiting for others) whose labels `labels`
        covers and that is its requester's oldest ready one: a requester's jobs start in
        the order they came, except that one waiting for others holds none back."""
        # INDEXED BY: the planner would rather walk all queued jobs, waiting ones too.
        row = self.db.execute("SELECT * FROM jobs INDEXED BY jobs_ready WHERE state = 'queued'"
                              " AND unmet = 0 ORDER BY id LIMIT 1").fetchone()
        if row is None or labels.issuperset(row["labels"].split()):
            return row  # the common case: the head of the queue fits
        for row in self.db.execute(
                "SELECT jobs.* FROM jobs JOIN (SELECT min(id) AS id FROM jobs INDEXED BY "
                "jobs_ready_by_requester WHERE state = 'queued' AND unmet = 0 "
                "GROUP BY requester_uid) AS first USING (id) ORDER BY id"):
            if labels.issuperset(row["labels"].split()):
                return row
        return None

    def requeue(self, job: Job) -> None:
        """Back into the queue, where it was: its host went down while it ran."""
        with self._tx():
            self.db.execute("UPDATE jobs SET state = 'queued', started = NULL, host = NULL, "
                            "attempts = ? WHERE id = ?", (job.attempts, job.id))
        job.state, job.started, job.host = JobState.QUEUED, None, None

    def finish(self, job: Job) -> None:
        with self._tx():
            self._finish(job)

    def _finish(self, job: Job) -> None:
        r = job.result
        job.state, job.finished = r.state, time.time()
        self.db.execute(
            "UPDATE jobs SET state = ?, finished = ?, internal_status = ?, exit_status = ?,"
            " error = ? WHERE id = ?",
            (r.state.value, job.finished, r.internal_status, r.exit_status, r.error, job.id))
        if not self._deps:
            return  # the common case: nothing waits for anything
        if job.after:  # a waiting job that ended (cancelled): it waits no more
            self.db.execute("DELETE FROM deps WHERE job_id = ?", (job.id,))
            self._deps_taken = True
        self._settle(job.id, r.ok, r.how)

    def _settle(self, ended: int, ok: bool, how: str) -> None:
        """Tell the jobs that wait for `ended` how it went: one fewer to wait for, or (it
        ended badly) fail them without running, and theirs in turn."""
        if not self._deps:
            return
        work = [(ended, ok, how)]
        while work:
            ended, ok, how = work.pop()
            waiting = [r[0] for r in self.db.execute(
                "SELECT job_id FROM deps WHERE after_id = ?", (ended,))]
            if not waiting:
                continue  # nothing waits for it
            self.db.execute("DELETE FROM deps WHERE after_id = ?", (ended,))
            self._deps_taken = True
            if ok:
                self.db.executemany("UPDATE jobs SET unmet = unmet - 1 WHERE id = ? AND "
                                    "state = 'queued'", [(i,) for i in waiting])
                self._settled.unblocked = True
                continue
            for job_id in waiting:
                if self._fail_unrun(job_id, f"job {ended} it needed ended: {how}", time.time()):
                    self.db.execute("DELETE FROM deps WHERE job_id = ?", (job_id,))
                    self._settled.failed.append(self.get(job_id))
                    work.append((job_id, False, JobState.FAILED.value))

    def _fail_unrun(self, job_id: int, reason: str, now: float) -> bool:
        """End a queued job FAILED without running it (a job it needed did not end well);
        False if it is queued no more."""
        return self.db.execute(
            "UPDATE jobs SET state = 'failed', finished = ?, internal_status = ?, exit_status = 0,"
            " error = ?, unmet = 0 WHERE id = ? AND state = 'queued'",
            (now, int(Status.DEPENDENCY_FAILED), reason, job_id)).rowcount == 1

    def get(self, job_id: int) -> Job | None:
        row = self.db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _job(row) if row else None

    def position(self, job_id: int) -> int:
        """1 for the next job to run, among the ready ones (a waiting job has none)."""
        return self.db.execute("SELECT count(*) FROM jobs INDEXED BY jobs_ready WHERE "
                               "state = 'queued' AND unmet = 0 AND id <= ?",
                               (job_id,)).fetchone()[0]

    def active(self, limit: int) -> list[Job]:
        return [_job(r) for r in self.db.execute(
            "SELECT * FROM jobs WHERE state IN ('running', 'queued') "
            "ORDER BY state = 'queued', id LIMIT ?", (limit,))]

    def recent(self, limit: int) -> list[Job]:
        return [_job(r) for r in reversed(self.db.execute(
            "SELECT * FROM jobs WHERE state NOT IN ('running', 'queued') "
            "ORDER BY finished DESC LIMIT ?", (limit,)).fetchall())]

    def counts(self) -> dict[str, int]:
        return dict(self.db.execute(
            "SELECT state, count(*) FROM jobs WHERE state IN ('queued', 'running') "
            "GROUP BY state").fetchall())

    def cancel_queued(self, job: Job, reason: str) -> None:
        job.result = Result(JobState.CANCELLED, Status.CANCELLED, 0, reason)
        self.finish(job)

    def prune(self, older_than: float) -> list[str]:
        """Forget jobs that ended before `older_than`; returns their log paths."""
        with self._tx():
            rows = self.db.execute(
                "SELECT id, log_path FROM jobs WHERE finished < ? AND state NOT IN "
                "('queued', 'running')", (older_than,)).fetchall()
            ids = [(r[0],) for r in rows]
            self.db.executemany("DELETE FROM requests WHERE job_id = ?", ids)
            self.db.executemany("DELETE FROM jobs WHERE id = ?", ids)
        return [r[1] for r in rows if r[1]]
