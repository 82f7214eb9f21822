"""Worker pools broken on purpose, for tests of what happens when workers cannot run at all."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from ingestd.pipeline.worker import WorkerPool


class WorkersThatCannotStart(WorkerPool):
    """Every worker exits before its first task (a broken install, as far as the pool can tell),
    until ``broken`` is set to False."""

    broken = True

    def _initializer(self) -> tuple[Callable[..., None], tuple[Any, ...]]:
        return (os._exit, (4,)) if self.broken else super()._initializer()
