"""The ingestd error tree.

Every error ingestd raises on purpose derives from one root, so callers can
catch ``IngestdError`` and be sure that anything else is a bug::

    IngestdError
    ├── ConfigError            bad configuration: unknown key, bad value
    ├── FeedError(url)         one feed failed; recorded on the feed, others go on
    │   ├── FetchError         network, timeout, too large, SSRF refusal
    │   │   └── HTTPStatusError(status, retry_after)
    │   └── ParseError         not a feed, malformed beyond repair
    ├── CleanError             one entry could not be cleaned within its limits
    ├── StorageError           the database failed; the tick is skipped
    └── WorkerError            worker processes cannot run at all; no feed is blamed

Third-party exceptions are converted once, at the stage edge, with
``raise ... from e``. "Not modified" and "duplicate" are results, not errors.
"""

from __future__ import annotations


class IngestdError(Exception):
    """Root of every error ingestd raises on purpose."""


class ConfigError(IngestdError):
    """The configuration is invalid; the message names the key."""


class FeedError(IngestdError):
    """A failure that belongs to one feed."""

    def __init__(self, message: str, url: str = "") -> None:
        super().__init__(message)
        self.url = url


class FetchError(FeedError):
    """The feed could not be fetched (network, deadline, size, guard)."""


class HTTPStatusError(FetchError):
    """The server answered with a status that is not a feed."""

    def __init__(
        self,
        message: str,
        url: str = "",
        *,
        status: int,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, url)
        self.status = status
        self.retry_after = retry_after


class ParseError(FeedError):
    """The document is not a feed we can read."""


class CleanError(IngestdError):
    """An entry's HTML could not be cleaned within the limits."""


class StorageError(IngestdError):
    """The database failed or is unreachable."""


class WorkerError(IngestdError):
    """Worker processes cannot start or run any task: the machine's fault, not a feed's."""
