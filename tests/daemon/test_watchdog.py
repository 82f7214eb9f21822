"""The watchdog pings only while the tick is alive, the database answers and workers can run
(fakes, no systemd)."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path
from typing import Any

import pytest

from ingestd.config import DaemonSettings, Settings
from ingestd.daemon.metrics import Metrics
from ingestd.daemon.scheduler import Ticker
from ingestd.daemon.systemd import Notifier
from ingestd.exceptions import StorageError


class FakeNotifier(Notifier):
    def __init__(self, watchdog_seconds: float = 2.0) -> None:
        super().__init__(environ={})
        self.watchdog_seconds = watchdog_seconds
        self.sent: list[str] = []

    def notify(self, *lines: str) -> bool:
        self.sent.extend(lines)
        return True


class FakeStore:
    def __init__(self) -> None:
        self.alive = True
        self.hang = 0.0
        self.claimed: list[int] = []
        self.claims = 0

    def ping(self) -> None:
        if self.hang:
            import time

            time.sleep(self.hang)
        if not self.alive:
            raise StorageError("database error: OperationalError: unable to open database file")

    def claim(self, **_kw: Any) -> list[Any]:
        self.ping()
        self.claims += 1
        return []


class FakePool:
    usable = True


class FakeIngestor:
    """Only the database thread the tick claims through, and whether its workers can run."""

    def __init__(self, store: FakeStore) -> None:
        self.store = store
        self.pool = FakePool()

    async def _db_call(self, fn: Any, *args: Any) -> Any:
        return fn(*args)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _ticker(store: FakeStore, notifier: FakeNotifier, clock: Clock) -> Ticker:
    settings = Settings(daemon=DaemonSettings(tick=1.0))
    return Ticker(settings, store, FakeIngestor(store), notifier, Metrics(), clock=clock)  # type: ignore[arg-type]


def _pings(notifier: FakeNotifier) -> int:
    return notifier.sent.count("WATCHDOG=1")


def test_watchdog_pings_while_tick_alive_and_database_answers() -> None:
    store, notifier, clock = FakeStore(), FakeNotifier(), Clock()
    ticker = _ticker(store, notifier, clock)

    async def scenario() -> None:
        await ticker.watchdog()
        assert _pings(notifier) == 0, "no ping before the first tick"
        await ticker.tick()
        await ticker.watchdog()
        assert _pings(notifier) == 1
        assert ticker.healthy()

        store.alive = False  # the database dies: no more pings, even though the tick just ran
        await ticker.watchdog()
        assert _pings(notifier) == 1
        assert not ticker.healthy()
        await ticker.tick()  # the tick fails too and stays failed
        assert not ticker.db_ok

        store.alive = True  # it comes back: pings resume after the next good tick
        await ticker.tick()
        await ticker.watchdog()
        assert _pings(notifier) == 2

        clock.now += ticker.tick_budget + 1  # the tick stalls (no tick for too long): no ping
        await ticker.watchdog()
        assert _pings(notifier) == 2
        assert not ticker.healthy()

    try:
        asyncio.run(scenario())
    finally:
        ticker.close()


def test_watchdog_withholds_ping_while_workers_cannot_run() -> None:
    """A pool whose workers cannot run makes the daemon unhealthy: systemd's watchdog restarts it."""
    store, notifier, clock = FakeStore(), FakeNotifier(), Clock()
    ticker = _ticker(store, notifier, clock)
    pool = ticker.ing.pool

    async def scenario() -> None:
        await ticker.tick()
        await ticker.watchdog()
        assert _pings(notifier) == 1
        pool.usable = False
        claims = store.claims
        await ticker.tick()
        await ticker.watchdog()
        assert _pings(notifier) == 1
        assert not ticker.healthy()
        assert store.claims == claims  # no feed claimed to be fetched only to fail
        pool.usable = True  # the pool's retry time has come and its probe succeeded
        await ticker.tick()
        await ticker.watchdog()
        assert _pings(notifier) == 2
        assert store.claims == claims + 1

    try:
        asyncio.run(scenario())
    finally:
        ticker.close()


def test_watchdog_withholds_ping_when_database_hangs() -> None:
    store, notifier, clock = FakeStore(), FakeNotifier(watchdog_seconds=0.4), Clock()
    ticker = _ticker(store, notifier, clock)

    async def scenario() -> None:
        await ticker.tick()
        store.hang = 0.6  # longer than half the watchdog interval
        await ticker.watchdog()

    try:
        asyncio.run(scenario())
    finally:
        ticker.close()
    assert _pings(notifier) == 0
    assert not ticker.db_ok


def test_stopping_daemon_is_not_healthy() -> None:
    store, notifier, clock = FakeStore(), FakeNotifier(), Clock()
    ticker = _ticker(store, notifier, clock)

    async def scenario() -> None:
        await ticker.tick()
        assert ticker.healthy()
        await ticker.stop(1.0, asyncio.Event())
        assert not ticker.healthy()

    try:
        asyncio.run(scenario())
    finally:
        ticker.close()


def test_notifier_sends_one_datagram_to_an_abstract_socket() -> None:
    name = f"ingestd-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2)
        notifier = Notifier({"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "3000000"})
        assert notifier.watchdog_seconds == 3.0
        assert notifier.notify("READY=1", "STATUS=ok")
        assert sock.recv(1024) == b"READY=1\nSTATUS=ok"


def test_notifier_ignores_a_watchdog_meant_for_another_process(tmp_path: Path) -> None:
    notifier = Notifier(
        {"NOTIFY_SOCKET": str(tmp_path / "gone.sock"), "WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"}
    )
    assert notifier.watchdog_seconds is None
    assert notifier.notify("READY=1") is False  # the socket does not exist: no crash, just False
    assert Notifier({}).notify("READY=1") is False


@pytest.mark.parametrize("usec", ["", "0", "abc"])
def test_notifier_without_watchdog(usec: str) -> None:
    assert Notifier({"WATCHDOG_USEC": usec}).watchdog_seconds is None
