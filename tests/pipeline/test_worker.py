"""The worker pool's limits, on real worker processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ingestd.exceptions import WorkerError
from ingestd.pipeline.worker import ByName, WorkerLimitError, WorkerPool
from tests.workerpools import WorkersThatCannotStart


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


SCRIPT = """
import asyncio, os, sys
from pathlib import Path

if __name__ == "__mp_main__":  # multiprocessing re-running this script in a worker
    Path(sys.argv[1]).write_text("re-run in a worker")
    raise SystemExit("must not happen")

from ingestd.pipeline.worker import ByName, WorkerPool

if __name__ == "__main__":
    pool = WorkerPool(workers=1)
    try:
        print(asyncio.run(pool.run(ByName("os:getpid"))) != os.getpid())
    finally:
        pool.close()
"""


def test_workers_do_not_run_the_ingestd_script_again(tmp_path: Path) -> None:
    """A main script named ``ingestd`` without a module spec, run by path, as the console script is.

    multiprocessing would execute it again in every worker (for ``ingestd``: the CLI, the
    store and SQLAlchemy imported for nothing in each).
    """
    script = tmp_path / "ingestd"
    script.write_text(SCRIPT)
    marker = tmp_path / "marker"
    done = subprocess.run(
        [sys.executable, str(script), str(marker)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"
    assert not marker.exists()


def test_start_starts_the_workers_before_any_task() -> None:
    """Workers start in the background: the first task finds them ready, the event loop never waits."""
    pool = WorkerPool(workers=2)
    try:
        started = time.monotonic()
        pool.start()
        assert time.monotonic() - started < 1.0  # returns at once; the fork server imports meanwhile
        deadline = time.monotonic() + 30
        while len(_processes(pool)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(_processes(pool)) == 2
        pids = set(_processes(pool))
        assert asyncio.run(pool.run(ByName("os:getpid"))) in pids  # no third worker was needed
    finally:
        pool.close()


def _processes(pool: WorkerPool) -> dict[int, object]:
    executor = pool._pool
    return dict(getattr(executor, "_processes", None) or {})


def die_now() -> None:
    """A document that kills its worker outright (as the kernel's OOM killer would)."""
    os._exit(3)


def test_a_document_that_kills_its_worker_is_blamed_and_the_pool_goes_on() -> None:
    pool = WorkerPool(workers=1, wall_seconds=60)
    try:
        with pytest.raises(WorkerLimitError, match="worker died on this document"):
            asyncio.run(pool.run(die_now))
        assert asyncio.run(pool.run(ByName("os:getpid"))) != os.getpid()
    finally:
        pool.close()


def test_unusable_workers_fail_fast_until_the_retry_time_then_recover() -> None:
    """After the probe fails, calls raise at once (no new pool each) until ``retry_unusable`` has passed."""
    now = [1000.0]
    pool = WorkersThatCannotStart(workers=1, wall_seconds=60, retry_unusable=60, clock=lambda: now[0])
    try:
        with pytest.raises(WorkerError, match="no feed is marked"):
            asyncio.run(pool.run(ByName("os:getpid")))
        assert not pool.usable
        pools = pool._generation
        now[0] += 59
        with pytest.raises(WorkerError, match="next attempt in 1 s"):
            asyncio.run(pool.run(ByName("os:getpid")))
        assert pool._generation == pools  # no pool was started for it

        pool.broken = False  # the fault is gone (a restarted service, memory freed)
        now[0] += 2
        assert pool.usable
        assert asyncio.run(pool.run(ByName("os:getpid"))) != os.getpid()
        assert pool.usable
    finally:
        pool.close()


def test_workers_that_cannot_run_anything_blame_no_document() -> None:
    pool = WorkersThatCannotStart(workers=1, wall_seconds=60)
    try:
        with pytest.raises(WorkerError, match="cannot run any task"):
            asyncio.run(pool.run(ByName("os:getpid")))
    finally:
        pool.close()
