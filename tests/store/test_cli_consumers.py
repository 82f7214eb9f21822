"""The consumer commands end to end: tail (and --follow), search, export, delete."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from ingestd.cli import main
from ingestd.store import Store, open_store
from tests.store.helpers import item, ok, prose


@pytest.fixture
def db(tmp_path: Path) -> Iterator[tuple[str, Store]]:
    url = f"sqlite:///{tmp_path / 'ingestd.db'}"
    store = open_store(url)
    fid, _ = store.add_feed("http://a.test/feed")
    store.save_poll(
        fid,
        ok(),
        [
            item("1", "https://a.test/1", title="Caffè sospeso", text=prose(1, 80)),
            item("2", "https://a.test/2", title="Second", text="nothing to see"),
            item("3", "https://a.test/3", title="Third", text="a third, shorter story"),
        ],
    )
    yield url, store
    store.close()


def _cli(url: str, *args: str) -> str:
    result = CliRunner().invoke(main, ["--db", url, *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_tail_prints_json_lines_after_the_cursor(db: tuple[str, Store]) -> None:
    url, _ = db
    rows = [json.loads(line) for line in _cli(url, "articles", "tail", "--after-seq", "1").splitlines()]
    assert [r["seq"] for r in rows] == [2, 3]
    assert "raw_html" not in rows[0]
    assert rows[0]["content_text"] == "nothing to see"
    assert _cli(url, "articles", "tail", "--after-seq", "3") == ""


def test_search_finds_accented_text_without_accents(db: tuple[str, Store]) -> None:
    url, _ = db
    out = _cli(url, "articles", "search", "caffe", "--json")
    (hit,) = [json.loads(line) for line in out.splitlines()]
    assert hit["title"] == "Caffè sospeso"
    assert hit["url"] == "https://a.test/1"


def test_export_streams_jsonl_and_csv(db: tuple[str, Store], tmp_path: Path) -> None:
    url, _ = db
    out = tmp_path / "export.jsonl"
    _cli(url, "export", "--format", "jsonl", "--after-seq", "1", "--out", str(out))
    assert [json.loads(line)["seq"] for line in out.read_text().splitlines()] == [2, 3]
    rows = list(csv.DictReader(io.StringIO(_cli(url, "export", "--format", "csv"))))
    assert [r["title"] for r in rows] == ["Caffè sospeso", "Second", "Third"]
    assert rows[0]["source_feed_ids"] == "1"


def test_delete_is_for_good(db: tuple[str, Store]) -> None:
    url, store = db
    assert "deleted article 2" in _cli(url, "articles", "delete", "2")
    result = CliRunner().invoke(main, ["--db", url, "articles", "delete", "2"])
    assert result.exit_code == 1
    assert "no article with id 2" in result.output
    assert (
        store.save_poll(1, ok(), [item("2", "https://a.test/2", title="Second", text="nothing to see")]).new
        == 0
    )


@pytest.mark.integration
def test_tail_follow_waits_for_new_rows_and_exits_0_on_sigterm(db: tuple[str, Store]) -> None:
    url, store = db
    env = {k: v for k, v in os.environ.items() if not k.startswith("INGESTD_")}
    with subprocess.Popen(
        [sys.executable, "-m", "ingestd", "--db", url, "articles", "tail", "--after-seq", "2", "--follow"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    ) as proc:
        try:
            assert proc.stdout is not None
            assert json.loads(proc.stdout.readline())["seq"] == 3
            store.save_poll(1, ok(), [item("4", "https://a.test/4", title="Fourth")])
            assert json.loads(proc.stdout.readline())["title"] == "Fourth"
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
