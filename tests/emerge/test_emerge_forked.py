"""Forked workers: results in item order, expected errors returned, others reported."""

from __future__ import annotations

import os

import pytest

from cq_portage.emerge.forked import ChildFailed, map_forked


class Expected(Exception):
    pass


def _work(item: int) -> tuple[int, int]:
    if item == 3:
        raise Expected("three")
    return item * item, os.getpid()


def test_results_in_order_from_workers_with_expected_errors():
    results = map_forked(_work, list(range(6)), jobs=2, expected=(Expected,))
    assert [r if isinstance(r, Expected) else r[0] for r in results][:3] == [0, 1, 4]
    assert isinstance(results[3], Expected) and str(results[3]) == "three"
    assert [r[0] for r in results[4:]] == [16, 25]
    pids = {r[1] for r in results if not isinstance(r, Expected)}
    assert os.getpid() not in pids and 1 <= len(pids) <= 2


def test_unexpected_error_and_dead_worker_are_reported():
    with pytest.raises(ChildFailed, match="ZeroDivisionError"):
        map_forked(lambda item: 1 / item, [1, 0], jobs=2)
    with pytest.raises(ChildFailed, match="without a result"):
        map_forked(lambda item: os._exit(3), [1], jobs=1)
