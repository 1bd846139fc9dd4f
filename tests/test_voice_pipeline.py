"""The whole voice pipeline on real components, in real time.

espeak-ng speaks the user's questions into a loopback microphone; Silero VAD, pocketsphinx STT, the
OpenAI-compatible provider talking HTTP to a scripted server, and espeak-ng TTS do the rest.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from convers.cli import wiring
from convers.config import load_settings
from convers.contracts.audio import AudioFrame
from convers.engine.session import Session, SessionParts
from convers.events import read_events
from convers.transports.loopback import LoopbackTransport
from tests.llm_server import Reply, ScriptedLlmServer
from tests.speech import SpeechMaker, speech  # noqa: F401

pytestmark = pytest.mark.slow

LONG_REPLY = [
    "Well, the forecast says it will be sunny in the morning.",
    " Then clouds will roll in from the west around noon.",
    " By the evening there could be some light rain, so take an umbrella.",
    " Tomorrow looks much the same, with a little more wind.",
]


def build_session(tmp_path: Path, server: ScriptedLlmServer, transport: LoopbackTransport) -> Session:
    settings = load_settings(
        environ={},
        cli={
            "data_dir": str(tmp_path),
            "llm.base_url": server.base_url,
            "stt.provider": "pocketsphinx",
            "vad.provider": "silero",
            "tts.provider": "espeak-ng",
            "memory.enabled": False,
        },
    )
    llm = wiring.build("llm", settings)
    vad, stt, tts = wiring.build_voice(settings)
    parts = SessionParts(llm=llm, tts=tts, stt=stt, vad=vad)
    return wiring.make_session(settings, transport, parts, session_id="voice-test", greet=False)


async def wait_for(condition, timeout_s: float, step_s: float = 0.02) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(step_s)


async def test_a_spoken_question_gets_a_spoken_reply(tmp_path: Path, speech: SpeechMaker) -> None:
    async with ScriptedLlmServer([Reply(["It is sunny", " and warm today."])]) as server:
        transport = LoopbackTransport()
        session = build_session(tmp_path, server, transport)
        runner = asyncio.create_task(session.run())
        await transport.say(speech.padded("what is the weather like today", 0.3, 0.0))
        await wait_for(lambda: transport.events_of("reply"), 15)
        await wait_for(lambda: transport.played_ms(1) > 0 and not session.current.audible, 15)
        transport.finish()
        await asyncio.wait_for(runner, 10)

    transcript = transport.events_of("transcript")[0]["text"].lower()
    assert {"weather", "today", "like", "what"} & set(transcript.split()), transcript
    assert "weather" in server.chat_requests()[0].messages[-1]["content"].lower() or transcript
    assert "".join(e["delta"] for e in transport.events_of("reply")) == "It is sunny and warm today."
    heard = transport.heard(1)
    assert heard.duration_s > 1.0  # the whole reply was played
    assert np.abs(np.frombuffer(heard.pcm, dtype="<i2")).max() > 1000  # and it is not silence
    assert [m.role for m in session.history] == ["user", "assistant"]
    events = read_events(tmp_path / "events" / "voice-test.jsonl")
    kinds = [e["event"] for e in events]
    for kind in ("speech_start", "speech_end", "stt_final", "llm_first_token", "first_chunk",
                 "tts_first_audio", "first_audio_out", "reply_done"):
        assert kind in kinds, kind
    metrics = next(e for e in events if e["event"] == "reply_done")["metrics"]
    assert 0 < metrics["stt_final_ms"] < metrics["llm_first_token_ms"] < metrics["first_audio_out_ms"]


async def test_speaking_over_the_agent_stops_it_and_cuts_the_history(tmp_path: Path, speech: SpeechMaker) -> None:
    async with ScriptedLlmServer([Reply(LONG_REPLY, tokens_per_s=30), Reply(["Okay, I will stop."])]) as server:
        transport = LoopbackTransport()
        session = build_session(tmp_path, server, transport)
        runner = asyncio.create_task(session.run())
        await transport.say(speech.padded("tell me about the weather", 0.3, 0.0))
        await wait_for(lambda: transport.played_ms(1) > 1500, 20)
        await transport.say(speech.frame("stop please, that is enough"))
        await wait_for(lambda: transport.records_of("flush"), 5)
        await wait_for(lambda: transport.events_of("reply") and transport.played_ms(3) > 0 or transport.played_ms(2) > 0, 20)
        transport.finish(after_s=0.5)
        await asyncio.wait_for(runner, 20)

    flush = transport.records_of("flush")[0]
    assert flush.turn == 1
    # The agent's audio stops: nothing of turn 1 is sent after the flush, nothing more is played.
    assert not [s for s in transport.sent_audio(1) if s.at > flush.at]
    played_at_flush = transport.played_ms(1)
    full_ms = sum(s.frame.duration_s for s in transport.sent_audio(1)) * 1000
    assert played_at_flush < full_ms
    # Barge-in event: onset to flush within the configured minimum (0.25 s) plus VAD latency.
    barge = next(e for e in read_events(tmp_path / "events" / "voice-test.jsonl") if e["event"] == "barge_in")
    assert barge["onset_to_flush_ms"] < 250 + 150
    # The history holds only the part of the reply that was played.
    assistant = [m.content for m in session.history if m.role == "assistant"]
    full_text = "".join(LONG_REPLY)
    assert assistant[0] and full_text.startswith(assistant[0][:20])
    assert len(assistant[0]) < len(full_text) * 0.8
    assert "Tomorrow" not in assistant[0]


async def test_a_short_noise_during_the_reply_does_not_lose_it(tmp_path: Path, speech: SpeechMaker) -> None:
    async with ScriptedLlmServer([Reply(LONG_REPLY[:2], tokens_per_s=30)]) as server:
        transport = LoopbackTransport()
        session = build_session(tmp_path, server, transport)
        runner = asyncio.create_task(session.run())
        await transport.say(speech.padded("how is the weather", 0.3, 0.0))
        await wait_for(lambda: transport.played_ms(1) > 800, 20)
        # A 120 ms burst of voice: enough to trip the VAD, far too short to be an interruption.
        burst = speech.frame("ha")
        await transport.say(AudioFrame(burst.pcm[: int(0.12 * burst.sample_rate) * 2], burst.sample_rate))
        await wait_for(lambda: session.current is not None and not session.current.audible, 30)
        transport.finish(after_s=0.3)
        await asyncio.wait_for(runner, 10)

    assert not transport.records_of("flush")
    total_ms = sum(s.frame.duration_s for s in transport.sent_audio(1)) * 1000
    assert transport.played_ms(1) >= total_ms - 25
    assert session.history[-1].content == "".join(LONG_REPLY[:2])
