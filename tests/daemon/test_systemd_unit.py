"""deploy/ingestd.service: systemd accepts it, rates it well hardened, and every setting says why."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "deploy" / "ingestd.service"
ANALYZE = shutil.which("systemd-analyze") or (
    "/usr/bin/systemd-analyze" if Path("/usr/bin/systemd-analyze").exists() else None
)
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed (CI has it)")


def _unit_copy(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at an executable that exists here (verify checks it)."""
    text = UNIT.read_text()
    assert "ExecStart=/opt/ingestd/venv/bin/ingestd run" in text
    exe = Path(sys.executable).with_name("ingestd")
    target = exe if exe.exists() else Path(sys.executable)
    copy = tmp_path / "ingestd.service"
    copy.write_text(text.replace("/opt/ingestd/venv/bin/ingestd", str(target)))
    return copy


@needs_analyze
def test_systemd_analyze_verify_passes(tmp_path: Path) -> None:
    done = subprocess.run(
        [ANALYZE, "verify", str(_unit_copy(tmp_path))], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "ingestd.service" not in done.stderr, done.stderr  # no warnings about our unit either


@needs_analyze
def test_security_exposure_is_at_most_2(tmp_path: Path) -> None:
    done = subprocess.run(
        [ANALYZE, "security", "--offline=yes", "--no-pager", str(_unit_copy(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", done.stdout)
    assert match, done.stdout[-2000:]
    assert float(match.group(1)) <= 2.0, done.stdout


def test_the_unit_has_what_operations_rely_on() -> None:
    settings = dict(
        line.split("=", 1)
        for line in UNIT.read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    assert settings["Type"] == "notify"
    assert settings["NotifyAccess"] == "main"
    assert settings["Restart"] == "on-failure"
    assert settings["DynamicUser"] == "yes"
    assert settings["StateDirectory"] == settings["ConfigurationDirectory"] == "ingestd"
    assert settings["RestrictAddressFamilies"] == "AF_INET AF_INET6 AF_UNIX"
    assert int(settings["WatchdogSec"]) > 0
    assert "IPAddressDeny" not in settings, "the daemon must reach feeds anywhere on the internet"


def test_every_setting_is_explained_by_a_comment() -> None:
    lines = UNIT.read_text().splitlines()
    bare = []
    for i, line in enumerate(lines):
        if "=" not in line or line.startswith("#"):
            continue
        j = i - 1  # a comment right above this line, or above the run of settings it belongs to
        while j >= 0 and "=" in lines[j] and not lines[j].startswith("#"):
            j -= 1
        if j < 0 or not lines[j].startswith("#") or i - j > 6:
            bare.append(line)
    assert not bare, f"settings without a comment: {bare}"
