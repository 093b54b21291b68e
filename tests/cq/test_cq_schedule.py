"""Which job a free build host takes: the store's choice, against a plain model of the rule."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from cq_portage.cq.job import Job, JobState, Result
from cq_portage.cq.store import Store, Submission

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
