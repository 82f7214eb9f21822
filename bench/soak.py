"""Soak bench: memory of ``ingestd run`` across poll cycles on a local feed farm.

    python bench/soak.py --feeds 2000 --cycles 10     # the daemon, 10 cycles
    python bench/soak.py --feeds 2000 --cold-only     # one cold `ingestd poll --all`

What it answers: at N feeds, what is the peak RSS of the largest ingestd
process (the main process, or a parse/clean worker of its fork server), and
does RSS grow from cycle to cycle? It exits 1 when that peak exceeds
--max-rss-mb (120) or when the RSS of the main process or of the largest
worker at the end of the last cycle exceeds the one at the end of cycle 2 by
more than --max-growth-mb (10), so it can be used as a check.

How: ``../shared/bench/farm.py generate`` writes a deterministic farm (or
``--farm DIR`` is copied), the shared ``serve.sh`` serves it with a private
nginx (ETag, Last-Modified, gzip; a Python threaded server without nginx or
with ``--server python``), ``ingestd feeds import`` subscribes a fresh SQLite
database, and ``ingestd run`` starts (tick 0.2 s) with a 1-day schedule, so it
polls nothing on its own: each cycle the bench makes every feed due (``UPDATE
feeds SET next_poll_at = now``, the schedule column) and waits until every
feed's ``last_polled_at`` is past the cycle's start (``--trigger interval``
uses a 1 s schedule instead and lets the daemon poll continuously). Cycle 1
(the cold one) counts from the daemon's start. Before cycles 2..C,
``farm.py mutate`` gives 10 % of the feeds one new item; the others should
answer 304. VmRSS/VmHWM of the daemon and its descendants are read from /proc
every --sample seconds, and /metrics is scraped once a cycle. ``--cold-only``
runs ``ingestd poll --all`` once instead and reports, like /usr/bin/time, its
wall and CPU time and the peak RSS of its largest process (wait4's ru_maxrss).

Columns: secs (start to the end of the last poll), polls by outcome (from
``fetch_log``), stories in the DB and what ``expected.json`` says, CPU seconds
of ingestd's processes and of everything else on the machine (``others``:
disturbance by other loads), RSS at the cycle's end and peak (VmHWM) of the
main process and of the largest worker (n workers), total RSS and PSS of
ingestd's processes. INGESTD_* variables pass through (INGESTD_FETCH_CONCURRENCY=8),
and so does MALLOC_ARENA_MAX; ``--keep`` keeps the work dir (farm, DB, logs).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
INGESTD = [sys.executable, "-m", "ingestd"]
TICKS = os.sysconf("SC_CLK_TCK")
LIVE = "SELECT COUNT(*) FROM feeds WHERE status IN ('active', 'failing')"
HEADER = (
    "cycle    secs  polls   new   304  err  stories   expect   cpu_s  others |"
    "   main m_peak | worker w_peak  n | tot_rss tot_pss"
)


@dataclass(frozen=True)
class Proc:
    pid: int
    kind: str  # main, forkserver, worker, other
    rss: float = 0.0  # MB
    hwm: float = 0.0  # MB, the process's peak RSS so far
    pss: float = 0.0  # MB, shared pages split between their users
    cpu: float = 0.0  # seconds, its own and its reaped children's


def _read(path: str) -> str:
    try:
        with open(path, encoding="latin-1") as fh:
            return fh.read()
    except OSError:
        return ""


def _mb(text: str, key: str) -> float:
    match = re.search(rf"^{key}:\s+(\d+) kB", text, re.M)
    return int(match.group(1)) / 1024 if match else 0.0


def tree(root: int) -> list[Proc]:
    """Process ``root`` and its live descendants; the fork server's descendants are workers."""
    children: dict[int, list[int]] = {}
    cpu: dict[int, float] = {}
    for entry in os.scandir("/proc"):
        fields = _read(f"/proc/{entry.name}/stat").rsplit(")", 1)[-1].split() if entry.name.isdigit() else []
        if len(fields) > 14:  # [1] ppid, [11:15] utime stime cutime cstime
            children.setdefault(int(fields[1]), []).append(int(entry.name))
            cpu[int(entry.name)] = sum(int(x) for x in fields[11:15]) / TICKS
    kinds, queue = {root: "main"}, [root]
    while queue:
        parent = queue.pop()
        for pid in children.get(parent, []):
            if kinds[parent] in ("forkserver", "worker"):
                kinds[pid] = "worker"
            else:
                kinds[pid] = "forkserver" if "forkserver" in _read(f"/proc/{pid}/cmdline") else "other"
            queue.append(pid)
    procs = []
    for pid, kind in kinds.items():
        status = _read(f"/proc/{pid}/status")
        if "VmRSS" in status:  # not exited, not a zombie
            pss = _mb(_read(f"/proc/{pid}/smaps_rollup"), "Pss")
            procs.append(Proc(pid, kind, _mb(status, "VmRSS"), _mb(status, "VmHWM"), pss, cpu.get(pid, 0.0)))
    return procs


