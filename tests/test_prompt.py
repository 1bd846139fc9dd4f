"""PromptBuilder: persona, profile, framed recall and the rolling buffer of recent turns."""

from __future__ import annotations

from pathlib import Path

import pytest

from convers.contracts.llm import ChatMessage
from convers.engine.reply.prompt import (
    PROFILE_CHANGED_NOTE,
    RECALL_FRAMING,
    RECALL_NOTE,
    PersonaError,
    PromptBuilder,
    PromptLog,
    load_persona,
)
from tests.doubles import hit


def test_messages_are_system_then_recent_turns_then_the_new_words() -> None:
    history = [ChatMessage("user", "hi"), ChatMessage("assistant", "hello")]
    messages = PromptBuilder(persona="You are Juniper.").build("how are you?", history)
    assert [m.role for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[0].content.startswith("You are Juniper.\n\n")
    assert [m.content for m in messages[1:]] == ["hi", "hello", "how are you?"]


def test_recall_is_framed_once_in_the_system_message_and_noted_before_the_new_words() -> None:
    messages = PromptBuilder(persona="P").build(
        "what was my dog's name?", profile="name: Sam", recalled=[hit("My dog is called Rex.", speaker="Sam")]
    )
    system, new = messages[0].content, messages[-1].content
    assert "name: Sam" in system and RECALL_FRAMING in system and "do not quote it" in system
    assert system.index("name: Sam") < system.index(RECALL_FRAMING)
    assert "Rex" not in system  # the system message stays the same whatever is recalled
    assert new.startswith(f"[{RECALL_NOTE}\n- ") and "they said: My dog is called Rex.]" in new
    assert new.endswith("\n\nwhat was my dog's name?")


def test_no_note_without_hits() -> None:
    messages = PromptBuilder(persona="P").build("hi", recalled=[])
    assert messages[-1].content == "hi"


def _turn(session: Session, log: PromptLog, text: str, reply: str, recalled=(), profile: str = "") -> list[ChatMessage]:
    """One exchange as the session runs it: build, commit the user's message, then the reply joins."""
    history = session
    messages = log.build(text, history, profile, list(recalled))
    history.append(ChatMessage("user", text))
    log.commit(history[-1], messages, list(recalled), profile)
    history.append(ChatMessage("assistant", reply))
    return messages


Session = list


def _shared_prefix(a: list[ChatMessage], b: list[ChatMessage]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def test_each_prompt_starts_with_the_whole_previous_prompt_as_sent() -> None:
    log = PromptBuilder(persona="P", rolling_chars=10_000).log()
    history: list[ChatMessage] = []
    first = _turn(history, log, "my dog is sick", "Oh no, what happened?", [hit("Rex is my dog.", id="a")], "name: Sam")
    second = _turn(history, log, "he ate a sock", "That sounds scary.", [hit("Rex likes socks.", id="b")], "name: Sam")
    # The first prompt, note and all, is the start of the second: only its end is new to the model.
    assert second[: len(first)] == first
    assert second[len(first)] == ChatMessage("assistant", "Oh no, what happened?")
    assert "Rex likes socks." in second[-1].content and "Rex is my dog." not in second[-1].content


def test_a_hit_already_in_the_window_is_not_noted_again() -> None:
    log = PromptBuilder(persona="P", rolling_chars=10_000).log()
    history: list[ChatMessage] = []
    same = hit("Rex is my dog.", id="a")
    _turn(history, log, "my dog is sick", "Oh no.", [same])
    third = log.build("is he better?", history, "", [same, hit("Rex is nine.", id="c")])
    assert "Rex is nine." in third[-1].content and "Rex is my dog." not in third[-1].content


def test_a_changed_profile_is_noted_at_the_end_and_the_system_message_stays() -> None:
    log = PromptBuilder(persona="P", rolling_chars=10_000).log()
    history: list[ChatMessage] = []
    first = _turn(history, log, "hi", "Hello!", profile="name: Sam")
    second = _turn(history, log, "call me Sammy", "Sure, Sammy.", profile="name: Sammy")
    assert second[0] == first[0] and "name: Sam\n" in second[0].content + "\n"
    assert PROFILE_CHANGED_NOTE in second[-1].content and "name: Sammy" in second[-1].content
    third = log.build("thanks", history, "name: Sammy")
    assert PROFILE_CHANGED_NOTE not in third[-1].content  # noted once; it stays in the conversation
    assert third[: len(second)] == second


def test_the_conversation_is_trimmed_in_large_steps_so_the_prefix_survives_most_turns() -> None:
    log = PromptBuilder(persona="P", rolling_chars=400).log()
    history: list[ChatMessage] = []
    prompts = [_turn(history, log, f"question {i} " + "x" * 30, f"answer {i} " + "y" * 30) for i in range(30)]
    kept = [_shared_prefix(before, after) >= len(before) for before, after in zip(prompts, prompts[1:], strict=False)]
    trims = kept.count(False)
    # Rolling one turn at a time would change the prefix at every turn once the budget is full
    # (about 24 of 29); trimming to half the budget changes it about once every three turns.
    assert 0 < trims <= 10
    assert all(sum(len(m.content) for m in p[1:-1]) <= 400 for p in prompts)
    for prompt in prompts:
        assert prompt[1].role == "user"  # a window never starts with an answer cut from its question


def test_prefix_is_what_the_next_prompt_starts_with() -> None:
    log = PromptBuilder(persona="P", rolling_chars=10_000).log()
    history: list[ChatMessage] = []
    _turn(history, log, "hi", "Hello!", [hit("Sam likes tea.")], "name: Sam")
    prefix = log.prefix(history, "name: Sam")
    assert log.build("and coffee?", history, "name: Sam")[: len(prefix)] == prefix


def test_persona_file_is_read_with_the_name_filled_in(tmp_path: Path) -> None:
    path = tmp_path / "persona.txt"
    path.write_text("You are {name}, a gardener.\n")
    assert load_persona(path, "Robin") == "You are Robin, a gardener."
    assert "You are Robin" in load_persona(None, "Robin")


def test_missing_persona_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PersonaError, match="agent.persona_file"):
        load_persona(tmp_path / "missing.txt", "Robin")
