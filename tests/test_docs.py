"""Docs are tested: every command, option group and setting appears in the README."""

from __future__ import annotations

from pathlib import Path

import click

from ingestd.cli import main
from ingestd.config import settings_table

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def _commands(group: click.Group, prefix: str = "") -> list[str]:
    names = []
    for name, cmd in group.commands.items():
        full = f"{prefix}{name}"
        if isinstance(cmd, click.Group):
            names += _commands(cmd, full + " ")
        else:
            names.append(full)
    return names


def test_every_command_is_in_the_readme() -> None:
    commands = _commands(main)
    assert "feeds add" in commands
    missing = [c for c in commands if f"ingestd {c}" not in README]
    assert not missing, f"commands missing from README.md: {missing}"


def test_every_command_has_help_with_an_example() -> None:
    def walk(group: click.Group) -> None:
        for name, cmd in group.commands.items():
            if isinstance(cmd, click.Group):
                walk(cmd)
            else:
                assert cmd.help, f"{name} has no help"
                assert "Example" in cmd.help, f"{name} has no example in its help"

    walk(main)


def test_every_setting_is_in_the_readme() -> None:
    missing = [f"{s}.{k}" for s, k, _d, _doc in settings_table() if f"`{s}.{k}`" not in README]
    assert not missing, f"settings missing from README.md: {missing}"


def test_readme_starts_with_the_two_setup_commands() -> None:
    head = README.split("\n## ", 1)[0]
    assert "make run" in head
    assert "make test" in head
