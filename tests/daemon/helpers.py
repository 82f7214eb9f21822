"""Running ``ingestd`` as a real subprocess against a local feed server and a SQLite file."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

RSS = """<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0"><channel><title>{name}</title><link>http://127.0.0.1/{name}/</link><description>d</description>
{items}
</channel></rss>"""
ITEM = (
    "<item><title>Post {n} of {name}</title><link>http://127.0.0.1/{name}/post/{n}</link><guid>{name}-{n}</guid>"
    "<pubDate>Mon, 0{d} Jan 2024 10:00:00 GMT</pubDate><author>a@example.test (Ann)</author>"
    "<description><![CDATA[<p>Paragraph one of post {n} in {name}.</p><p>Paragraph two.</p>]]>"
    "</description></item>"
)


def rss(name: str, n: int) -> bytes:
    """A feed of ``n`` items whose links are its own: two feeds never share a story (they would merge)."""
    return RSS.format(
        name=name, items="\n".join(ITEM.format(n=i, d=1 + i % 9, name=name) for i in range(n))
    ).encode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_env(tmp_path: Path, port: int, daemon: str = "") -> tuple[dict[str, str], Path]:
    """A config allowing only the local feed server, and an environment without the caller's INGESTD_*."""
    db = tmp_path / "ingestd.db"
    config = tmp_path / "ingestd.toml"
    config.write_text(f'[fetch]\nallowed_hosts = ["127.0.0.1:{port}"]\n[daemon]\n{daemon}\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INGESTD_", "NOTIFY_", "WATCHDOG_"))}
    env.update(INGESTD_CONFIG=str(config), INGESTD_DB=f"sqlite:///{db}")
    return env, db


def ingestd(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """A one-shot command that must succeed (its stderr is in the failure message)."""
    done = subprocess.run(
        [sys.executable, "-m", "ingestd", *args], env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"ingestd {' '.join(args)[:100]}: {done.stderr}"
    return done


@contextmanager
def daemon(env: dict[str, str], log: Path, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """``ingestd [args] run`` with stderr to a file (a pipe nobody reads would block it); killed on exit."""
    with log.open("ab") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ingestd", *args, "run"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,  # its own process group: the parse workers die with it, as in a cgroup
        )
    try:
        yield proc
    finally:
        kill_group(proc)


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the daemon and its parse workers at once, as systemd does to a crashed unit's cgroup."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


class NotifySocket:
    """The datagram socket systemd would own: collects what the daemon says."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.messages: list[str] = []

    def drain(self) -> list[str]:
        while True:
            try:
                self.messages += self.sock.recv(65536).decode().splitlines()
            except TimeoutError:
                return self.messages

    def count(self, line: str) -> int:
        return self.drain().count(line)

    def close(self) -> None:
        self.sock.close()


def wait_for(predicate: object, timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def query(db: Path, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(db, timeout=30)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def count(db: Path, sql: str) -> int:
    return int(query(db, sql)[0][0])  # type: ignore[call-overload]
