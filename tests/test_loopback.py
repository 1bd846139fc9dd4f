"""LoopbackTransport: a scripted real-time microphone and a simulated speaker that reports what it played."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import numpy as np
import pytest

from convers import registry
from convers.audio import write_wav
from convers.config import Settings
from convers.contracts.audio import AudioFrame
from convers.contracts.transport import (
    InboundAudio,
    InboundEvent,
    InboundPlayed,
    InboundText,
    Transport,
)
from convers.transports.loopback import LoopbackTransport

# Fast enough to keep tests short, slow enough that scheduling noise does not matter.
SPEED = 10.0


def ramp(samples: int, rate: int = 16000, start: int = 1) -> AudioFrame:
    """Distinct non-zero samples, so the audio can be told apart from silence and located exactly."""
    return AudioFrame(((np.arange(samples) % 30000) + start).astype("<i2").tobytes(), rate)


def tone(duration_s: float, rate: int = 16000) -> AudioFrame:
    return AudioFrame(np.full(round(duration_s * rate), 1000, dtype="<i2").tobytes(), rate)


class Inbound:
    """Collects a transport's inbound events in a background task."""

    def __init__(self, transport: LoopbackTransport) -> None:
        self.events: list[InboundEvent] = []
        self.task = asyncio.create_task(self._collect(transport))

    async def _collect(self, transport: LoopbackTransport) -> None:
        async for event in transport.inbound():
            self.events.append(event)

    def audio(self) -> list[AudioFrame]:
        return [e.frame for e in self.events if isinstance(e, InboundAudio)]

    def played(self, turn: int) -> list[int]:
        return [e.ms for e in self.events if isinstance(e, InboundPlayed) and e.turn == turn]


async def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.002)


@pytest.fixture
async def transport():
    loopback = LoopbackTransport(speed=SPEED)
    yield loopback
    await loopback.close()


def test_registered_and_follows_the_protocol() -> None:
    built = registry.create("transport", "loopback", Settings())
    assert isinstance(built, Transport)
    assert LoopbackTransport.availability(Settings()).usable


async def test_mic_streams_20ms_frames_of_silence_in_paced_time(transport: LoopbackTransport) -> None:
    inbound = Inbound(transport)
    started = time.monotonic()
    await until(lambda: len(inbound.audio()) >= 25)
    elapsed = time.monotonic() - started
    frames = inbound.audio()
    assert all(f.samples == 320 and f.sample_rate == 16000 for f in frames)
    assert all(not any(f.pcm) for f in frames)
    # 25 frames are 0.5 s of audio: at 10x they cannot arrive in less than 0.05 s.
    assert elapsed >= 0.5 / SPEED * 0.9


async def test_said_audio_arrives_whole_on_frame_boundaries(transport: LoopbackTransport) -> None:
    inbound = Inbound(transport)
    await until(lambda: len(inbound.audio()) >= 3)
    speech = ramp(1000)  # 3 frames and a bit
    finished_at = await transport.say(speech)
    stream = b"".join(f.pcm for f in inbound.audio())
    start = stream.index(speech.pcm)
    assert start % 640 == 0
    assert not any(stream[:start])
    assert finished_at >= transport.records_of("say_start")[0].at
    assert transport.records_of("say_end")
    # The last partial frame is padded with silence.
    assert not any(stream[start + len(speech.pcm) : start + 4 * 640])


async def test_queued_utterances_follow_each_other(transport: LoopbackTransport) -> None:
    inbound = Inbound(transport)
    first = transport.say_nowait(ramp(640, start=1))
    second = transport.say_nowait(ramp(640, start=5000))
    await asyncio.gather(first, second)
    stream = b"".join(f.pcm for f in inbound.audio())
    assert stream.index(ramp(640, start=1).pcm) < stream.index(ramp(640, start=5000).pcm)
    assert first.result() <= second.result()


async def test_audio_injected_at_a_mic_time(transport: LoopbackTransport) -> None:
    inbound = Inbound(transport)
    await transport.say(ramp(320), at_s=0.4)
    frames = inbound.audio()
    first_loud = next(i for i, f in enumerate(frames) if any(f.pcm))
    assert first_loud == 20  # 0.4 s / 20 ms


async def test_wav_file_and_other_rates_are_resampled(transport: LoopbackTransport, tmp_path) -> None:
    path = tmp_path / "speech.wav"
    write_wav(path, tone(0.2, rate=48000))
    inbound = Inbound(transport)
    await transport.say(path)
    loud = [f for f in inbound.audio() if any(f.pcm)]
    assert sum(f.samples for f in loud) == pytest.approx(3200, abs=320)