def largest(procs: list[Proc], kind: str) -> Proc:
    return max((p for p in procs if p.kind == kind), key=lambda p: p.rss, default=Proc(0, kind))


class Meter:
    """CPU seconds used by other loads on the machine since creation (not ingestd, server, harness)."""

    def __init__(self, server_pid: int | None) -> None:
        self.server_pid = server_pid
        self.start = self._now()

    def _now(self) -> float:
        ticks = [int(x) for x in _read("/proc/stat").split("\n", 1)[0].split()[1:]]
        busy = (sum(ticks[:8]) - ticks[3] - ticks[4]) / TICKS  # all but idle and iowait
        server = sum(p.cpu for p in tree(self.server_pid)) if self.server_pid else 0.0
        return busy - sum(os.times()[:2]) - server

    def others(self, ingestd_cpu: float) -> float:
        return max(0.0, self._now() - self.start - ingestd_cpu)


class Child:
    """A command in its own process group, reaped with wait4 to read its tree's rusage."""

    def __init__(self, cmd: list[str], env: dict[str, str], log: Path) -> None:
        self.started, self.log = time.perf_counter(), log
        with log.open("ab") as fh:
            self.popen = subprocess.Popen(cmd, env=env, stdout=fh, stderr=fh, start_new_session=True)
        self.pid, self.code = self.popen.pid, None  # type: int, int | None
        self.wall = self.cpu = self.maxrss = 0.0

    def done(self) -> bool:
        if self.code is None:
            pid, status, usage = os.wait4(self.pid, os.WNOHANG)
            if pid:
                self.code = self.popen.returncode = os.waitstatus_to_exitcode(status)
                self.wall = time.perf_counter() - self.started
                self.cpu = usage.ru_utime + usage.ru_stime
                self.maxrss = usage.ru_maxrss / 1024  # of the largest process of the tree
        return self.code is not None

    def stop(self, grace: float = 60.0) -> None:
        """SIGTERM; SIGKILL its process group (fork server, workers) after ``grace`` s or a 2nd Ctrl-C."""
        if not self.done():
            os.kill(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        try:
            while not self.done():
                if time.monotonic() > deadline:
                    print(
                        f"soak: pid {self.pid} ignored SIGTERM for {grace:g} s; killing it", file=sys.stderr
                    )
                    os.killpg(self.pid, signal.SIGKILL)
                    deadline = math.inf
                time.sleep(0.1)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)  # what is left of the group (nothing after a clean exit)

    def tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-15:])


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def serve(root: Path, port: int, shared: Path, work: Path, kind: str) -> Iterator[tuple[str, int | None]]:
    """Serve ``root`` on 127.0.0.1:port; yields (server kind, its pid or None when in this process)."""
    if kind == "nginx" or (kind == "auto" and (shutil.which("nginx") or Path("/usr/sbin/nginx").exists())):
        env = {**os.environ, "SERVE_WATCH_PID": str(os.getpid()), "SERVE_MAX_SECONDS": "172800"}
        cmd = ["bash", str(shared / "bench" / "serve.sh"), str(root), str(port), str(work / "nginx")]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if out.returncode:
            raise SystemExit(f"soak: serve.sh failed ({out.returncode}): {out.stderr.strip()}")
        info = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
        try:
            yield info.get("SERVER", "nginx"), int(info["NGINX_PID"])
        finally:
            subprocess.run([info["STOP"]], check=False)
        return
    httpd = ThreadingHTTPServer(("127.0.0.1", port), partial(_Quiet, directory=str(root)))
    httpd.daemon_threads = True
    Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield "python", None
    finally:
        httpd.shutdown()
        httpd.server_close()


def free_port(preferred: int) -> int:
    """``preferred`` when it can be bound on 127.0.0.1 (nothing listens there), else a free port."""
    for candidate in (preferred, 0):
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do: TIME_WAIT is fine
            try:
                s.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise SystemExit("soak: no free port on 127.0.0.1")


