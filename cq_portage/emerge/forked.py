"""Run one function over several items in forked children, a few at a time.

Why fork: a child starts with everything the parent has loaded (Portage's configuration,
installed-package database, repository metadata) already in memory, so planning several
groups costs one load plus the resolutions, spread over the CPUs. Results come back
pickled through a file per child (no pipe to deadlock on), in the order of the items.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from typing import TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class ChildFailed(RuntimeError):
    """A child died or raised something that is not one of the expected errors."""


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def map_forked(func: Callable[[Item], Result], items: Sequence[Item], jobs: int,
               expected: tuple[type[BaseException], ...] = ()) -> list[Result | BaseException]:
    """[func(item) for item in items], computed in up to `jobs` children at once; an
    `expected` exception raised by func is returned in its item's place."""
    results: list[Result | BaseException | None] = [None] * len(items)
    with tempfile.TemporaryDirectory(prefix="cq-emerge-") as folder:
        pending = list(range(len(items)))
        running: dict[int, int] = {}  # pid -> item index
        while pending or running:
            while pending and len(running) < max(1, jobs):
                index = pending.pop(0)
                running[_spawn(func, items[index], expected,
                               os.path.join(folder, f"{index}.pickle"))] = index
            for pid in list(running):
                done, status = os.waitpid(pid, os.WNOHANG)
                if not done:
                    continue
                index = running.pop(pid)
                results[index] = _collect(os.path.join(folder, f"{index}.pickle"), status)
            if running:
                time.sleep(0.005)
    return results  # type: ignore[return-value]


def _spawn(func, item, expected, path: str) -> int:
    pid = os.fork()
    if pid:
        return pid
    code = 0
    try:
        try:
            outcome = ("ok", func(item))
        except expected as error:
            outcome = ("expected", error)
        except BaseException:  # noqa: BLE001 - reported to the parent, never lost
            outcome = ("failed", traceback.format_exc())
        with open(path, "wb") as out:
            pickle.dump(outcome, out)
    except BaseException:  # noqa: BLE001
        code = 70
    finally:
        os._exit(code)  # never the parent's atexit handlers or buffered output


def _collect(path: str, status: int):
    try:
        with open(path, "rb") as result:
            kind, value = pickle.load(result)
    except (OSError, EOFError, pickle.UnpicklingError):
        raise ChildFailed(f"planning child ended without a result "
                          f"(wait status {status})") from None
    if kind == "failed":
        raise ChildFailed(f"planning child failed:\n{value}")
    return value
