"""The worker pool's limits, on real worker processes."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from ingestd.pipeline.worker import ByName, WorkerLimitError, WorkerPool


def spin_swallowing(seconds: float) -> str:
    """A stage that catches every Exception must still give up at the CPU limit."""
    deadline = time.process_time() + seconds
    while time.process_time() < deadline:
        with contextlib.suppress(Exception):  # the point of the test
            sum(range(10_000))
    return "finished"


def test_cpu_limit_stops_a_task_even_through_except_exception() -> None:
    pool = WorkerPool(workers=1, cpu_seconds=1, wall_seconds=60)
    try:
        with pytest.raises(WorkerLimitError, match="CPU time"):
            asyncio.run(pool.run(spin_swallowing, 30.0))
        # The pool survives: the next task runs.
        assert asyncio.run(pool.run(spin_swallowing, 0.0)) == "finished"
    finally:
        pool.close()


def test_a_task_named_by_import_path_runs_in_the_worker() -> None:
    pool = WorkerPool(workers=1)
    try:
        assert asyncio.run(pool.run(ByName("tests.pipeline.test_worker:spin_swallowing"), 0.0)) == "finished"
    finally:
        pool.close()
