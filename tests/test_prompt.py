"""PromptBuilder: persona, profile, framed recall and the rolling buffer of recent turns."""

from __future__ import annotations

from pathlib import Path

import pytest

from convers.contracts.llm import ChatMessage
from convers.engine.prompt import PersonaError, PromptBuilder, load_persona
from convers.memory.recall import RECALL_HEADER
from convers.memory.rolling import recent_turns
from tests.doubles import hit


def test_messages_are_system_then_recent_turns_then_the_new_words() -> None:
    history = [ChatMessage("user", "hi"), ChatMessage("assistant", "hello")]
    messages = PromptBuilder(persona="You are Juniper.").build("how are you?", history)
    assert [m.role for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[0].content == "You are Juniper."
    assert messages[-1].content == "how are you?"


def test_profile_and_recall_are_framed_as_background() -> None:
    messages = PromptBuilder(persona="P").build(
        "what was my dog's name?", profile="name: Sam", recalled=[hit("My dog is called Rex.", speaker="Sam")]
    )
    system = messages[0].content
    assert "name: Sam" in system
    assert RECALL_HEADER in system and "do not quote it" in system
    assert "they said: My dog is called Rex." in system
    assert system.index("name: Sam") < system.index(RECALL_HEADER)


def test_no_recall_section_without_hits() -> None:
    system = PromptBuilder(persona="P").build("hi", recalled=[])[0].content
    assert RECALL_HEADER not in system and system == "P"


@pytest.mark.parametrize(
    ("budget", "kept"),
    [
        (10_000, ["u1 " * 10, "a1 " * 10, "u2 " * 10, "a2 " * 10]),
        (65, ["u2 " * 10, "a2 " * 10]),
        # The budget ends inside an answer: its question went, so the orphaned answer goes too.
        (95, ["u2 " * 10, "a2 " * 10]),
        (0, []),
    ],
)
def test_rolling_buffer_keeps_the_newest_whole_turns(budget: int, kept: list[str]) -> None:
    history = [
        ChatMessage("user", "u1 " * 10),
        ChatMessage("assistant", "a1 " * 10),
        ChatMessage("user", "u2 " * 10),
        ChatMessage("assistant", "a2 " * 10),
    ]
    assert [m.content for m in recent_turns(history, budget)] == kept


def test_persona_file_is_read_with_the_name_filled_in(tmp_path: Path) -> None:
    path = tmp_path / "persona.txt"
    path.write_text("You are {name}, a gardener.\n")
    assert load_persona(path, "Robin") == "You are Robin, a gardener."
    assert "You are Robin" in load_persona(None, "Robin")


def test_missing_persona_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PersonaError, match="agent.persona_file"):
        load_persona(tmp_path / "missing.txt", "Robin")
