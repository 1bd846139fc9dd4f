"""A reply with nothing to say is answered with a short line and a visible reason, never silence."""

from __future__ import annotations

import pytest

from convers.engine.reply.prompt import PromptBuilder
from convers.engine.session import Session, SessionOptions, SessionParts
from convers.events import EventLog
from convers.policies import FALLBACK_LINE
from tests.doubles import RecordingTransport, ScriptedLlm, ToneTts


def make_session(llm, transport, tts=None, events=None) -> Session:
    return Session(
        transport, SessionParts(llm=llm, tts=tts), PromptBuilder(persona="P"), events or EventLog(None),
        options=SessionOptions(greet=False),
    )


@pytest.mark.parametrize(
    ("tokens", "reason"),
    [
        ([], "the model wrote nothing"),
        (["   ", "\n"], "the model wrote nothing"),
        (["**", "*"], "nothing speakable"),  # only markup: the voice says nothing of it
        (["```", "\n```"], "nothing speakable"),
    ],
)
async def test_an_unspeakable_reply_is_answered_with_a_short_line(tokens: list[str], reason: str) -> None:
    transport = RecordingTransport()
    tts = ToneTts()
    session = make_session(ScriptedLlm(tokens), transport, tts=tts)
    await (await session.user_said("hello?"))
    assert FALLBACK_LINE in transport.reply_text(1)
    assert transport.audio(1) and {a[0] for a in transport.audio()} == {1}  # spoken, in the turn it answers
    status = [e for e in transport.events("status") if e["code"] == "reply_fallback"]
    assert len(status) == 1 and reason in status[0]["message"]
    assert session.history[-1].content == FALLBACK_LINE


async def test_a_model_that_fails_before_its_first_word_is_answered_too() -> None:
    transport = RecordingTransport()
    session = make_session(ScriptedLlm([], fail="cannot connect to http://127.0.0.1:9/v1"), transport, tts=ToneTts())
    await (await session.user_said("hello?"))
    assert [e["code"] for e in transport.events("error")] == ["llm_unavailable"]
    (status,) = [e for e in transport.events("status") if e["code"] == "reply_fallback"]
    assert "cannot connect" in status["message"] and FALLBACK_LINE in transport.reply_text(1)


async def test_a_reply_with_words_gets_no_fallback() -> None:
    transport = RecordingTransport()
    session = make_session(ScriptedLlm(["**Hello** there."]), transport, tts=ToneTts())
    await (await session.user_said("hello?"))
    assert FALLBACK_LINE not in transport.reply_text(1)
    assert not [e for e in transport.events("status") if e["code"] == "reply_fallback"]


async def test_text_sessions_show_the_line_as_text() -> None:
    transport = RecordingTransport()
    session = make_session(ScriptedLlm([" "]), transport)
    await (await session.user_said("hello?"))
    assert transport.reply_text(1).strip() == FALLBACK_LINE
