"""Per-stage and end-to-end timings of ingestd on a directory of feed files.

    python bench/stages.py [--feeds DIR] [--no-e2e] [--feedparser] [--server URL]

``--feeds`` defaults to the shared corpus (../shared/corpus/feeds) when it is
there; any directory of RSS/Atom/JSON Feed files works, including a farm made
by ../shared/bench/farm.py (its ``feeds/`` directory, searched recursively).

First the floor of a short poll: a fresh interpreter's start, and its start
with the modules ``ingestd poll`` imports before its first request. Stages
then run one after another in this process, on one core: fetch (every file
over HTTP, 16 at once, from a local threaded server in its own process or
from ``--server URL``, e.g. the shared bench's nginx serving the farm), the
same requests again with their Last-Modified, as ``ingestd poll`` sends them
(all 304: what a warm cycle's HTTP costs), parse, clean, dedupe keys, store (SQLite, one transaction per
feed). Each prints seconds, entries/s and MB/s of raw feed XML. The
end-to-end part serves the same files, imports them and runs ``ingestd poll
--all`` twice (cold, then warm: every feed unchanged), printing wall and
CPU seconds and peak RSS of the command, as a user runs it.
``--feedparser`` turns parse's fast path off (feedparser for every document),
for comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

from ingestd.exceptions import IngestdError
from ingestd.models import CleanArticle, FeedContext, FeedUpdate, IdentityKeys, ParsedFeed
from ingestd.pipeline import dedupe
from ingestd.pipeline.clean import clean_entry
from ingestd.pipeline.fetch import Fetcher, FetchPolicy
from ingestd.pipeline.parse import parse_feed
from ingestd.store import open_store

SUFFIXES = {".xml", ".rss", ".atom", ".rdf", ".json"}
ROOT = Path(__file__).resolve().parent.parent


def feed_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.suffix in SUFFIXES and p.is_file())


_SERVER = """
import sys
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

