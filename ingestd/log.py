"""Logging set-up: text for people, JSON lines for log pipelines.

Loggers are ``ingestd.<stage>``; records about a feed carry ``feed_id`` and
``feed_url`` (pass them in ``extra``), and both formats show them.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

_FEED_KEYS = ("feed_id", "feed_url")


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in _FEED_KEYS:
            value = getattr(record, key, None)
            if value is not None:
                data[key] = value
        if record.exc_info:
            data["traceback"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        feed_id = getattr(record, "feed_id", None)
        if feed_id is not None and f"feed {feed_id}" not in text:
            text += f" [feed {feed_id}]"
        return text


def setup_logging(fmt: str = "text", verbosity: int = 0) -> None:
    """Configure the ``ingestd`` logger tree on stderr; ``verbosity`` -1, 0, 1 or 2."""
    level = {-1: logging.ERROR, 0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger("ingestd")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    if verbosity >= 2:
        logging.getLogger("httpx").setLevel(logging.DEBUG)
