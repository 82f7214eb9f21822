"""Signal handlers that only set flags; the service loop acts on them."""

from __future__ import annotations

import asyncio
import signal
from dataclasses import dataclass, field


@dataclass
class Flags:
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    force: asyncio.Event = field(default_factory=asyncio.Event)
    reload: asyncio.Event = field(default_factory=asyncio.Event)
    signals: int = 0


def install(loop: asyncio.AbstractEventLoop, flags: Flags) -> None:
    """SIGTERM/SIGINT: stop claiming and drain; a second SIGINT: force; SIGHUP: reload."""

    def on_stop(signum: int) -> None:
        flags.signals += 1
        if flags.stop.is_set() and signum == signal.SIGINT:
            flags.force.set()
        flags.stop.set()

    loop.add_signal_handler(signal.SIGTERM, on_stop, signal.SIGTERM)
    loop.add_signal_handler(signal.SIGINT, on_stop, signal.SIGINT)
    loop.add_signal_handler(signal.SIGHUP, flags.reload.set)


def uninstall(loop: asyncio.AbstractEventLoop) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.remove_signal_handler(sig)
