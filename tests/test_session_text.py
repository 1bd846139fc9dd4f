"""Session on the text path: replies stream, interruptions cut, failures are visible, memory is optional."""

from __future__ import annotations

import asyncio
import json

from convers.contracts.transport import InboundPlayed, InboundText
from convers.engine.reply.prompt import RECALL_FRAMING, RECALL_NOTE, PromptBuilder
from convers.engine.session import Session, SessionOptions, SessionParts
from convers.events import EventLog, read_events
from tests.doubles import ListMemory, RecordingTransport, RunningSession, ScriptedLlm, ToneTts, hit


def make_session(llm, transport, tts=None, memory=None, events=None, **options) -> Session:
    return Session(
        transport,
        SessionParts(llm=llm, tts=tts, memory=memory),
        PromptBuilder(persona="You are Juniper."),
        events or EventLog(None),
        options=SessionOptions(greet=False, **options),
    )


async def test_text_reply_streams_and_is_kept_in_history(tmp_path) -> None:
    llm = ScriptedLlm(["Hello", " there", ". Nice", " to meet you."])
    transport = RecordingTransport()
    log_path = tmp_path / "events.jsonl"
    session = make_session(llm, transport, events=EventLog(log_path))
    task = await session.user_said("hi")
    await task
    assert transport.reply_text(1) == "Hello there. Nice to meet you."
    assert [(m.role, m.content) for m in session.history] == [
        ("user", "hi"),
        ("assistant", "Hello there. Nice to meet you."),
    ]
    kinds = [e["event"] for e in read_events(log_path)]
    assert kinds.index("user_turn") < kinds.index("llm_first_token") < kinds.index("reply_done")
    done = next(e for e in read_events(log_path) if e["event"] == "reply_done")
    assert "llm_first_token_ms" in done["metrics"] and "first_chunk_ms" in done["metrics"]
    assert json.dumps(done)  # every event is plain JSON
    await asyncio.sleep(0)
    assert transport.events("metrics")[0]["turn"] == 1


async def test_interrupt_closes_the_llm_stream_and_keeps_what_was_shown() -> None:
    llm = ScriptedLlm(["One", " two", " three", " four", " five"] * 20, delay_s=0.01)
    transport = RecordingTransport()
    session = make_session(llm, transport)
    task = await session.user_said("count")
    while llm.sent < 3:
        await asyncio.sleep(0.005)
    await session.interrupt()
    assert task.cancelled()  # the reply task itself was cancelled, not left to finish its 100 tokens
    assert llm.closed_early
    assert ("flush", 1) in transport.log
    shown = transport.reply_text(1)
    assert session.history[-1].role == "assistant"
    assert session.history[-1].content == shown
    assert len(shown) < len("One two three four five") * 20


async def test_new_user_text_cancels_the_running_reply() -> None:
    llm = ScriptedLlm(["word "] * 100, delay_s=0.01)
    transport = RecordingTransport()
    session = make_session(llm, transport)
    first = await session.user_said("tell me a story")
    await asyncio.sleep(0.03)
    llm.tokens, llm.delay_s = ["Sure."], 0.0
    second = await session.user_said("stop, what time is it?")
    await second
    assert first.cancelled()
    assert ("flush", 1) in transport.log
    roles = [m.role for m in session.history]
    assert roles == ["user", "assistant", "user", "assistant"]
    assert session.history[-1].content == "Sure."


async def test_llm_failure_is_reported_and_the_session_goes_on() -> None:
    llm = ScriptedLlm([], fail="cannot reach http://127.0.0.1:9/v1: connection refused")
    transport = RecordingTransport()
    session = make_session(llm, transport)
    await (await session.user_said("hello"))
    errors = transport.events("error")
    assert errors and errors[0]["code"] == "llm_unavailable" and "connection refused" in errors[0]["message"]
    llm.fail, llm.tokens = None, ["Back again."]
    await (await session.user_said("hello?"))
    assert transport.reply_text(2) == "Back again."