async def test_finish_ends_the_inbound_stream() -> None:
    transport = LoopbackTransport(speed=SPEED)
    transport.say_nowait(ramp(640))
    transport.finish(after_s=0.1)
    inbound = Inbound(transport)
    await asyncio.wait_for(inbound.task, 5)
    assert transport.records_of("mic_end")
    assert transport.mic_time_s == pytest.approx(0.04 + 0.1, abs=0.021)
    await transport.close()


async def test_typed_text_comes_through(transport: LoopbackTransport) -> None:
    inbound = Inbound(transport)
    transport.type_text("hello there")
    await until(lambda: any(isinstance(e, InboundText) for e in inbound.events))
    assert [e.text for e in inbound.events if isinstance(e, InboundText)] == ["hello there"]


async def test_speaker_plays_in_real_time_and_reports_played_ms(transport: LoopbackTransport) -> None:
    inbound = Inbound(transport)
    audio = ramp(16000)  # one second
    for seq, start in enumerate(range(0, len(audio.pcm), 3200)):
        await transport.send_audio(1, seq, AudioFrame(audio.pcm[start : start + 3200], 16000))
    started = time.monotonic()
    await until(lambda: 1000 in inbound.played(1))
    assert time.monotonic() - started >= 1.0 / SPEED * 0.9
    reports = inbound.played(1)
    assert reports == sorted(reports) and len(reports) >= 5
    assert transport.heard(1) == audio
    assert len(transport.sent_audio(1)) == 10
    assert transport.records_of("play_start")[0].turn == 1


async def test_pause_stops_played_ms_and_resume_continues(transport: LoopbackTransport) -> None:
    inbound = Inbound(transport)
    await transport.send_audio(1, 0, tone(1.0))
    await until(lambda: transport.played_ms(1) >= 200)
    await transport.pause(1)
    at_pause = transport.played_ms(1)
    await asyncio.sleep(0.3 / SPEED * 3)
    assert transport.played_ms(1) == at_pause
    await transport.resume(1)
    await until(lambda: 1000 in inbound.played(1))
    assert transport.heard(1) == tone(1.0)
    assert [r.kind for r in transport.records if r.kind in {"pause", "resume"}] == ["pause", "resume"]


async def test_flush_drops_the_turn_at_once_and_late_frames_never_play(transport: LoopbackTransport) -> None:
    inbound = Inbound(transport)
    await transport.send_audio(1, 0, tone(1.0))
    await until(lambda: transport.played_ms(1) >= 200)
    await transport.flush(1)
    at_flush = transport.played_ms(1)
    await transport.send_audio(1, 1, tone(0.5))  # in flight when the flush happened
    await transport.send_audio(2, 0, ramp(3200))
    await until(lambda: 200 in inbound.played(2))
    assert transport.played_ms(1) == at_flush < 1000
    assert transport.heard(1).samples == round(at_flush * 16)
    assert transport.heard(2) == ramp(3200)
    assert transport.sent_audio(1)[-1].dropped
    assert not transport.sent_audio(2)[0].dropped
    # The client tells the server how much of the flushed turn it really played.
    assert inbound.played(1)[-1] == round(at_flush)
    assert transport.records_of("flush")[0].turn == 1


async def test_pausing_one_turn_holds_later_turns_behind_it(transport: LoopbackTransport) -> None:
    await transport.pause(3)
    await transport.send_audio(3, 0, tone(0.2))
    await transport.send_audio(4, 0, tone(0.2))
    Inbound(transport)
    await asyncio.sleep(0.05)
    assert transport.played_ms(3) == transport.played_ms(4) == 0.0


async def test_events_are_recorded_with_times(transport: LoopbackTransport) -> None:
    await transport.send_event({"type": "state", "state": "speaking"})
    await transport.send_event({"type": "state", "state": "listening"})
    assert [e["state"] for e in transport.events_of("state")] == ["speaking", "listening"]
    assert transport.events[0][0] <= transport.events[1][0]


async def test_close_ends_inbound_and_cancels_pending_speech() -> None:
    transport = LoopbackTransport(speed=SPEED)
    inbound = Inbound(transport)
    pending = transport.say_nowait(ramp(320), at_s=100.0)
    await until(lambda: len(inbound.audio()) > 1)
    await transport.close()
    await asyncio.wait_for(inbound.task, 2)
    assert pending.cancelled()


def test_settings_options_queue_a_wav(tmp_path) -> None:
    path = tmp_path / "hi.wav"
    write_wav(path, tone(0.1))
    settings = Settings.model_validate({"transport": {"provider": "loopback", "options": {"wav": str(path), "speed": 4}}})
    transport = LoopbackTransport.from_settings(settings)
    assert transport.speed == 4.0

    async def run() -> list[AudioFrame]:
        inbound = Inbound(transport)
        await until(lambda: any(any(f.pcm) for f in inbound.audio()))
        await transport.close()
        return inbound.audio()

    frames = asyncio.run(run())
    assert any(any(f.pcm) for f in frames)
