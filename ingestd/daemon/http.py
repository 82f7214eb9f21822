"""/healthz and /metrics on ``daemon.metrics_listen``: a tiny asyncio HTTP/1.0 server.

It runs on the daemon's event loop, so /healthz answering at all proves the
loop is not stuck, and reading the metrics needs no locks. It binds exactly
the address it is given and answers GET and HEAD on two paths, nothing else.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from ingestd.daemon.metrics import CONTENT_TYPE, Metrics
from ingestd.exceptions import ConfigError

log = logging.getLogger("ingestd.http")

_REASONS = {
    200: "OK",
    404: "Not Found",
    405: "Method Not Allowed",
    400: "Bad Request",
    503: "Service Unavailable",
}


def parse_listen(value: str) -> tuple[str, int]:
    """``"127.0.0.1:9464"``, ``"[::1]:9464"`` or ``"localhost:9464"`` -> (host, port)."""
    host, sep, port = value.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"daemon.metrics_listen: expected host:port such as 127.0.0.1:9464, got {value!r}")
    if host.startswith("["):
        if not host.endswith("]"):
            raise ConfigError(f"daemon.metrics_listen: unbalanced brackets in {value!r}")
        host = host[1:-1]
    return host, int(port)


class MetricsServer:
    """Serves ``metrics`` and ``healthy()``; start() binds, close() unbinds."""

    def __init__(self, listen: str, metrics: Metrics, healthy: Callable[[], bool]) -> None:
        self.listen = listen
        self.host, self.port = parse_listen(listen)
        self.metrics = metrics
        self.healthy = healthy
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(self._handle, self.host, self.port, reuse_address=True)
        except OSError as e:
            raise ConfigError(f"daemon.metrics_listen: cannot listen on {self.listen}: {e.strerror}") from e
        log.info("serving /healthz and /metrics on http://%s/", self.listen)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        parts = head.split(b"\r\n", 1)[0].decode("latin-1").split()
        method, path = (parts[0], parts[1].split("?", 1)[0]) if len(parts) == 3 else ("", "")
        status, ctype, body = self._respond(method, path)
        header = (
            f"HTTP/1.0 {status} {_REASONS[status]}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n"
        )
        try:
            writer.write(header.encode() + (b"" if method == "HEAD" else body))
            await asyncio.wait_for(writer.drain(), timeout=10)
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    def _respond(self, method: str, path: str) -> tuple[int, str, bytes]:
        text = "text/plain; charset=utf-8"
        if not method:
            return 400, text, b"bad request\n"
        if path not in ("/healthz", "/metrics"):
            return 404, text, b"not found: try /healthz or /metrics\n"
        if method not in ("GET", "HEAD"):
            return 405, text, b"GET or HEAD only\n"
        if path == "/healthz":
            ok = self.healthy()
            return (
                (200, text, b"ok\n")
                if ok
                else (503, text, b"unhealthy: tick stalled, database unavailable or workers unusable\n")
            )
        return 200, CONTENT_TYPE, self.metrics.render()
