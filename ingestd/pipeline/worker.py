"""Worker processes for parsing and cleaning, with CPU and memory limits.

Parsing and cleaning are CPU-bound and meet hostile input (entity bombs,
regex traps in feedparser, 100k nested tags). They run in a process pool so
they use every core, and under limits so one pathological document costs
seconds, never the daemon: a soft CPU limit raises in the task, a data-size
limit turns runaway allocation into MemoryError, and a wall-clock deadline in
the parent kills a worker stuck in C code and rebuilds the pool.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import importlib.machinery
import logging
import multiprocessing
import os
import resource
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ingestd.exceptions import CleanError, WorkerError

log = logging.getLogger("ingestd.worker")
T = TypeVar("T")


class WorkerLimitError(CleanError):
    """A document exceeded the worker's CPU, memory or time limit."""


class _CPUExceeded(BaseException):
    """Raised by SIGXCPU; a BaseException so no ``except Exception`` in a stage swallows it."""


def _on_xcpu(_signum: int, _frame: object) -> None:
    raise _CPUExceeded


def _init_worker(memory_bytes: int) -> None:
    gc.freeze()  # the preloaded parser and cleaner: never garbage, no need to walk them
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGXCPU, _on_xcpu)
    if memory_bytes > 0:
        _soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
        if hard == resource.RLIM_INFINITY or hard > memory_bytes:
            resource.setrlimit(resource.RLIMIT_DATA, (memory_bytes, hard))


