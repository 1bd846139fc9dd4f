"""The `convers` command lists every subcommand the README promises."""

from __future__ import annotations

from click.testing import CliRunner

from convers.cli import main

PROMISED = {"serve", "chat", "talk", "doctor", "config", "models", "memory", "profile", "bench", "token"}


def test_every_promised_command_is_registered() -> None:
    assert PROMISED <= set(main.commands)


def test_help_runs_and_names_the_commands() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for name in PROMISED:
        assert f"  {name}" in result.output