class Quiet(SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a real server and the fetcher use

    def log_message(self, format, *args):
        pass

httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=sys.argv[1]))
print(httpd.server_address[1], flush=True)
httpd.serve_forever()
"""


@contextmanager
def serve(directory: Path) -> Iterator[str]:
    """A threaded static server on 127.0.0.1, in a process of its own so that its CPU is not counted
    as the client's (no ETag: conditional requests rely on Last-Modified)."""
    server = subprocess.Popen(
        [sys.executable, "-c", _SERVER, str(directory)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        yield f"http://127.0.0.1:{int(server.stdout.readline())}"
    finally:
        server.terminate()
        server.wait()


def _host_port(base: str) -> str:
    parts = urlsplit(base)
    return f"{parts.hostname}:{parts.port or 80}"


def imports_floor() -> None:
    """What a fresh interpreter spends before ``ingestd poll`` can send its first request."""
    poll_path = "import ingestd.cli, ingestd.daemon.service, ingestd.pipeline.fetch, ingestd.store"
    for label, code in (("python", "pass"), ("imports", poll_path)):
        wall, cpu, _rss = _measured([sys.executable, "-c", code], dict(os.environ))
        what = "interpreter start" if code == "pass" else "interpreter start and poll imports"
        print(f"{label:<10} {wall:8.2f} s wall {cpu:8.2f} s CPU ({what})")


def row(stage: str, seconds: float, entries: int, megabytes: float) -> None:
    eps = entries / seconds if seconds else 0.0
    mbs = megabytes / seconds if seconds else 0.0
    print(f"{stage:<10} {seconds:8.2f} s {entries:8d} entries {eps:10.0f} entries/s {mbs:8.2f} MB/s")


def run_stages(
    files: list[Path], base_dir: Path, *, fast_path: bool = True, server: str | None = None
) -> None:
    total_mb = sum(p.stat().st_size for p in files) / 1e6
    print(f"{len(files)} feed files, {total_mb:.1f} MB\n")

    with serve(base_dir) if server is None else nullcontext(server) as base:
        host = _host_port(base)
        validators: dict[str, str | None] = {}

        async def fetch_all(policy: FetchPolicy, conditional: bool) -> int:
            sem = asyncio.Semaphore(policy.concurrency)
            async with Fetcher(policy) as fetcher:

                async def one(p: Path) -> int:
                    async with sem:
                        url = f"{base}/{p.relative_to(base_dir).as_posix()}"
                        try:
                            result = await fetcher.get(url, last_modified=validators.get(url))
                        except IngestdError:
                            return 0
                        if not conditional:
                            validators[url] = result.last_modified
                        return 1 if result.not_modified else 0

                return sum(await asyncio.gather(*(one(p) for p in files)))

        # Bodies: as fast as the machine allows (16 connections). The 304s: as `ingestd poll` sends
        # them, with the default policy (2 connections to the one host), for httpx's CPU per
        # request grows with the connections in flight.
        bulk = FetchPolicy(allowed_hosts=(host,), per_host_concurrency=16, timeout=60)
        started = time.perf_counter()
        asyncio.run(fetch_all(bulk, False))
        row("fetch", time.perf_counter() - started, 0, total_mb)
        started, cpu = time.perf_counter(), time.process_time()
        answered = asyncio.run(fetch_all(FetchPolicy(allowed_hosts=(host,)), True))
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        label = "fetch 304"
        print(f"{label:<10} {wall:8.2f} s {cpu:8.2f} s CPU: {len(files)} conditional GETs, {answered} x 304")

    parsed: list[ParsedFeed] = []
    started = time.perf_counter()
    for p in files:
        try:
            parsed.append(
                parse_feed(p.read_bytes(), url=f"http://bench.invalid/{p.name}", fast_path=fast_path)
            )
        except IngestdError:
            continue
    entries = sum(len(f.entries) for f in parsed)
    row("parse", time.perf_counter() - started, entries, total_mb)

    cleaned: list[list[tuple[CleanArticle, IdentityKeys]]] = []
    started = time.perf_counter()
    articles = []
    for feed in parsed:
        ctx = FeedContext(
            url=feed.url, site_url=feed.site_url, language=feed.language, generator=feed.generator
        )
        batch = []
        for entry in feed.entries:
            try:
                batch.append((entry, clean_entry(entry, ctx)))
            except IngestdError:
                continue
        articles.append(batch)
    row("clean", time.perf_counter() - started, entries, total_mb)

    started = time.perf_counter()
    for batch in articles:
        cleaned.append(
            [(a, dedupe.identity_keys(dedupe.guid_key(e), a, dedupe.entry_hash(e))) for e, a in batch]
        )
    row("dedupe", time.perf_counter() - started, entries, total_mb)

    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(f"sqlite:///{tmp}/bench.db")
        ids = [store.add_feed(f"http://bench.invalid/{i}")[0] for i in range(len(cleaned))]
        now = datetime.now(UTC)
        started = time.perf_counter()
        for feed_id, items in zip(ids, cleaned, strict=True):
            store.save_poll(feed_id, FeedUpdate("new", now, now + timedelta(hours=1)), items)
        row("store", time.perf_counter() - started, entries, total_mb)
        store.close()


def _measured(cmd: list[str], env: dict[str, str]) -> tuple[float, float, float]:
    """Wall s, CPU s (children included) and peak RSS MB of one command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, after.ru_maxrss / 1024


def run_e2e(files: list[Path], base_dir: Path, *, fast_path: bool = True, server: str | None = None) -> None:
    print("\nend to end: ingestd poll --all (wall s, CPU s, peak RSS MB of the largest process)")
    with (
        serve(base_dir) if server is None else nullcontext(server) as base,
        tempfile.TemporaryDirectory() as tmp,
    ):
        opml = Path(tmp) / "feeds.opml"
        outlines = "\n".join(
            f'<outline type="rss" xmlUrl="{base}/{p.relative_to(base_dir).as_posix()}"/>' for p in files
        )
        opml.write_text(f'<?xml version="1.0"?><opml version="2.0"><head/><body>{outlines}</body></opml>')
        env = {k: v for k, v in os.environ.items() if not k.startswith("INGESTD_")}
        env.update(
            INGESTD_DB=f"sqlite:///{tmp}/e2e.db",
            INGESTD_FETCH_ALLOWED_HOSTS=_host_port(base),
            INGESTD_FASTPARSE="1" if fast_path else "0",
        )
        cmd = [sys.executable, "-m", "ingestd"]
        subprocess.run([*cmd, "feeds", "import", str(opml)], env=env, check=True, stdout=subprocess.DEVNULL)
        for label in ("cold", "warm"):
            wall, cpu, rss = _measured([*cmd, "-q", "poll", "--all"], env)
            print(f"{label:<10} {wall:8.2f} s wall {cpu:8.2f} s CPU {rss:8.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default = ROOT.parent / "shared" / "corpus" / "feeds"
    parser.add_argument("--feeds", type=Path, default=default if default.is_dir() else None)
    parser.add_argument("--no-e2e", action="store_true", help="skip the end-to-end poll")
    parser.add_argument("--feedparser", action="store_true", help="parse every document with feedparser")
    parser.add_argument(
        "--server",
        metavar="URL",
        help="fetch from this server instead of a Python one: the URL that serves --feeds DIR on 127.0.0.1 "
        "(e.g. ../shared/bench/serve.sh's nginx, http://127.0.0.1:18999/feeds)",
    )
    args = parser.parse_args()
    if args.feeds is None or not args.feeds.is_dir():
        parser.error("--feeds DIR is required (no ../shared/corpus/feeds here)")
    files = feed_files(args.feeds)
    if not files:
        parser.error(f"no feed files under {args.feeds}")
    server = args.server.rstrip("/") if args.server else None
    if server is not None and urlsplit(server).hostname != "127.0.0.1":
        parser.error("--server must be on 127.0.0.1")
    imports_floor()
    run_stages(files, args.feeds, fast_path=not args.feedparser, server=server)
    if not args.no_e2e:
        run_e2e(files, args.feeds, fast_path=not args.feedparser, server=server)


if __name__ == "__main__":
    main()
