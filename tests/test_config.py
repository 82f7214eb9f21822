from __future__ import annotations

from pathlib import Path

import pytest

from ingestd.config import load_settings, parse_duration, settings_table
from ingestd.exceptions import ConfigError


def test_defaults_follow_the_contract() -> None:
    s = load_settings(None, environ={"HOME": "/home/u"})
    assert s.fetch.concurrency == 16
    assert s.fetch.timeout == 30
    assert s.fetch.max_body_bytes == 15_000_000
    assert s.fetch.allow_private_networks is False
    assert s.fetch.allowed_hosts == ()
    assert s.schedule.default_interval == 1800
    assert s.schedule.min_interval == 300
    assert s.schedule.max_interval == 86400
    assert s.daemon.tick == 10
    assert s.daemon.metrics_listen == ""
    assert s.database_url == "sqlite:////home/u/.local/share/ingestd/ingestd.db"


def test_default_database_follows_xdg_and_systemd() -> None:
    assert (
        load_settings(None, environ={"XDG_DATA_HOME": "/x"}).database_url == "sqlite:////x/ingestd/ingestd.db"
    )
    assert (
        load_settings(None, environ={"STATE_DIRECTORY": "/var/lib/ingestd"}).database_url
        == "sqlite:////var/lib/ingestd/ingestd.db"
    )


def test_precedence_file_env_flags(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        '[database]\nurl = "sqlite:///file.db"\n[fetch]\nconcurrency = 4\ntimeout = "1m"\n'
        'allowed_hosts = ["127.0.0.1:8765", "10.0.0.0/8"]\n[schedule]\ndefault_interval = "2h"\n'
    )
    s = load_settings(cfg, environ={"INGESTD_FETCH_CONCURRENCY": "8"})
    assert s.fetch.concurrency == 8
    assert s.fetch.timeout == 60
    assert s.fetch.allowed_hosts == ("127.0.0.1:8765", "10.0.0.0/8")
    assert s.schedule.default_interval == 7200
    assert s.database_url == "sqlite:///file.db"
    s = load_settings(cfg, environ={"INGESTD_DB": "sqlite:///env.db"})
    assert s.database_url == "sqlite:///env.db"
    s = load_settings(cfg, environ={"INGESTD_DATABASE_URL": "sqlite:///env2.db"})
    assert s.database_url == "sqlite:///env2.db"
    s = load_settings(
        cfg, environ={"INGESTD_DB": "sqlite:///env.db"}, overrides={"database.url": "sqlite:///f.db"}
    )
    assert s.database_url == "sqlite:///f.db"


def test_config_file_from_environment(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[daemon]\ntick = 5\n")
    assert load_settings(None, environ={"INGESTD_CONFIG": str(cfg)}).daemon.tick == 5


@pytest.mark.parametrize(
    ("toml", "needle"),
    [
        ("[fetch]\nconcurency = 3\n", "fetch.concurency"),
        ("[fetsh]\nconcurrency = 3\n", "[fetsh]"),
        ("[fetch]\nconcurrency = 'many'\n", "fetch.concurrency"),
        ("[fetch]\nconcurrency = 0\n", "fetch.concurrency"),
        ("[fetch]\ntimeout = 'soon'\n", "fetch.timeout"),
        ("[fetch]\nallow_private_networks = 'maybe'\n", "fetch.allow_private_networks"),
        ("[fetch]\nallowed_hosts = [1, 2]\n", "fetch.allowed_hosts"),
        ("[schedule]\nmin_interval = '2d'\nmax_interval = '1d'\n", "min_interval"),
        ("not toml [", "invalid TOML"),
    ],
)
def test_bad_configuration_names_the_key(tmp_path: Path, toml: str, needle: str) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(toml)
    with pytest.raises(ConfigError, match=None) as info:
        load_settings(cfg, environ={})
    assert needle in str(info.value)


def test_unknown_environment_variable_is_an_error() -> None:
    with pytest.raises(ConfigError, match="INGESTD_FETCH_TIMOUT"):
        load_settings(None, environ={"INGESTD_FETCH_TIMOUT": "3"})


def test_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.toml", environ={})


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(90, 90), ("90", 90), ("90s", 90), ("30m", 1800), ("24h", 86400), ("1d", 86400), ("1.5h", 5400)],
)
def test_durations(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


def test_every_setting_has_a_doc() -> None:
    rows = settings_table()
    assert len(rows) >= 10
    assert all(doc for _s, _k, _d, doc in rows)


def test_plain_numbers(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[schedule]\njitter = 0\n")
    assert load_settings(cfg, environ={}).schedule.jitter == 0.0
    cfg.write_text("[schedule]\njitter = 0.25\n")
    assert load_settings(cfg, environ={}).schedule.jitter == 0.25
    assert load_settings(None, environ={"INGESTD_SCHEDULE_JITTER": "0.5"}).schedule.jitter == 0.5
    cfg.write_text("[schedule]\njitter = 'lots'\n")
    with pytest.raises(ConfigError, match=r"schedule\.jitter"):
        load_settings(cfg, environ={})


def test_foreign_ingestd_variables_are_ignored() -> None:
    s = load_settings(None, environ={"INGESTD_CMD": "/venv/bin/ingestd", "INGESTD_COUNT_SQL": "SELECT 1"})
    assert s.fetch.concurrency == 16