def farm_json(shared: Path, *args: str) -> dict[str, Any]:
    """Run ``farm.py ARGS``; its summary (the last line of its output, JSON)."""
    cmd = [sys.executable, str(shared / "bench" / "farm.py"), *args]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode:
        raise SystemExit(f"soak: farm.py {args[0]} failed: {out.stderr.strip()}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def utc(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%d %H:%M:%S.%f")  # as the store writes times to SQLite


def scrape(port: int) -> None:
    """GET /metrics once, as Prometheus would (rendering it costs the main process memory too)."""
    with contextlib.suppress(OSError, http.client.HTTPException):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/metrics")
        conn.getresponse().read()
        conn.close()


class Soak:
    def __init__(self, args: argparse.Namespace, work: Path, farm: Path, port: int, expect: int) -> None:
        self.args, self.work, self.farm, self.port, self.expect = args, work, farm, port, expect
        self.db_path, cfg, self.metrics_port = work / "soak.db", work / "soak.toml", free_port(0)
        every = "1s" if args.trigger == "interval" else "1d"
        cfg.write_text(
            f'[schedule]\ndefault_interval = "{every}"\nmin_interval = "{every}"\nmax_interval = "{every}"\n'
            f'jitter = 0\n\n[daemon]\ntick = {args.tick}\nmetrics_listen = "127.0.0.1:{self.metrics_port}"\n'
        )
        drop = ("INGESTD_CONFIG", "INGESTD_DB", "INGESTD_DATABASE_URL")  # ours: --config and --db
        self.env = {k: v for k, v in os.environ.items() if k not in drop}
        self.env["INGESTD_FETCH_ALLOWED_HOSTS"] = f"127.0.0.1:{port}"
        self.cmd = [*INGESTD, "--config", str(cfg), "--db", f"sqlite:///{self.db_path}"]
        self.peak: dict[str, tuple[float, int]] = {}  # kind -> (largest VmHWM seen, pid)
        self.maxrss = 0.0  # wait4's ru_maxrss of the measured command: its largest process

    def ingestd(self, *args: str) -> None:
        with (self.work / "import.log").open("ab") as log:
            subprocess.run([*self.cmd, *args], env=self.env, stdout=log, stderr=log, check=True)

    def sample(self, root: int) -> list[Proc]:
        procs = tree(root)
        for p in procs:
            if p.hwm > self.peak.get(p.kind, (0.0, 0))[0]:
                self.peak[p.kind] = (p.hwm, p.pid)
        return procs

    def row(self, label: str, secs: float, since: str, cpu: float, others: float, procs: list[Proc]) -> str:
        """One line of the table; the polls are the ``fetch_log`` rows since ``since``."""
        with contextlib.closing(sqlite3.connect(self.db_path, timeout=60)) as db:
            q = "SELECT outcome, COUNT(*) FROM fetch_log WHERE at >= ? GROUP BY outcome"
            polls: dict[str, int] = dict(db.execute(q, (since,)).fetchall())
            stories = db.execute("SELECT COUNT(*) FROM articles").fetchone()[0]
        m, w, total = largest(procs, "main"), largest(procs, "worker"), sum(polls.values())
        new, not_modified = polls.get("new", 0), polls.get("not_modified", 0)
        return (
            f"{label:>5} {secs:7.1f} {total:6d} {new:5d} {not_modified:5d} {total - new - not_modified:4d}"
            f" {stories:8d} {self.expect:8d} {cpu:7.1f} {others:7.1f} | {m.rss:6.1f} {m.hwm:6.1f}"
            f" | {w.rss:6.1f} {w.hwm:6.1f} {sum(p.kind == 'worker' for p in procs):2d}"
            f" | {sum(p.rss for p in procs):7.1f} {sum(p.pss for p in procs):7.1f}"
        )

    def summary(self) -> float:
        """Print the peaks per kind of process; return the largest (VmHWM or wait4's ru_maxrss)."""
        kinds = ", ".join(f"{k} {mb:.1f} MB (pid {pid})" for k, (mb, pid) in sorted(self.peak.items()))
        print(f"peak RSS (VmHWM) per kind of process: {kinds}")
        print(f"peak RSS of the largest process (wait4 ru_maxrss, whole run): {self.maxrss:.1f} MB")
        return max([self.maxrss, *(mb for mb, _ in self.peak.values())])

    def cold(self) -> float:
        with serve(self.farm, self.port, self.args.shared, self.work, self.args.server) as (kind, pid):
            print(f"server: {kind} on 127.0.0.1:{self.port}; work dir {self.work}", flush=True)
            meter, procs = Meter(pid), list[Proc]()
            child = Child([*self.cmd, "-q", "poll", "--all"], self.env, self.work / "poll.log")
            try:
                while not child.done():
                    now = self.sample(child.pid)  # the row shows the last sample with workers in it
                    procs = now if any(p.kind == "worker" for p in now) or not procs else procs
                    time.sleep(self.args.sample)
            finally:
                child.stop()
            others = meter.others(child.cpu)
        if child.code != 0:
            raise SystemExit(f"soak: ingestd poll exited {child.code}:\n{child.tail()}")
        self.maxrss = child.maxrss
        print(
            f"\ningestd poll --all, cold, {self.args.feeds} feeds: {child.wall:.1f} s wall,"
            f" {child.cpu:.1f} s CPU, peak RSS of the largest process {child.maxrss:.1f} MB;"
            f" others' CPU {others:.1f} s\n{HEADER}"
        )
        print(self.row("cold", child.wall, "0001-01-01", child.cpu, others, procs))
        return self.summary()

    def cycles(self) -> tuple[float, float]:
        args, ends = self.args, list[list[Proc]]()
        db = sqlite3.connect(self.db_path, timeout=60, isolation_level=None)
        with serve(self.farm, self.port, args.shared, self.work, args.server) as (kind, server_pid):
            print(
                f"server: {kind} on 127.0.0.1:{self.port}; trigger {args.trigger}, tick {args.tick} s;"
                f" work dir {self.work}\n{HEADER}",
                flush=True,
            )
            start, meter, cpu0 = datetime.now(UTC), Meter(server_pid), 0.0
            daemon = Child([*self.cmd, "run"], self.env, self.work / "daemon.log")
            try:
                for cycle in range(1, args.cycles + 1):
                    if cycle > 1:
                        mutate = ("mutate", "--dir", str(self.farm), "--fraction", str(args.fraction))
                        self.expect = farm_json(args.shared, *mutate)["unique_entries"]
                        start, meter = datetime.now(UTC), Meter(server_pid)
                        cpu0 = sum(p.cpu for p in tree(daemon.pid))
                        if args.trigger == "db":
                            due = "UPDATE feeds SET next_poll_at = ? WHERE status IN ('active', 'failing')"
                            db.execute(due, (utc(start),))
                    self.wait(db, daemon, start, cycle)
                    secs = db.execute(
                        "SELECT MAX(julianday(at) * 86400.0 + duration) - julianday(?) * 86400.0"
                        " FROM fetch_log WHERE at >= ?",
                        (utc(start), utc(start)),
                    ).fetchone()[0]
                    scrape(self.metrics_port)
                    ends.append(self.sample(daemon.pid))
                    cpu = sum(p.cpu for p in ends[-1]) - cpu0
                    line = self.row(str(cycle), secs or 0.0, utc(start), cpu, meter.others(cpu), ends[-1])
                    print(line, flush=True)
            finally:
                daemon.stop()  # SIGTERM: the daemon drains and exits 0
                self.maxrss = daemon.maxrss
                db.close()
        errors = daemon.log.read_text(errors="replace").count(" ERROR ")
        print(f"daemon: exit {daemon.code} on SIGTERM, {errors} ERROR lines in its log")
        if daemon.code != 0:
            raise SystemExit(f"soak: ingestd run exited {daemon.code}:\n{daemon.tail()}")
        return self.growth(ends)

    def wait(self, db: sqlite3.Connection, daemon: Child, start: datetime, cycle: int) -> None:
        """Sample until every active or failing feed was polled since ``start``."""
        total = left = db.execute(LIVE).fetchone()[0]
        began = note = progress = time.monotonic()
        while True:
            if daemon.done():
                raise SystemExit(f"soak: ingestd run exited {daemon.code} in cycle {cycle}:\n{daemon.tail()}")
            self.sample(daemon.pid)
            before, now = left, time.monotonic()
            q = f"{LIVE} AND (last_polled_at IS NULL OR last_polled_at < ?)"
            left = db.execute(q, (utc(start),)).fetchone()[0]
            if left == 0:
                return
            progress = now if left < before else progress
            if now - progress > self.args.stall:
                errors = daemon.log.read_text(errors="replace").count(" ERROR ")
                raise SystemExit(
                    f"soak: cycle {cycle}: no poll completed for {now - progress:.0f} s, {left} feeds left;"
                    f" {errors} ERROR lines in {daemon.log}:\n{daemon.tail()}"
                )
            if now - note > 30:
                note = now
                print(
                    f"  ... cycle {cycle}: {total - left}/{total} polled, {now - began:.0f} s",
                    file=sys.stderr,
                )
            time.sleep(self.args.sample)

    def growth(self, ends: list[list[Proc]]) -> tuple[float, float]:
        """(main, largest worker) RSS growth from the end of cycle 2 to the end of the last cycle."""
        if len(ends) < 3:
            print("growth: n/a (needs --cycles 3 or more: cycle 1 is the cold one)")
            return 0.0, 0.0
        main, worker = (largest(ends[-1], k).rss - largest(ends[1], k).rss for k in ("main", "worker"))
        print(
            f"growth of RSS, end of cycle 2 -> end of cycle {len(ends)}:"
            f" main {main:+.1f} MB, largest worker {worker:+.1f} MB"
        )
        return main, worker


