"""Which job a free build host takes: the store's choice, against a plain model of the rule."""

from __future__ import annotations

from pathlib import Path

from hypothesis import example, given, settings
from hypothesis import strategies as st

from cq_portage.cq.job import JobState, Result, Status
from cq_portage.cq.serverjob import Job
from cq_portage.cq.store import Settled, Store, Submission

LABELS = ("amd64", "arm64", "big")
HOSTS = {"a": frozenset({"amd64"}), "b": frozenset({"arm64", "big"}), "c": frozenset()}

job_specs = st.lists(st.tuples(st.integers(0, 2),  # requester uid
                               st.frozensets(st.sampled_from(LABELS), max_size=2)),
                     min_size=1, max_size=25)
steps = st.lists(st.tuples(st.sampled_from(sorted(HOSTS)), st.booleans()), max_size=40)


def expected(queued: list[Job], labels: frozenset[str]) -> int | None:
    """The rule: the oldest job that is its requester's oldest queued one and whose labels
    the host has."""
    seen: set[int] = set()
    for job in queued:  # oldest first
        if job.requester_uid in seen:
            continue
        seen.add(job.requester_uid)
        if labels >= set(job.labels):
            return job.id
    return None


@settings(max_examples=60, deadline=None)
@given(specs=job_specs, plan=steps)
def test_a_free_host_takes_the_oldest_job_it_may_run(tmp_path_factory, specs, plan):
    store = Store(Path(tmp_path_factory.mktemp("store")) / "cq.db")
    try:
        store.submit([Submission(Job("true", ("true", str(i)), (), uid, uid,
                                     labels=tuple(sorted(labels))))
                      for i, (uid, labels) in enumerate(specs)])
        running: dict[str, Job] = {}
        for host, finish_first in plan:
            ended = running.pop(host, None) if finish_first else None
            if ended is None and host in running:
                continue  # busy: one job at a time per host
            if ended is not None:
                ended.result = Result(JobState.DONE)
            queued = [j for j in store.active(1000) if j.state == JobState.QUEUED]
            want = expected(queued, HOSTS[host])
            job = store.finish_and_start(ended, tmp_path_factory.getbasetemp(), host,
                                         HOSTS[host])
            assert (job.id if job else None) == want
            if job is not None:
                assert job.host == host and job.attempts == 1
                running[host] = job
    finally:
        store.close()


def test_a_requeued_job_keeps_its_place_and_its_log(tmp_path):
    store = Store(tmp_path / "cq.db")
    try:
        store.submit([Submission(Job("true", ("true", str(i)), (), 0, 0)) for i in range(3)])
        first = store.finish_and_start(None, tmp_path, "a")
        store.requeue(first)
        again = store.finish_and_start(None, tmp_path, "b")
        assert (again.id, again.host, again.attempts) == (first.id, "b", 2)
        assert again.log_path == first.log_path
    finally:
        store.close()


# Jobs with `after`: each names up to 3 earlier jobs (as offsets back from itself).
dep_specs = st.lists(st.tuples(st.integers(0, 2), st.frozensets(st.sampled_from(LABELS),
                                                                max_size=1),
                               st.frozensets(st.integers(1, 4), max_size=3)),
                     min_size=1, max_size=20)
# A step: a host (maybe finishing its job first, well or badly), a cancel of a queued job,
# or a late submission (after jobs that may have ended by then).
dep_steps = st.lists(st.one_of(
    st.tuples(st.just("host"), st.sampled_from(sorted(HOSTS)), st.booleans(), st.booleans()),
    st.tuples(st.just("cancel"), st.integers(0, 19)),
    st.tuples(st.just("submit"), st.integers(0, 2), st.frozensets(st.integers(1, 6),
                                                                  max_size=2))), max_size=50)


class Model:
    """The rule for jobs with `after`, kept apart from the store: a queued job is ready once
    every job it names ended well; one whose dependency ended otherwise fails, and so on
    down; the order rule applies among ready jobs only."""

    def __init__(self, jobs: list[Job]):
        self.jobs = {j.id: j for j in jobs}
        self.state = {j.id: "queued" for j in jobs}  # queued running ok bad

    def add(self, job: Job) -> bool:
        """A late submission; True if it fails at once (a job it needs ended badly)."""
        self.jobs[job.id] = job
        bad = any(self.state[a] == "bad" for a in job.after)
        self.state[job.id] = "bad" if bad else "queued"
        return bad

    def ready(self, job_id: int) -> bool:
        return self.state[job_id] == "queued" and all(
            self.state[a] == "ok" for a in self.jobs[job_id].after)

    def next_for(self, labels: frozenset[str]) -> int | None:
        seen: set[int] = set()
        for job_id in sorted(self.jobs):
            job = self.jobs[job_id]
            if not self.ready(job_id) or job.requester_uid in seen:
                continue
            seen.add(job.requester_uid)
            if labels >= set(job.labels):
                return job_id
        return None

    def end(self, job_id: int, ok: bool) -> set[int]:
        """The jobs that fail because of it."""
        self.state[job_id] = "ok" if ok else "bad"
        failed, changed = set(), True
        while changed:
            changed = False
            for other, job in self.jobs.items():
                if self.state[other] == "queued" and any(
                        self.state[a] == "bad" for a in job.after):
                    self.state[other] = "bad"
                    failed.add(other)
                    changed = True
        return failed