async def test_slow_recall_does_not_hold_the_reply() -> None:
    memory = ListMemory(hits=[hit("Sam has a dog called Rex.")], recall_delay_s=5.0)
    llm = ScriptedLlm(["Hi."])
    session = make_session(llm, RecordingTransport(), memory=memory, recall_timeout_s=0.05)
    await asyncio.wait_for(await session.user_said("how is my dog?"), timeout=2.0)
    assert RECALL_NOTE not in llm.prompts[0][-1].content


async def test_recall_and_profile_reach_the_prompt_and_turns_are_remembered() -> None:
    memory = ListMemory(hits=[hit("Sam has a dog called Rex.")], profile="name: Sam")
    llm = ScriptedLlm(["Rex is well, I hope."])
    session = make_session(llm, RecordingTransport(), memory=memory)
    await (await session.user_said("how is my dog?"))
    system, words = llm.prompts[0][0].content, llm.prompts[0][-1].content
    assert "name: Sam" in system and RECALL_FRAMING in system
    assert words.startswith(f"[{RECALL_NOTE}") and "Rex" in words and words.endswith("how is my dog?")
    assert memory.remembered == [("user", "user", "how is my dog?"), ("assistant", "Juniper", "Rex is well, I hope.")]


async def test_spoken_reply_is_cut_to_what_was_played() -> None:
    llm = ScriptedLlm(["First sentence here. ", "Second sentence is longer than that. ", "Third one."])
    transport = RecordingTransport()
    memory = ListMemory()
    session = make_session(llm, transport, tts=ToneTts(), memory=memory)
    running = await RunningSession.start(session, transport)
    await (await session.user_said("talk"))
    frames = transport.audio(1)
    assert frames and [seq for _, seq, _ in frames] == list(range(len(frames)))
    # The client played the first chunk (20 chars -> 200 ms) and half of the second.
    first_ms = len("First sentence here.") * 10
    second_ms = len("Second sentence is longer than that.") * 10
    await running.played(1, first_ms + second_ms // 2)
    assert session.current is not None and session.current.audible
    await session.interrupt()
    assert ("flush", 1) in transport.log
    kept = session.history[-1].content
    assert kept.startswith("First sentence here. Second sentence")
    assert "Third" not in kept and "that." not in kept
    assert memory.remembered[-1] == ("assistant", "Juniper", kept)
    await running.stop()


async def test_fully_played_reply_settles_once() -> None:
    llm = ScriptedLlm(["Short answer."])
    transport = RecordingTransport()
    memory = ListMemory()
    session = make_session(llm, transport, tts=ToneTts(), memory=memory)
    running = await RunningSession.start(session, transport)
    await (await session.user_said("hi"))
    total_ms = len("Short answer.") * 10
    await running.played(1, total_ms - 5)
    assert [r for r in memory.remembered if r[0] == "assistant"] == []  # still playing
    await running.played(1, total_ms)
    await running.played(1, total_ms)
    assert [r for r in memory.remembered if r[0] == "assistant"] == [("assistant", "Juniper", "Short answer.")]
    assert transport.events("state")[-1]["state"] == "listening"
    await running.stop()


async def test_run_handles_text_and_played_until_the_client_leaves() -> None:
    llm = ScriptedLlm(["Okay."])
    transport = RecordingTransport()
    session = make_session(llm, transport, tts=ToneTts(), memory=ListMemory())
    running = await RunningSession.start(session, transport)
    await transport.deliver(InboundText("hello"))
    await running.settle()
    assert transport.audio(1)
    await transport.deliver(InboundPlayed(turn=1, ms=10_000))
    await running.stop()  # the client leaves: run() returns
    assert running.task.done() and running.task.exception() is None
    assert transport.reply_text(1) == "Okay."
    assert session.history[-1].content == "Okay."
