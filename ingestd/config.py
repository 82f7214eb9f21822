"""Settings: defaults < TOML file < ``INGESTD_*`` environment < command-line flags.

``load_settings`` is pure (it reads the file it is given and the mapping it is
given) and returns a frozen ``Settings``. Only the CLI and the daemon read
settings; the pipeline gets plain arguments.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ingestd import __version__
from ingestd.exceptions import ConfigError

SYSTEM_CONFIG = Path("/etc/ingestd/ingestd.toml")
DEFAULT_USER_AGENT = f"ingestd/{__version__} (+https://github.com/ingestd/ingestd)"

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def parse_duration(value: object, key: str = "duration") -> float:
    """Seconds from ``90``, ``"90s"``, ``"30m"``, ``"24h"`` or ``"1d"``."""
    if isinstance(value, bool):
        raise ConfigError(f"{key}: expected a duration such as '30m', got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ConfigError(f"{key}: expected a duration such as '30m', got {value!r}")
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds < 0:
        raise ConfigError(f"{key}: must not be negative, got {value!r}")
    return seconds


def _meta(doc: str, *, duration: bool = False, minimum: float | None = None) -> dict[str, Any]:
    return {"doc": doc, "duration": duration, "minimum": minimum}


def default_database_url(environ: Mapping[str, str]) -> str:
    """systemd's StateDirectory, else the XDG data directory."""
    state = environ.get("STATE_DIRECTORY")
    if state:
        base = Path(state.split(":")[0])
    else:
        xdg = environ.get("XDG_DATA_HOME") or str(Path(environ.get("HOME", "~")) / ".local/share")
        base = Path(xdg).expanduser() / "ingestd"
    return f"sqlite:///{base / 'ingestd.db'}"


@dataclass(frozen=True)
class DatabaseSettings:
    url: str = field(default="", metadata=_meta("SQLAlchemy URL; empty means the default SQLite file"))


@dataclass(frozen=True)
class FetchSettings:
    concurrency: int = field(default=16, metadata=_meta("feeds fetched at once", minimum=1))
    timeout: float = field(
        default=30.0,
        metadata=_meta("total deadline per request, redirects and body included", duration=True, minimum=0.1),
    )
    connect_timeout: float = field(
        default=10.0, metadata=_meta("deadline to open a connection", duration=True, minimum=0.1)
    )
    max_body_bytes: int = field(
        default=15_000_000, metadata=_meta("largest body accepted, counted after decompression", minimum=1024)
    )
    max_redirects: int = field(default=5, metadata=_meta("redirect hops followed per request", minimum=0))
    max_entries: int = field(
        default=500, metadata=_meta("entries processed per poll (newest first)", minimum=1)
    )
    per_host_concurrency: int = field(
        default=2, metadata=_meta("requests in flight to one host (Substack counts as one)", minimum=1)
    )
    per_host_delay: float = field(
        default=0.0, metadata=_meta("minimum spacing between requests to one host", duration=True)
    )
    user_agent: str = field(default=DEFAULT_USER_AGENT, metadata=_meta("User-Agent header sent"))
    allow_private_networks: bool = field(
        default=False, metadata=_meta("SSRF guard off: allow loopback/private/link-local targets")
    )
    allowed_hosts: tuple[str, ...] = field(
        default=(), metadata=_meta("guard exemptions: host, host:port or CIDR")
    )


@dataclass(frozen=True)
class ScheduleSettings:
    default_interval: float = field(
        default=1800.0, metadata=_meta("interval between polls of a feed", duration=True, minimum=1)
    )
    min_interval: float = field(
        default=300.0, metadata=_meta("shortest interval, whatever the feed says", duration=True, minimum=1)
    )
    max_interval: float = field(
        default=86400.0, metadata=_meta("longest interval, backoff included", duration=True, minimum=1)
    )
    jitter: float = field(
        default=0.1, metadata=_meta("fraction of the interval added at random, to spread polls", minimum=0)
    )


@dataclass(frozen=True)
class DaemonSettings:
    tick: float = field(
        default=10.0, metadata=_meta("how often due feeds are claimed", duration=True, minimum=0.05)
    )
    metrics_listen: str = field(
        default="", metadata=_meta("host:port for /healthz and /metrics; empty disables it")
    )
    grace: float = field(
        default=20.0, metadata=_meta("time given to in-flight polls on shutdown", duration=True)
    )
    lease: float = field(
        default=300.0, metadata=_meta("how long a claimed feed stays claimed", duration=True, minimum=1)
    )
    retention_days: int = field(
        default=0, metadata=_meta("delete articles older than this many days; 0 keeps all", minimum=0)
    )
    retention_per_feed: int = field(
        default=0, metadata=_meta("keep at most this many newest articles per feed; 0 keeps all", minimum=0)
    )


@dataclass(frozen=True)
class Settings:
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    fetch: FetchSettings = field(default_factory=FetchSettings)
    schedule: ScheduleSettings = field(default_factory=ScheduleSettings)
    daemon: DaemonSettings = field(default_factory=DaemonSettings)
    config_path: str | None = None

    @property
    def database_url(self) -> str:
        return self.database.url


