"""`convers doctor`: what `auto` picks and why, and a verdict per use (serve / talk / chat)."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from convers.cli import main
from convers.cli.doctor import verdicts
from convers.contracts.provider import Availability
from tests.llm_server import Reply, ScriptedLlmServer

OK = Availability(True, "fine")


def selection(**broken: str) -> dict[str, tuple[str, Availability]]:
    kinds = ("vad", "stt", "llm", "tts", "embedder", "memory", "transport", "tools")
    return {kind: (kind + "-x", Availability(False, broken[kind]) if kind in broken else OK) for kind in kinds}


def test_no_sound_card_stops_talk_only() -> None:
    found = verdicts(selection(transport="PortAudio found no input device"))
    assert found["serve"] == [] and found["chat"] == []
    assert found["talk"] == ["transport (transport-x)"]


def test_no_ears_leave_the_text_chat_ready() -> None:
    found = verdicts(selection(stt="no model"))
    assert found["chat"] == []
    assert found["serve"] and found["talk"]


def test_no_language_model_stops_every_use() -> None:
    assert all(verdicts(selection(llm="nothing answers")).values())


def test_memory_that_cannot_open_stops_nothing() -> None:
    # A conversation goes on without memory (with a warning); it is not a reason to refuse to start.
    assert not any(verdicts(selection(memory="locked", embedder="absent")).values())


def test_doctor_says_what_auto_picked_and_which_commands_can_run(tmp_path: Path) -> None:
    with ScriptedLlmServer([Reply(["Hi"])]).running_in_thread() as server:
        result = CliRunner().invoke(
            main,
            ["--data-dir", str(tmp_path), "--set", f"llm.base_url={server.base_url}",
             "--set", "transport.provider=no-such-transport", "doctor", "--use", "serve"],
        )
    assert result.exit_code == 0, result.output
    assert "-> auto picks openai" in result.output
    assert "convers serve: ready" in result.output
    assert "convers chat: ready" in result.output
    assert "convers talk: cannot run: transport (no-such-transport) (see above)" in result.output
    assert "selected provider 'no-such-transport' is not installed" in result.output


def test_doctor_fails_for_the_use_asked_about(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        ["--data-dir", str(tmp_path), "--set", "llm.base_url=http://127.0.0.1:9", "doctor", "--use", "chat"],
    )
    assert result.exit_code == 1
    assert "convers chat: cannot run: llm (openai)" in result.output
