"""A real HTTP server on 127.0.0.1 serving feed files with ETag and Last-Modified.

It records every request (path, whether it was conditional, status) so tests
can check that a second poll is conditional and answered 304.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

CONTENT_TYPES = {
    ".xml": "application/xml",
    ".rss": "application/rss+xml",
    ".atom": "application/atom+xml",
    ".json": "application/feed+json",
    ".rdf": "application/rdf+xml",
    ".html": "text/html; charset=utf-8",
}


@dataclass
class Hit:
    path: str
    conditional: bool
    status: int
    client_port: int = 0  # one per TCP connection: keep-alive reuse shows as repeats


@dataclass
class FeedServer:
    """Serves ``files`` (path -> bytes, mutable while running)."""

    files: dict[str, bytes] = field(default_factory=dict)
    hits: list[Hit] = field(default_factory=list)
    mtime: float = 1_700_000_000.0
    port: int = 0
    handlers: dict[str, Callable[[BaseHTTPRequestHandler], None]] = field(default_factory=dict)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}"

    def add_dir(self, directory: Path, prefix: str = "", pattern: str = "*") -> list[str]:
        names = []
        for p in sorted(directory.glob(pattern)):
            if p.is_file():
                self.files[prefix + p.name] = p.read_bytes()
                names.append(prefix + p.name)
        return names


def _handler(server: FeedServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0].lstrip("/")
            if path in server.handlers:
                server.handlers[path](self)
                return
            body = server.files.get(path)
            conditional = bool(self.headers.get("If-None-Match") or self.headers.get("If-Modified-Since"))
            if body is None:
                server.hits.append(Hit(path, conditional, 404))
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            etag = '"' + hashlib.sha1(body).hexdigest()[:16] + '"'  # noqa: S324 - a cache validator
            last_modified = formatdate(server.mtime, usegmt=True)
            if self.headers.get("If-None-Match") == etag or (
                not self.headers.get("If-None-Match")
                and self.headers.get("If-Modified-Since") == last_modified
            ):
                server.hits.append(Hit(path, conditional, 304, self.client_address[1]))
                self.send_response(304)
                self.send_header("ETag", etag)
                self.end_headers()
                return
            server.hits.append(Hit(path, conditional, 200, self.client_address[1]))
            self.send_response(200)
            suffix = "." + path.rsplit(".", 1)[-1] if "." in path else ""
            self.send_header("Content-Type", CONTENT_TYPES.get(suffix, "application/octet-stream"))
            self.send_header("Content-Length", str(len(body)))
            self.send_header("ETag", etag)
            self.send_header("Last-Modified", last_modified)
            self.end_headers()
            self.wfile.write(body)

    return Handler


@contextmanager
def serve(server: FeedServer | None = None) -> Iterator[FeedServer]:
    server = server or FeedServer()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(server))
    httpd.daemon_threads = True
    server.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        httpd.shutdown()
        httpd.server_close()