SECTIONS: dict[str, type[Any]] = {
    "database": DatabaseSettings,
    "fetch": FetchSettings,
    "schedule": ScheduleSettings,
    "daemon": DaemonSettings,
}


def settings_table() -> list[tuple[str, str, object, str]]:
    """(section, key, default, doc) of every setting, for docs and their test."""
    rows = []
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            rows.append((section, f.name, default, f.metadata["doc"]))
    return rows


def _convert(section: str, f: dataclasses.Field[Any], raw: object) -> object:
    key = f"{section}.{f.name}"
    meta = f.metadata
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    value: object
    if meta["duration"]:
        value = parse_duration(raw, key)
    elif kind == "bool":
        if isinstance(raw, bool):
            value = raw
        elif isinstance(raw, str) and raw.strip().lower() in {
            "1",
            "true",
            "yes",
            "on",
            "0",
            "false",
            "no",
            "off",
        }:
            value = raw.strip().lower() in {"1", "true", "yes", "on"}
        else:
            raise ConfigError(f"{key}: expected true or false, got {raw!r}")
    elif kind == "float":
        if isinstance(raw, bool) or not isinstance(raw, int | float | str):
            raise ConfigError(f"{key}: expected a number, got {raw!r}")
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{key}: expected a number, got {raw!r}") from None
    elif kind == "int":
        if isinstance(raw, bool):
            raise ConfigError(f"{key}: expected an integer, got {raw!r}")
        try:
            value = int(str(raw).replace("_", "")) if not isinstance(raw, int) else raw
        except ValueError:
            raise ConfigError(f"{key}: expected an integer, got {raw!r}") from None
    elif kind.startswith("tuple"):
        if isinstance(raw, str):
            value = tuple(part.strip() for part in raw.split(",") if part.strip())
        elif isinstance(raw, list | tuple) and all(isinstance(v, str) for v in raw):
            value = tuple(raw)
        else:
            raise ConfigError(f"{key}: expected a list of strings, got {raw!r}")
    else:
        if not isinstance(raw, str):
            raise ConfigError(f"{key}: expected a string, got {raw!r}")
        value = raw
    minimum = meta["minimum"]
    if minimum is not None and isinstance(value, int | float) and value < minimum:
        raise ConfigError(f"{key}: must be at least {minimum}, got {raw!r}")
    return value


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"configuration file not found: {path}") from None
    except OSError as e:
        raise ConfigError(f"cannot read configuration file {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None


def load_settings(
    path: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
) -> Settings:
    """Build the settings from a TOML file, the environment and flag overrides.

    ``overrides`` maps ``"section.key"`` to a value (the CLI's flags). An
    unknown key or a bad value anywhere raises ``ConfigError`` naming it.
    """
    environ = dict(os.environ if environ is None else environ)
    if path is None:
        path = environ.get("INGESTD_CONFIG") or (SYSTEM_CONFIG if SYSTEM_CONFIG.exists() else None)
    values: dict[str, dict[str, object]] = {name: {} for name in SECTIONS}
    if path is not None:
        data = _read_toml(Path(path))
        for section, table in data.items():
            if section not in SECTIONS:
                raise ConfigError(f"{path}: unknown section [{section}]")
            if not isinstance(table, dict):
                raise ConfigError(f"{path}: [{section}] must be a table")
            known = {f.name for f in dataclasses.fields(SECTIONS[section])}
            for key, value in table.items():
                if key not in known:
                    raise ConfigError(f"{path}: unknown key {section}.{key}")
                values[section][key] = value

    env_keys = {
        f"INGESTD_{section.upper()}_{f.name.upper()}": (section, f.name)
        for section, cls in SECTIONS.items()
        for f in dataclasses.fields(cls)
    }
    for name, value in environ.items():
        if not name.startswith("INGESTD_") or name in {"INGESTD_CONFIG", "INGESTD_DB"}:
            continue
        if name not in env_keys:
            # A typo in a key of a known section is an error; other INGESTD_* variables
            # (INGESTD_CMD of a benchmark, a wrapper's own settings) are not ours to judge.
            if any(name.startswith(f"INGESTD_{section.upper()}_") for section in SECTIONS):
                raise ConfigError(f"unknown environment variable {name}")
            continue
        section, key = env_keys[name]
        values[section][key] = value
    if environ.get("INGESTD_DB"):
        values["database"]["url"] = environ["INGESTD_DB"]

    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        section, _, key = dotted.partition(".")
        values[section][key] = value

    built: dict[str, Any] = {}
    for section, cls in SECTIONS.items():
        kwargs = {}
        for f in dataclasses.fields(cls):
            if f.name in values[section]:
                kwargs[f.name] = _convert(section, f, values[section][f.name])
        built[section] = cls(**kwargs)
    if not built["database"].url:
        built["database"] = DatabaseSettings(url=default_database_url(environ))
    schedule: ScheduleSettings = built["schedule"]
    if schedule.min_interval > schedule.max_interval:
        raise ConfigError("schedule.min_interval must not exceed schedule.max_interval")
    return Settings(**built, config_path=str(path) if path else None)
