"""Persona layers: core, overlays (from settings or the page's hello), the newest journal entry; and `convers profile prompt`."""

from __future__ import annotations

import os

import pytest
from click.testing import CliRunner

from convers.app.wiring import session_persona
from convers.cli import main
from convers.config import Settings
from convers.engine.reply.persona import (
    JOURNAL_HEADER,
    compose_persona,
    newest_journal_entry,
    overlay_path,
)
from convers.engine.reply.prompt import PersonaError
from convers.engine.reply.tool_calls import TOOL_RESULTS_NOTE
from convers.transports.browser.protocol import Hello, ProtocolError, parse_text


def write(path, text: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_layers_come_in_order_core_overlays_journal(tmp_path) -> None:
    core = write(tmp_path / "core.md", "You are {name}.")
    write(tmp_path / "persona" / "work.md", "Today {name} helps with work.")
    write(tmp_path / "persona" / "french.txt", "Answer in simple French.")
    old = write(tmp_path / "journal" / "2026-11-01-a.md", "# 2026-11-01, session a\n\nOld entry.")
    new = write(tmp_path / "journal" / "2026-11-02-b.md", "# 2026-11-02, session b\n\nThey were tired.")
    write(tmp_path / "journal" / "relationship.md", "The memo.")
    os.utime(old, (1, 1))
    os.utime(new, (2, 2))
    text = compose_persona(core, "Juniper", tmp_path, ["work", "french", "work"], journal=True)
    assert text == (
        "You are Juniper.\n\nToday Juniper helps with work.\n\nAnswer in simple French.\n\n"
        f"{JOURNAL_HEADER}\nThey were tired."
    )
    assert "memo" not in text  # the memo comes with the profile, once
    assert compose_persona(core, "Juniper", tmp_path, [], journal=False) == "You are Juniper."
    assert newest_journal_entry(tmp_path / "nowhere") == ""


@pytest.mark.parametrize("name", ["../secret", "a/b", "", "x" * 41, ".hidden"])
def test_an_overlay_name_is_never_a_path(tmp_path, name) -> None:
    with pytest.raises(PersonaError, match="not allowed"):
        overlay_path(tmp_path, name)


def test_a_missing_overlay_names_the_file_to_create(tmp_path) -> None:
    write(tmp_path / "persona" / "work.md", "w")
    with pytest.raises(PersonaError, match=r"persona/travel\.md.*overlays there: work"):
        overlay_path(tmp_path, "travel")


def test_a_connection_overlay_that_does_not_exist_is_left_out_but_a_settings_one_is_an_error(tmp_path, caplog) -> None:
    write(tmp_path / "persona" / "work.md", "Work mode.")
    settings = Settings(data_dir=tmp_path, agent={"overlays": ["work"]})
    assert session_persona(settings, ("missing",)).endswith("Work mode.")
    assert "persona overlay left out" in caplog.text
    assert session_persona(settings, (), tools=["clock"]).endswith(TOOL_RESULTS_NOTE)
    with pytest.raises(PersonaError):
        session_persona(Settings(data_dir=tmp_path, agent={"overlays": ["gone"]}))


def test_the_hello_may_name_overlays() -> None:
    hello = parse_text('{"type": "hello", "sample_rate": 16000, "overlays": ["work", "fr-basic"]}')
    assert hello == Hello(16000, ("work", "fr-basic"))
    assert parse_text('{"type": "hello", "sample_rate": 16000}') == Hello(16000)
    for bad in ('["../x"]', '"work"', '[1]', '["a","b","c","d","e"]'):
        refused = parse_text('{"type": "hello", "sample_rate": 16000, "overlays": ' + bad + "}")
        assert isinstance(refused, ProtocolError) and refused.code == "bad_hello"


def test_profile_prompt_shows_the_composed_system_prompt(tmp_path) -> None:
    write(tmp_path / "persona" / "work.md", "Work mode.")
    write(tmp_path / "journal" / "relationship.md", "We talk about boats.")
    write(tmp_path / "journal" / "2026-11-02-b.md", "# heading\n\nThey liked the harbour.")
    runner = CliRunner()
    runner.invoke(main, ["--data-dir", str(tmp_path), "profile", "set", "name", "Sam"])
    result = runner.invoke(
        main,
        ["--data-dir", str(tmp_path), "--set", "memory.reflection=true", "profile", "prompt", "--overlay", "work"],
    )
    assert result.exit_code == 0, result.output
    out = result.output
    assert out.index("Work mode.") < out.index("They liked the harbour.") < out.index("Name: Sam") < out.index("We talk about boats.")
    assert TOOL_RESULTS_NOTE in out
    missing = runner.invoke(main, ["--data-dir", str(tmp_path), "--set", "agent.overlays=[\"nope\"]", "profile", "prompt"])
    assert missing.exit_code != 0 and "nope" in missing.output
