"""bench/soak.py runs end to end: a 20-feed farm, 3 cycles of ``ingestd run``, one row per cycle.

Memory limits are set out of reach: this checks the harness (cycles complete,
every feed is polled once a cycle, 304s after the first, the table and the
summary are printed), not ingestd's footprint.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.shared, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
ROW = re.compile(
    r"^\s+(?P<cycle>\d+)\s+(?P<secs>[\d.]+)\s+(?P<polls>\d+)\s+(?P<new>\d+)\s+(?P<nm>\d+)\s+(?P<err>\d+)"
    r"\s+(?P<stories>\d+)\s+(?P<expect>\d+)\s+[\d.]+\s+[\d.]+ \|\s+(?P<main>[\d.]+)\s+[\d.]+ \|"
    r"\s+(?P<worker>[\d.]+)\s+[\d.]+\s+\d+ \|\s+[\d.]+\s+[\d.]+$",
    re.M,
)


@pytest.mark.timeout(90)
def test_soak_runs_three_cycles(shared_dir: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INGESTD_")}
    cmd = [sys.executable, str(ROOT / "bench" / "soak.py"), "--feeds", "20", "--cycles", "3"]
    cmd += ["--shared", str(shared_dir), "--server", "python", "--workdir", str(tmp_path / "work")]
    cmd += ["--max-rss-mb", "100000", "--max-growth-mb", "100000", "--stall", "40"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=80, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    rows = [m.groupdict() for m in ROW.finditer(proc.stdout)]
    assert [r["cycle"] for r in rows] == ["1", "2", "3"], proc.stdout
    for r in rows:
        assert int(r["polls"]) == 20, r  # every feed once a cycle (db trigger)
        assert int(r["err"]) == 0, r
        assert float(r["main"]) > 0, r
        assert float(r["worker"]) > 0, r
    assert int(rows[0]["new"]) == 20
    assert [int(r["new"]) for r in rows[1:]] == [2, 2]  # ceil(10 % of 20) mutated feeds
    assert [int(r["nm"]) for r in rows[1:]] == [18, 18]  # the rest answer 304
    assert "growth of RSS, end of cycle 2 -> end of cycle 3" in proc.stdout
    assert re.search(r"^peak RSS of the largest process .*: [\d.]+ MB$", proc.stdout, re.M)
    assert proc.stdout.rstrip().splitlines()[-1].startswith("PASS")
    assert (tmp_path / "work" / "daemon.log").is_file()  # --workdir is kept
