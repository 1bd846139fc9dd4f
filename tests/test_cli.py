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


def test_bench_reconnects_hands_its_options_to_the_benchmark(monkeypatch) -> None:
    from convers.bench import reconnects

    seen: list[list[str]] = []
    monkeypatch.setattr(reconnects, "main", lambda argv: seen.append(argv) or 1)  # 1: a goal was missed
    result = CliRunner().invoke(
        main, ["bench", "reconnects", "--cycles", "3", "--concurrent", "2", "--serve-set", "llm.timeout_s=5"]
    )
    assert seen == [["--cycles", "3", "--concurrent", "2", "--set", "llm.timeout_s=5"]]
    assert result.exit_code == 1
    refused = CliRunner().invoke(main, ["bench", "reconnects", "--cycles", "0"])
    assert refused.exit_code == 2 and "--cycles" in refused.output
