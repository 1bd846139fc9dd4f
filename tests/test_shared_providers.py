"""One set of heavy providers per server process: the VAD model, the memory store and the embedder are
shared by every session, each session keeps its own state, and a closed session is freed at once."""

from __future__ import annotations

import asyncio
import gc
import weakref
from pathlib import Path

import numpy as np
import pytest

from convers.app import wiring
from convers.app.shared_memory import SharedMemory
from convers.audio import Rechunker
from convers.config import Settings, load_settings
from convers.contracts.vad import SharedModelVad
from convers.providers.vad.silero import SileroVad
from tests.speech import SpeechMaker, speech  # noqa: F401


def frames_of(vad: SileroVad, audio) -> list[bytes]:
    return [f.pcm for f in Rechunker(vad.frame_samples, vad.sample_rate).push(audio)]


def test_silero_streams_share_the_model_but_not_the_state(speech: SpeechMaker) -> None:  # noqa: F811
    shared = SileroVad.from_settings(Settings())
    assert isinstance(shared, SharedModelVad)
    one, two = shared.new_stream(), shared.new_stream()
    assert one.model is shared.model and two.model is shared.model  # loaded once
    talk = frames_of(one, speech.padded("Hello, how are you today?", 0.3, 0.3))
    other = frames_of(one, speech.padded("Seven green bottles on the wall", 0.1, 0.6))
    # What each stream scores on its own, with a VAD of its own ...
    solo = SileroVad.from_settings(Settings())
    alone_one = [solo.speech_probability(f) for f in talk]
    solo.reset()
    alone_two = [solo.speech_probability(f) for f in other]
    # ... is what they score interleaved frame by frame on the shared model.
    mixed_one, mixed_two = [], []
    for a, b in zip(talk, other, strict=False):
        mixed_one.append(one.speech_probability(a))
        mixed_two.append(two.speech_probability(b))
    n = min(len(talk), len(other))
    assert np.allclose(mixed_one, alone_one[:n], atol=1e-5)
    assert np.allclose(mixed_two, alone_two[:n], atol=1e-5)
    assert max(mixed_one) > 0.5 and max(mixed_two) > 0.5  # real speech was heard in both


def test_each_session_gets_its_own_vad_stream_on_the_server_model() -> None:
    shared = SileroVad.from_settings(Settings())
    first = wiring.session_vad(shared, Settings())
    second = wiring.session_vad(shared, Settings())
    assert first is not second and first is not shared
    assert first.model is shared.model is second.model


def memory_settings(tmp_path: Path) -> Settings:
    # The word-hash embedder of the tests is not installed: recall by words, which these tests do not need.
    return load_settings(environ={}, cli={"data_dir": str(tmp_path / "data"), "embedder.provider": "no-such-embedder",
                                          "memory.recall_floor": 0.0})


async def test_sessions_share_one_store_and_closing_one_leaves_it_open_for_the_others(tmp_path: Path) -> None:
    shared = SharedMemory(memory_settings(tmp_path))
    status = await shared.aopen()
    assert status.state == "on" and str(tmp_path / "data" / "memory.db") in status.reason
    store = shared.store
    assert await shared.aopen() is status and shared.store is store  # opened once
    first, second = shared.for_session(None), shared.for_session(None)
    assert first is not None and second is not None
    assert first.store is store and second.store is store
    first.remember("s1", "user", "Sam", "My cat is called Pixel")
    await first.aclose()
    second.remember("s2", "user", "Sam", "Pixel sleeps all day")
    await second.aclose()  # would fail to store if the first session had closed the shared store
    assert [t.text for t in store.list(10, newest_first=False)] == ["My cat is called Pixel", "Pixel sleeps all day"]
    await shared.aclose()
    assert shared.store is None


async def test_a_closed_session_memory_is_freed_without_a_garbage_collection(tmp_path: Path) -> None:
    shared = SharedMemory(memory_settings(tmp_path))
    await shared.aopen()
    memory = shared.for_session(None, on_status=None)
    assert memory is not None
    memory.remember("s1", "user", "Sam", "I play the cello")
    await memory.recall("cello")
    await memory.greeting("Juniper")
    await memory.aclose()
    await asyncio.sleep(0)  # let the finished tasks' callbacks run
    gone = weakref.ref(memory)
    gc.disable()
    try:
        del memory
        assert gone() is None, [type(r).__name__ for r in gc.get_referrers(gone())]
    finally:
        gc.enable()
    await shared.aclose()


async def test_server_sessions_build_the_heavy_providers_once(tmp_path: Path) -> None:
    settings = load_settings(environ={}, cli={
        "data_dir": str(tmp_path / "data"), "vad.provider": "silero", "stt.provider": "pocketsphinx",
        "tts.provider": "espeak-ng", "embedder.provider": "no-such-embedder", "llm.base_url": "http://127.0.0.1:9"})
    sessions = wiring.ServerSessions(settings)
    assert sessions.memory.store is None  # nothing opened on the event loop at construction
    await sessions.memory.aopen()
    store = sessions.memory.store
    assert store is not None
    views = [sessions.memory.for_session(sessions.llm) for _ in range(3)]
    assert all(v is not None and v.store is store for v in views)
    for view in views:
        await view.aclose()
    await sessions.aclose()


@pytest.mark.parametrize("reply_cut_at_close", [False, True])
async def test_a_closed_session_is_freed_without_a_garbage_collection(reply_cut_at_close: bool) -> None:
    from convers.contracts.transport import InboundText
    from convers.engine.reply.prompt import PromptBuilder
    from convers.engine.session import Session, SessionOptions, SessionParts
    from convers.events import EventLog
    from convers.policies import SpeculationPolicy
    from tests.doubles import ListMemory, LoudnessVad, RecordingTransport, ScriptedLlm, ToneTts
    from tests.test_session_voice import ScriptedStt

    transport = RecordingTransport()
    # A slow reply is still running when the client goes: the session cancels it on close.
    llm = ScriptedLlm(["Hello", " there."], delay_s=0.05 if reply_cut_at_close else 0.0)
    parts = SessionParts(llm=llm, tts=ToneTts(), stt=ScriptedStt([]), vad=LoudnessVad(),
                         memory=ListMemory())
    # With speculation (what `convers serve` runs): its callbacks refer back to the session.
    options = SessionOptions(greet=False, finish_reply_on_input_end=not reply_cut_at_close,
                             speculation=SpeculationPolicy(enabled=True))
    session = Session(transport, parts, PromptBuilder(persona="P"), EventLog(None), options=options)
    transport.inbox.put_nowait(InboundText("hi"))
    running = asyncio.create_task(session.run())
    while llm.sent == 0:
        await asyncio.sleep(0.01)
    transport.inbox.put_nowait(None)  # the client goes
    await running
    del running
    assert llm.closed_early is reply_cut_at_close
    assert transport.reply_text(1) == ("Hello" if reply_cut_at_close else "Hello there.")
    await asyncio.sleep(0)
    gone = weakref.ref(session)
    gc.disable()
    try:
        del session
        assert gone() is None  # no cycle left through callbacks: freed at once, not at the next full collection
    finally:
        gc.enable()
