"""Shared fixtures.

``shared_dir`` is the one way tests reach ``../shared`` (corpus, hostile
server, bench, seed): it exists for developers and CI, never for users, so
tests that need it skip with a reason where it is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"


def _find_shared() -> Path | None:
    env = os.environ.get("INGESTD_SHARED_DIR")
    candidates = [Path(env)] if env else []
    candidates += [ROOT.parent / "shared", ROOT / "shared"]
    for path in candidates:
        if (path / "corpus").is_dir():
            return path
    return None


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    path = _find_shared()
    if path is None:
        pytest.skip("../shared (corpus, hostile server, seed) is not present; set INGESTD_SHARED_DIR")
    return path


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA
