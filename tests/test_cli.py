"""The CLI's error contract: one clear line, exit codes, no traceback unless -v."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def _run(*args: str, tmp: Path, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INGESTD_")}
    env.update({"INGESTD_DB": f"sqlite:///{tmp / 'x.db'}", "HOME": str(tmp)})
    env.update(extra_env or {})
    return subprocess.run(
        [sys.executable, "-m", "ingestd", *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_unknown_config_key_is_one_clear_line(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[fetch]\ntimeoutt = 3\n")
    proc = _run("--config", str(cfg), "feeds", "list", tmp=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [f"ingestd: error: {cfg}: unknown key fetch.timeoutt"]


def test_traceback_only_with_verbose(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[fetch]\nconcurrency = 'x'\n")
    quiet = _run("--config", str(cfg), "feeds", "list", tmp=tmp_path)
    loud = _run("-v", "--config", str(cfg), "feeds", "list", tmp=tmp_path)
    assert "Traceback" not in quiet.stderr
    assert "Traceback" in loud.stderr
    assert "fetch.concurrency" in quiet.stderr


def test_feed_lifecycle(tmp_path: Path) -> None:
    assert (
        _run(
            "feeds", "add", "--no-discover", "https://example.test/feed", "--interval", "1h", tmp=tmp_path
        ).returncode
        == 0
    )
    again = _run("feeds", "add", "--no-discover", "https://example.test/feed", tmp=tmp_path)
    assert "already subscribed" in again.stdout
    assert _run("feeds", "add", "--no-discover", "ftp://example.test/feed", tmp=tmp_path).returncode == 2
    assert _run("feeds", "pause", "1", tmp=tmp_path).returncode == 0
    assert " paused " in _run("feeds", "list", tmp=tmp_path).stdout
    assert _run("feeds", "resume", "https://example.test/feed", tmp=tmp_path).returncode == 0
    exported = _run("feeds", "export", tmp=tmp_path).stdout
    assert 'xmlUrl="https://example.test/feed"' in exported
    opml = tmp_path / "out.opml"
    opml.write_text(exported)
    missing = _run("feeds", "remove", "99", tmp=tmp_path)
    assert missing.returncode == 1
    assert "no feed with id or URL '99'" in missing.stderr
    assert _run("feeds", "remove", "1", tmp=tmp_path).returncode == 0
    assert _run("feeds", "list", tmp=tmp_path).stdout == ""
    imported = _run("feeds", "import", str(opml), tmp=tmp_path)
    assert "imported 1 feeds (1 new)" in imported.stdout


def test_bad_opml_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.opml"
    bad.write_text("<html><body>nope</body></html>")
    proc = _run("feeds", "import", str(bad), tmp=tmp_path)
    assert proc.returncode == 1
    assert "not an OPML file" in proc.stderr


def test_db_upgrade_creates_the_database(tmp_path: Path) -> None:
    proc = _run("--db", f"sqlite:///{tmp_path / 'new' / 'a.db'}", "db", "upgrade", tmp=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "new" / "a.db").exists()


def test_poll_with_no_feeds_runs(tmp_path: Path) -> None:
    proc = _run("poll", "--all", tmp=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "polled 0 feeds" in proc.stderr
