"""Run one function over several items in forked worker processes.

Why fork: a worker starts with everything the parent has loaded (Portage's configuration,
installed-package database, repository metadata) already in memory, so planning several
groups costs one load plus the resolutions, spread over the CPUs. Each worker takes the
next item from a shared counter until none is left, so what a worker caches while resolving
one group also speeds up its next. Results come back pickled through one file per item (no
pipe to deadlock on), in the order of the items.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import tempfile
import traceback
from collections.abc import Callable, Sequence
from typing import TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class ChildFailed(RuntimeError):
    """A worker died, or func raised something that is not one of the expected errors."""


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def map_forked(func: Callable[[Item], Result], items: Sequence[Item], jobs: int,
               expected: tuple[type[BaseException], ...] = ()) -> list[Result | BaseException]:
    """[func(item) for item in items], computed by up to `jobs` forked workers; an
    `expected` exception raised by func is returned in its item's place."""
    next_item = multiprocessing.get_context("fork").Value("i", 0)
    with tempfile.TemporaryDirectory(prefix="cq-emerge-") as folder:
        paths = [os.path.join(folder, f"{index}.pickle") for index in range(len(items))]
        workers = [_fork_worker(func, items, expected, paths, next_item)
                   for _ in range(max(1, min(jobs, len(items))))]
        statuses = [os.waitpid(pid, 0)[1] for pid in workers]
        return [_collect(path, statuses) for path in paths]


def _fork_worker(func, items, expected, paths: list[str], next_item) -> int:
    pid = os.fork()
    if pid:
        return pid
    code = 0
    try:
        while True:
            with next_item.get_lock():
                index = next_item.value
                next_item.value += 1
            if index >= len(items):
                break
            try:
                outcome = ("ok", func(items[index]))
            except expected as error:
                outcome = ("expected", error)
            except BaseException:  # noqa: BLE001 - reported to the parent, never lost
                outcome = ("failed", traceback.format_exc())
            with open(paths[index], "wb") as out:
                pickle.dump(outcome, out)
    except BaseException:  # noqa: BLE001
        code = 70
    finally:
        os._exit(code)  # never the parent's atexit handlers or buffered output


def _collect(path: str, statuses: list[int]):
    try:
        with open(path, "rb") as result:
            kind, value = pickle.load(result)
    except (OSError, EOFError, pickle.UnpicklingError):
        raise ChildFailed(f"a planning worker ended without a result "
                          f"(wait statuses {statuses})") from None
    if kind == "failed":
        raise ChildFailed(f"planning worker failed:\n{value}")
    return value
