"""bench/stages.py runs end to end on our own fixture feeds: every row is printed, and the
conditional pass is answered 304 for every feed (what the warm-cycle floor it prints relies on)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.feedserver import FeedServer, serve

pytestmark = [pytest.mark.integration]

ROOT = Path(__file__).resolve().parent.parent
FEEDS = ("kitchen_sink.atom", "kitchen_sink.rss", "kitchen_sink.json")


@pytest.mark.timeout(120)
def test_stages_prints_every_row(tmp_path: Path) -> None:
    for name in FEEDS:
        shutil.copy(ROOT / "tests" / "data" / "parse" / name, tmp_path / name)
    cmd = [sys.executable, str(ROOT / "bench" / "stages.py"), "--feeds", str(tmp_path), "--no-e2e"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=110, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    for label in ("python", "imports"):
        assert re.search(rf"^{label}\s+[\d.]+ s wall\s+[\d.]+ s CPU", out, re.M), out
    assert re.search(r"^fetch 304\s+[\d.]+ s\s+[\d.]+ s CPU: 3 conditional GETs, 3 x 304$", out, re.M), out
    for stage in ("fetch", "parse", "clean", "dedupe", "store"):
        match = re.search(rf"^{stage}\s+[\d.]+ s\s+(\d+) entries", out, re.M)
        assert match, out
        if stage != "fetch":
            assert int(match.group(1)) > 0, out


@pytest.mark.timeout(120)
def test_stages_fetches_from_a_given_local_server(tmp_path: Path) -> None:
    for name in FEEDS:
        shutil.copy(ROOT / "tests" / "data" / "parse" / name, tmp_path / name)
    with serve(FeedServer()) as server:
        server.add_dir(tmp_path, prefix="feeds/")
        cmd = [sys.executable, str(ROOT / "bench" / "stages.py"), "--feeds", str(tmp_path), "--no-e2e"]
        cmd += ["--server", server.url("feeds")]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=110, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3 conditional GETs, 3 x 304" in proc.stdout, proc.stdout
    assert sorted((h.path, h.status) for h in server.hits) == sorted(
        [(f"feeds/{name}", 200) for name in FEEDS] + [(f"feeds/{name}", 304) for name in FEEDS]
    )


def test_stages_refuses_a_server_that_is_not_local() -> None:
    feeds = ROOT / "tests" / "data" / "parse"
    cmd = [sys.executable, str(ROOT / "bench" / "stages.py"), "--feeds", str(feeds)]
    cmd += ["--server", "http://192.0.2.1/feeds"]  # refused before any request is sent
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert "--server must be on 127.0.0.1" in proc.stderr