@settings(max_examples=100, deadline=None)
@given(specs=dep_specs, plan=dep_steps)
# Always tried: job 2 waits for job 1, which runs; a free host takes job 3, not nothing.
@example(specs=[(0, frozenset(), frozenset()), (0, frozenset(), frozenset({1})),
                (0, frozenset(), frozenset())],
         plan=[("host", "c", False, True), ("host", "a", False, True)])
# And: job 1 fails; job 2, which waits for it, fails unrun instead of starting.
@example(specs=[(0, frozenset(), frozenset()), (1, frozenset(), frozenset({1}))],
         plan=[("host", "c", False, True), ("host", "c", True, False)])
def test_a_job_starts_only_after_its_dependencies_ended_well(tmp_path_factory, specs, plan):
    store = Store(Path(tmp_path_factory.mktemp("store")) / "cq.db")
    told: list[Settled] = []
    store.on_settled = told.append
    try:
        subs = [Submission(Job("true", ("true", str(i)), (), uid, uid,
                               labels=tuple(sorted(labels)),
                               after=tuple(sorted({i + 1 - k for k in back if k <= i}))))
                for i, (uid, labels, back) in enumerate(specs)]  # ids are 1, 2, ...
        assert [a.job_id for a in store.submit(subs)] == list(range(1, len(specs) + 1))
        model = Model([replace_id(s.job, i + 1) for i, s in enumerate(subs)])
        running: dict[str, Job] = {}
        for step in plan:
            told.clear()
            if step[0] == "submit":
                _, uid, back = step
                new = len(model.jobs) + 1
                job = Job("true", ("true", str(new)), (), uid, uid,
                          after=tuple(sorted({new - k for k in back if k < new})))
                accepted, = store.submit([Submission(job)])
                assert accepted.job_id == new
                assert accepted.failed == model.add(replace_id(job, new))
                want_failed = set()
            elif step[0] == "cancel":
                queued = [i for i, s in model.state.items() if s == "queued"]
                if not queued:
                    continue
                job = store.get(queued[step[1] % len(queued)])
                store.cancel_queued(job, "test")
                want_failed = model.end(job.id, ok=False)
            else:
                _, host, finish_first, ok = step
                ended = running.pop(host, None) if finish_first else None
                if ended is None and host in running:
                    continue  # busy: one job at a time per host
                want_failed = set()
                if ended is not None:
                    ended.result = Result(JobState.DONE, exit_status=0 if ok else 1)
                    want_failed = model.end(ended.id, ok)
                want = model.next_for(HOSTS[host])
                job = store.finish_and_start(ended, tmp_path_factory.getbasetemp(), host,
                                             HOSTS[host])
                assert (job.id if job else None) == want
                if job is not None:
                    model.state[job.id] = "running"
                    running[host] = job
            failed = {j.id for s in told for j in s.failed}
            assert failed == want_failed  # each told once, right after its commit
            for job_id in want_failed:
                result = store.get(job_id).result
                assert result.internal_status == Status.DEPENDENCY_FAILED
                assert result.error.startswith("job ") and " it needed ended: " in result.error
    finally:
        store.close()


def replace_id(job: Job, job_id: int) -> Job:
    job.id = job_id
    return job


def test_a_job_submitted_after_one_that_failed_fails_at_once(tmp_path):
    store = Store(tmp_path / "cq.db")
    try:
        store.submit([Submission(Job("false", ("false",), (), 0, 0))])
        bad = store.finish_and_start(None, tmp_path, "a")
        bad.result = Result(JobState.DONE, exit_status=2)
        store.finish(bad)
        late, = store.submit([Submission(Job("true", ("true",), (), 0, 0, after=(bad.id,)))])
        assert late.failed and not late.merged
        job = store.get(late.job_id)
        assert job.state == JobState.FAILED and job.result.error == (
            f"job {bad.id} it needed ended: exit status 2")
        assert store.finish_and_start(None, tmp_path, "a") is None  # it never runs
    finally:
        store.close()
