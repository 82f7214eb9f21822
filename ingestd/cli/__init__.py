"""The command line: parse arguments, call the library, print.

Errors are one clear line on stderr (a traceback only with ``-v``); exit
status 1 for an error ingestd understood, 2 for a usage error.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn, TypeVar

import click

from ingestd import __version__
from ingestd.config import Settings, load_settings, parse_duration
from ingestd.exceptions import ConfigError, IngestdError
from ingestd.log import setup_logging
from ingestd.store import FeedInfo, Store, open_store

F = TypeVar("F", bound=Callable[..., Any])


class State:
    def __init__(self, config: str | None, db: str | None, log_format: str, verbosity: int) -> None:
        self.config = config
        self.db = db
        self.log_format = log_format
        self.verbosity = verbosity
        self._settings: Settings | None = None
        self._store: Store | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config, overrides={"database.url": self.db})
        return self._settings

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = open_store(self.settings.database_url)
        return self._store


def fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"ingestd: error: {message}", err=True)
    sys.exit(code)


def _handle_errors(fn: F) -> F:
    """Turn ingestd's errors into one line on stderr; tracebacks only with -v."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except IngestdError as e:
            state = click.get_current_context().find_object(State)
            if state is not None and state.verbosity > 0:
                traceback.print_exc()
            fail(str(e))

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper  # type: ignore[return-value]


def _state() -> State:
    return click.get_current_context().ensure_object(State)


def _find(store: Store, ref: str) -> FeedInfo:
    feed = store.find_feed(ref)
    if feed is None:
        fail(f"no feed with id or URL {ref!r} (see `ingestd feeds list`)")
    return feed


def _fmt_time(dt: datetime | None) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M") if dt else "-"


def _parse_since(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        try:
            return datetime.now(UTC) - timedelta(seconds=parse_duration(value, "--since"))
        except ConfigError:
            fail(f"--since: expected a date (2026-01-31) or a duration (7d), got {value!r}", 2)
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _jsonable(data: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in data.items()}


class _Progress:
    """A progress bar on stderr when it is a terminal (and not -q); nothing at all otherwise."""

    def __init__(self, label: str, verbosity: int) -> None:
        self.label = label
        self.enabled = verbosity >= 0 and sys.stderr.isatty()
        self._bar: Any = None

    def start(self, total: int) -> None:
        if self.enabled and total > 1 and self._bar is None:
            self._bar = click.progressbar(length=total, label=self.label, file=sys.stderr, show_pos=True)
            self._bar.__enter__()

    def advance(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", type=click.Path(dir_okay=False), help="TOML configuration file.")
@click.option("--db", help="Database URL, e.g. sqlite:///ingestd.db or postgresql://user@host/db.")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("-v", "--verbose", count=True, help="More output (-vv for HTTP details); tracebacks on errors.")
@click.option("-q", "--quiet", is_flag=True, help="Only errors.")
@click.version_option(__version__, prog_name="ingestd")
@click.pass_context
def main(
    ctx: click.Context, config: str | None, db: str | None, log_format: str, verbose: int, quiet: bool
) -> None:
    """ingestd keeps a database of clean, deduplicated articles from feeds.

    \b
    Example:
      ingestd feeds add https://example.substack.com/feed
      ingestd poll --all
      ingestd articles list
    """
    verbosity = -1 if quiet else verbose
    ctx.obj = State(config, db, log_format, verbosity)
    setup_logging(log_format, verbosity)


# The commands live in one module per group; importing them registers them on ``main``.
from ingestd.cli import articles, feeds, ops  # noqa: E402,F401  (registration)