def _limited(fn: Callable[..., T], cpu_seconds: float, args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
    """Run ``fn`` with a soft CPU budget counted from now (the hard limit is left alone)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    used = usage.ru_utime + usage.ru_stime
    _soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
    budget = int(used + cpu_seconds) + 1
    if hard != resource.RLIM_INFINITY:
        budget = min(budget, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (budget, hard))
    try:
        return fn(*args, **kwargs)
    except _CPUExceeded:
        raise WorkerLimitError(f"gave up after {cpu_seconds:.0f} s of CPU time") from None
    except MemoryError:
        raise WorkerLimitError("gave up: the document needs more memory than a worker may use") from None
    except RecursionError:
        raise WorkerLimitError("gave up: the document is nested too deeply") from None
    finally:
        resource.setrlimit(resource.RLIMIT_CPU, (resource.RLIM_INFINITY, hard))


@dataclass(frozen=True)
class ByName:
    """A function named by its import path (``"package.module:function"``).

    It pickles as that name and is imported on first call in the worker, so
    the parent process need not import the function's module, nor the
    libraries behind it.
    """

    target: str

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        module, _, name = self.target.partition(":")
        return getattr(importlib.import_module(module), name)(*args, **kwargs)


class WorkerPool:
    """A process pool that survives the death of its workers."""

    def __init__(
        self,
        workers: int | None = None,
        *,
        cpu_seconds: float = 30.0,
        wall_seconds: float = 60.0,
        memory_bytes: int = 1024 * 1024 * 1024,
        retry_unusable: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.workers = workers or os.cpu_count() or 1
        self.cpu_seconds = cpu_seconds
        self.wall_seconds = wall_seconds
        self.memory_bytes = memory_bytes
        self.retry_unusable = retry_unusable
        self._clock = clock
        self._unusable_until: float | None = None  # set when fresh workers could not run a trivial task
        self._probing: asyncio.Task[bool] | None = None
        self._pool: ProcessPoolExecutor | None = None
        self._generation = 0
        self._starting: Future[None] | None = None  # set by start(), done once the workers are up

    def start(self) -> None:
        """Start the fork server and the workers now, without waiting for them.

        The server imports the parser and cleaner (~0.3 s on the 2-core bench
        machine) while the caller goes on. Starting a worker blocks until the
        server is ready, so the workers are started from a thread, and ``run``
        awaits that thread before submitting: left to the first task, the wait
        blocked the event loop (and every fetch) instead.
        """
        pool = self._executor()
        from multiprocessing import forkserver

        forkserver.ensure_running()
        self._starting = Future()
        args = (pool, self.workers, self._starting)
        threading.Thread(target=_start_workers, args=args, name="ingestd-workers", daemon=True).start()

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            _workers_skip_main()
            ctx = multiprocessing.get_context("forkserver")
            # Workers forked from the server start with the parser and cleaner already imported.
            ctx.set_forkserver_preload(["ingestd.pipeline.process"])
            initializer, initargs = self._initializer()
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers, mp_context=ctx, initializer=initializer, initargs=initargs
            )
            self._generation += 1
        return self._pool

    def _initializer(self) -> tuple[Callable[..., None], tuple[Any, ...]]:
        """What each new worker runs first: the limits (a test's subclass breaks workers here)."""
        return _init_worker, (self.memory_bytes,)

    def _kill(self, generation: int) -> None:
        """Tear down a pool whose worker is stuck; the next call builds a new one."""
        pool = self._pool
        if pool is None or generation != self._generation:
            return
        self._pool = None
        for proc in list(getattr(pool, "_processes", {}).values()):
            proc.kill()
        pool.shutdown(wait=False, cancel_futures=True)

    @property
    def usable(self) -> bool:
        """False for ``retry_unusable`` seconds after fresh workers failed to run a trivial task."""
        return self._unusable_until is None or self._clock() >= self._unusable_until

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` in a worker; a broken pool is rebuilt and the task retried once.

        Once workers have proved unable to run anything, every call fails at once
        with ``WorkerError`` for ``retry_unusable`` seconds: each would otherwise
        start and lose a new pool (processes forked, a fork server restarted)
        for the same fault.
        """
        loop = asyncio.get_running_loop()
        if self._starting is not None and not self._starting.done():
            # Shielded, as the tasks below: a cancelled caller must not cancel the thread's future.
            await asyncio.shield(asyncio.wrap_future(self._starting))
        for attempt in (1, 2):
            self._check_usable()  # also between attempts: another task may have found out meanwhile
            pool = self._executor()
            generation = self._generation
            try:
                task = pool.submit(_limited, fn, self.cpu_seconds, args, kwargs)
                future = asyncio.wrap_future(task, loop=loop)
                future.add_done_callback(_outcome_seen)
                # Shielded: a cancelled caller (a poll stopped by a WorkerError or a shutdown) or a
                # timeout leaves the pool's own future alone. Python 3.11's pool raises in its manager
                # thread when it breaks with a cancelled future pending (fixed in 3.12).
                return await asyncio.wait_for(asyncio.shield(future), self.wall_seconds)
            except TimeoutError:
                log.warning("a worker exceeded %.0f s; restarting the worker pool", self.wall_seconds)
                self._kill(generation)
                raise WorkerLimitError(f"gave up after {self.wall_seconds:.0f} s") from None
            except BrokenProcessPool:
                self._kill(generation)
                if attempt == 2:
                    self._check_usable()
                    if not await self._can_run_anything():
                        raise WorkerError(
                            "worker processes cannot run any task (see the log for their error); "
                            "no feed is marked as failing for it"
                        ) from None
                    raise WorkerLimitError("a worker died on this document (memory or CPU limit)") from None
                log.warning("worker pool broke; retrying the task once on a new pool")
        raise AssertionError("unreachable")

    def _check_usable(self) -> None:
        if not self.usable:
            wait = (self._unusable_until or 0.0) - self._clock()
            raise WorkerError(
                "worker processes cannot run any task (see the log for their error); "
                f"next attempt in {wait:.0f} s"
            )

    async def _can_run_anything(self) -> bool:
        """Whether a fresh pool runs a trivial task: if not, a dying worker is not the document's doing.

        Without this, workers that cannot start at all (a broken install, a
        memory limit below what the interpreter needs) would mark every feed
        polled as failing, each with a backoff, for a fault that is none of theirs.
        """
        loop = asyncio.get_running_loop()
        probing = self._probing
        if probing is None or probing.done() or probing.get_loop() is not loop:
            # One probe for every task that finds the pool broken at the same time.
            probing = self._probing = loop.create_task(self._probe())
            probing.add_done_callback(_outcome_seen)
        return await asyncio.shield(probing)

    async def _probe(self) -> bool:
        pool = self._executor()
        generation = self._generation
        try:
            future = asyncio.wrap_future(pool.submit(os.getpid))
            future.add_done_callback(_outcome_seen)
            await asyncio.wait_for(asyncio.shield(future), self.wall_seconds)
        except (BrokenProcessPool, TimeoutError):
            self._kill(generation)
            self._unusable_until = self._clock() + self.retry_unusable
            log.error(
                "worker processes cannot run a trivial task: the worker pool is unusable; "
                "next attempt in %.0f s",
                self.retry_unusable,
            )
            return False
        self._unusable_until = None
        return True

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
            _stop_forkserver()


def _outcome_seen(future: asyncio.Future[Any]) -> None:
    """Retrieve the outcome of a task whose caller may be gone, so asyncio logs no unread error."""
    if not future.cancelled():
        future.exception()


def _start_workers(pool: ProcessPoolExecutor, count: int, done: Future[None]) -> None:
    """Have the pool start its workers: it starts one per task submitted while none is idle."""
    try:
        for _ in range(count):
            pool.submit(int)
    except (RuntimeError, BrokenProcessPool):  # closed or broken meanwhile: the next task starts them
        pass
    finally:
        done.set_result(None)


def _workers_skip_main() -> None:
    """Keep every new worker from running the ``ingestd`` console script again.

    multiprocessing re-executes a main script that has no module spec (one
    run by path, as console scripts are) in each worker it starts: for
    ``ingestd`` that imports the CLI, the store and SQLAlchemy (0.4 s of CPU
    per worker) for nothing, since a worker runs only functions named by
    import path. A spec named ``ingestd.__main__`` is one multiprocessing
    skips, exactly as under ``python -m ingestd``. Other main scripts (a
    program using ingestd as a library) are left as they are: their own
    workers may need them.
    """
    main = sys.modules.get("__main__")
    if (
        main is not None
        and getattr(main, "__spec__", None) is None
        and Path(getattr(main, "__file__", None) or "").name == "ingestd"
    ):
        main.__spec__ = importlib.machinery.ModuleSpec("ingestd.__main__", None)


def _stop_forkserver() -> None:
    """Stop and reap the fork server, so its workers' CPU time is counted as ours.

    The workers are the fork server's children; until this process waits for
    the server, their CPU time shows in no rusage of ours (``time`` and the
    benchmark would report only the parent's share). CPython's own tests stop
    it this way; it is restarted on demand by the next pool.
    """
    from multiprocessing import forkserver

    stop = getattr(getattr(forkserver, "_forkserver", None), "_stop", None)
    if callable(stop):
        stop()