def prepare(args: argparse.Namespace, work: Path) -> tuple[Path, int, int]:
    """The farm to serve (generated or copied into ``work``), its port and the stories it holds."""
    farm = work / "farm"
    if farm.exists():
        raise SystemExit(f"soak: {farm} exists; give an empty --workdir")
    if args.farm:
        shutil.copytree(args.farm, farm)
        opml = (farm / "farm.opml").read_text()
        old = re.search(r'xmlUrl="http://([^:/"]+):(\d+)/', opml)
        if old is None:
            raise SystemExit(f"soak: no http://HOST:PORT/ feed in {args.farm}/farm.opml")
        port = free_port(args.port or int(old[2]))
        (farm / "farm.opml").write_text(opml.replace(f"//{old[1]}:{old[2]}/", f"//127.0.0.1:{port}/"))
        info = farm_json(args.shared, "stats", "--dir", str(farm))
        args.feeds = info["feeds"]
    else:
        port, started = free_port(args.port or 18480), time.perf_counter()
        generate = ("generate", "--feeds", str(args.feeds), "--seed", str(args.seed), "--port", str(port))
        info = farm_json(args.shared, *generate, "--out", str(farm), "--host", "127.0.0.1")
        print(
            f"farm: {args.feeds} feeds, seed {args.seed}, generated in {time.perf_counter() - started:.0f} s"
        )
    return farm, port, int(info["unique_entries"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--feeds", type=int, default=500, help="feeds in the generated farm")
    add("--cycles", type=int, default=10, help="poll cycles of `ingestd run`")
    add("--cold-only", action="store_true", help="one cold `ingestd poll --all` instead")
    add("--seed", type=int, default=1)
    add("--fraction", type=float, default=0.1, help="share of feeds mutated between cycles")
    add("--farm", type=Path, help="copy this farm (made by farm.py generate) instead")
    add("--shared", type=Path, default=ROOT.parent / "shared", help="the ../shared checkout")
    add("--port", type=int, default=0, help="farm port (default: 18480, else a free one)")
    add("--server", choices=("auto", "nginx", "python"), default="auto")
    add("--trigger", choices=("db", "interval"), default="db", help="how a cycle starts")
    add("--tick", type=float, default=0.2, help="daemon.tick in seconds")
    add("--sample", type=float, default=0.5, help="seconds between /proc samples")
    add("--stall", type=float, default=300, help="give up after S s without a completed poll")
    add("--max-rss-mb", type=float, default=120.0)
    add("--max-growth-mb", type=float, default=10.0)
    add("--workdir", type=Path, help="work here and keep it (default: a temporary dir)")
    add("--keep", action="store_true", help="keep the temporary work dir")
    args = parser.parse_args()
    if not (args.shared / "bench" / "farm.py").is_file():
        parser.error(f"no farm.py under {args.shared}/bench: pass --shared PATH")
    if args.cycles < 1 or args.feeds < 1:
        parser.error("--cycles and --feeds must be at least 1")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks: daemon, server
    work = args.workdir or Path(tempfile.mkdtemp(prefix="ingestd-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        farm, port, expect = prepare(args, work)
        soak = Soak(args, work, farm, port, expect)
        soak.ingestd("feeds", "import", str(farm / "farm.opml"))
        grown = (0.0, 0.0) if args.cold_only else soak.cycles()
        peak = soak.cold() if args.cold_only else soak.summary()
    finally:
        if not (args.keep or args.workdir):
            shutil.rmtree(work, ignore_errors=True)
    failed = [f"peak RSS {peak:.1f} MB > {args.max_rss_mb:g} MB"] if peak > args.max_rss_mb else []
    failed += [f"RSS grew {g:+.1f} MB > {args.max_growth_mb:g} MB" for g in grown if g > args.max_growth_mb]
    print("FAIL: " + "; ".join(failed) if failed else f"PASS: peak {peak:.1f} MB ≤ {args.max_rss_mb:g} MB")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
