"""Local sound-card transport: clear errors without devices, and turn-tagged playback (with a fake sounddevice)."""

from __future__ import annotations

import asyncio
import sys
import types
from typing import Any

import numpy as np
import pytest

from convers.config import Settings
from convers.contracts.audio import AudioFrame
from convers.contracts.transport import InboundAudio, InboundPlayed
from convers.transports import local
from convers.transports.local import LocalAudioError, LocalAudioTransport, PlaybackQueue


class FakePortAudioError(Exception):
    pass


def fake_sounddevice(devices: bool = True, rate: int = 48000) -> types.ModuleType:
    """A sounddevice stand-in whose streams keep their callbacks so a test can drive them."""
    module = types.ModuleType("sounddevice")
    module.PortAudioError = FakePortAudioError  # type: ignore[attr-defined]
    module.streams = []  # type: ignore[attr-defined]

    def query_devices(device: Any = None, kind: str | None = None) -> dict[str, Any]:
        if not devices:
            raise FakePortAudioError("Error querying device -1")
        return {"name": f"fake {kind}", "default_samplerate": float(rate)}

    class Stream:
        def __init__(self, **kwargs: Any) -> None:
            self.kwargs = kwargs
            self.started = self.closed = False
            module.streams.append(self)  # type: ignore[attr-defined]

        def start(self) -> None:
            self.started = True

        def stop(self) -> None:
            self.started = False

        def close(self) -> None:
            self.closed = True

    module.query_devices = query_devices  # type: ignore[attr-defined]
    module.RawInputStream = Stream  # type: ignore[attr-defined]
    module.RawOutputStream = Stream  # type: ignore[attr-defined]
    return module


def test_missing_sounddevice_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sounddevice", None)
    result = LocalAudioTransport.availability(Settings())
    assert not result.usable and "pip install" in result.detail


def test_no_input_device_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sounddevice", fake_sounddevice(devices=False))
    result = LocalAudioTransport.availability(Settings())
    assert not result.usable
    assert "no microphone found" in result.detail and "transport.input_device" in result.detail
    with pytest.raises(LocalAudioError, match="no microphone"):
        LocalAudioTransport.from_settings(Settings())


def test_availability_names_the_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sounddevice", fake_sounddevice())
    result = LocalAudioTransport.availability(Settings())
    assert result.usable and "fake input" in result.detail and "fake output" in result.detail


def test_this_machine_reports_its_audio_state() -> None:
    """Whatever this machine has, availability answers without raising."""
    result = local.LocalAudioTransport.availability(Settings())
    assert isinstance(result.detail, str) and result.detail


# ------------------------------------------------------------------ playback queue


def pcm(samples: int, value: int) -> bytes:
    return np.full(samples, value, dtype="<i2").tobytes()


def test_playback_plays_in_order_then_silence_and_reports() -> None:
    reports: list[tuple[int, int]] = []
    queue = PlaybackQueue(lambda t, ms: reports.append((t, ms)), sample_rate=1000, report_every_ms=100)
    queue.push(1, pcm(150, 7))
    queue.push(1, pcm(50, 8))
    first = queue.fill(200)  # 100 samples
    assert first == pcm(100, 7)
    assert reports == [(1, 100)]
    second = queue.fill(400)  # the remaining 100 samples, then silence
    assert second == pcm(50, 7) + pcm(50, 8) + pcm(100, 0)
    assert queue.played_ms(1) == 200
    assert reports[-1] == (1, 200)


def test_playback_pause_plays_silence_and_keeps_the_buffer() -> None:
    queue = PlaybackQueue(lambda t, ms: None, sample_rate=1000)
    queue.push(2, pcm(100, 5))
    queue.fill(100)
    queue.pause(2)
    assert queue.fill(100) == pcm(50, 0)
    assert queue.played_ms(2) == 50
    queue.resume(2)
    assert queue.fill(100) == pcm(50, 5)


def test_playback_flush_drops_the_turn_and_its_late_frames() -> None:
    reports: list[tuple[int, int]] = []
    queue = PlaybackQueue(lambda t, ms: reports.append((t, ms)), sample_rate=1000, report_every_ms=1000)
    queue.push(1, pcm(500, 1))
    queue.fill(60)
    queue.flush(1)
    assert reports == [(1, 30)]  # what was really heard of the cut turn
    assert queue.push(1, pcm(100, 1)) is False
    assert queue.push(2, pcm(10, 2)) is True
    assert queue.fill(40) == pcm(10, 2) + pcm(10, 0)
    assert queue.played_ms(1) == 30


def test_playback_never_mixes_two_turns_in_one_block() -> None:
    queue = PlaybackQueue(lambda t, ms: None, sample_rate=1000)
    queue.push(1, pcm(10, 1))
    queue.push(2, pcm(10, 2))
    assert queue.fill(40) == pcm(10, 1) + pcm(10, 0)
    assert queue.fill(40) == pcm(10, 2) + pcm(10, 0)


# ------------------------------------------------------------------ the transport with a fake card


async def listening(transport: LocalAudioTransport) -> tuple[asyncio.Task[None], list[Any]]:
    """Starts reading the transport's inbound events (which opens its streams); they land in the list."""
    events: list[Any] = []

    async def collect() -> None:
        async for event in transport.inbound():
            events.append(event)

    task = asyncio.create_task(collect())
    await asyncio.sleep(0)
    return task, events


async def test_transport_resamples_the_mic_and_reports_playback(monkeypatch: pytest.MonkeyPatch) -> None:
    card = fake_sounddevice(rate=48000)
    monkeypatch.setitem(sys.modules, "sounddevice", card)
    transport = LocalAudioTransport()
    assert transport.output_format.sample_rate == 48000
    task, events = await listening(transport)
    microphone, speaker = card.streams  # type: ignore[attr-defined]
    assert microphone.started and speaker.started
    assert microphone.kwargs["samplerate"] == 48000 and microphone.kwargs["dtype"] == "int16"

    for _ in range(5):  # 100 ms of mic audio from the device's callback thread
        microphone.kwargs["callback"](pcm(960, 100), 960, None, None)
    await transport.send_audio(1, 0, AudioFrame(pcm(1600, 300), 16000))  # 100 ms, resampled to 48 kHz
    out = bytearray(1920 * 2)
    for _ in range(3):
        speaker.kwargs["callback"](memoryview(out), 1920, None, None)
    await asyncio.sleep(0.01)
    await transport.send_event({"type": "transcript", "text": "hello", "final": True})
    await transport.close()
    await asyncio.wait_for(task, 2)

    mic = [e.frame for e in events if isinstance(e, InboundAudio)]
    assert all(f.sample_rate == 16000 for f in mic)
    # The streaming resampler holds back its filter delay (a few ms) until more audio comes.
    assert 1300 < sum(f.samples for f in mic) <= 1600
    played = [e for e in events if isinstance(e, InboundPlayed)]
    assert played and played[-1].turn == 1 and played[-1].ms == 100
    assert speaker.closed and microphone.closed


async def test_transport_cancels_the_echo_of_what_its_speaker_played(monkeypatch: pytest.MonkeyPatch) -> None:
    from convers.echo_cancelling import EchoCancelling
    from tests.test_echo_cancelling import CountingCanceller

    card = fake_sounddevice(rate=48000)
    monkeypatch.setitem(sys.modules, "sounddevice", card)
    canceller = CountingCanceller()
    transport = LocalAudioTransport(echo=EchoCancelling(canceller, learning_s=0.05))
    assert transport.echo_learning
    task, events = await listening(transport)
    microphone, speaker = card.streams  # type: ignore[attr-defined]
    await transport.send_audio(1, 0, AudioFrame(pcm(1600, 3000), 16000))  # 100 ms of agent voice
    out = bytearray(960 * 2)
    for _ in range(5):  # the card plays 20 ms, then the microphone hears 20 ms
        speaker.kwargs["callback"](memoryview(out), 960, None, None)
        microphone.kwargs["callback"](pcm(960, 1000), 960, None, None)
    await asyncio.sleep(0.01)
    await transport.close()
    await asyncio.wait_for(task, 2)

    # The reference is what the speaker played, at the canceller's 16 kHz, in 10 ms blocks.
    assert 8 <= len(canceller.rendered) <= 10
    assert max(abs(int(v)) for block in canceller.rendered for v in np.frombuffer(block, dtype="<i2")) > 2000
    mic = [e.frame for e in events if isinstance(e, InboundAudio)]
    assert mic and all(f.sample_rate == 16000 for f in mic)
    assert sum(f.samples for f in mic) == 160 * len(canceller.captured)
    assert not transport.echo_learning  # 100 ms of audible voice is past this test's 50 ms


@pytest.mark.parametrize("glitch", ["output_underflow", "input_overflow"])
async def test_a_device_that_lost_samples_makes_the_canceller_learn_the_room_again(
        monkeypatch: pytest.MonkeyPatch, glitch: str) -> None:
    from convers.echo_cancelling import EchoCancelling
    from tests.test_echo_cancelling import CountingCanceller

    card = fake_sounddevice(rate=16000)
    monkeypatch.setitem(sys.modules, "sounddevice", card)
    transport = LocalAudioTransport(echo=EchoCancelling(CountingCanceller(), learning_s=0.05))
    task, _ = await listening(transport)
    microphone, speaker = card.streams  # type: ignore[attr-defined]
    await transport.send_audio(1, 0, AudioFrame(pcm(3200, 3000), 16000))  # 200 ms of agent voice
    out = bytearray(320 * 2)
    flags = {"output_underflow": False, "input_overflow": False}
    fine = types.SimpleNamespace(**flags)

    def exchange(status: Any) -> None:  # the card plays 20 ms, then the microphone hears 20 ms
        speaker.kwargs["callback"](memoryview(out), 320, None, status if glitch == "output_underflow" else fine)
        microphone.kwargs["callback"](pcm(320, 1000), 320, None, status if glitch == "input_overflow" else fine)

    for _ in range(4):
        exchange(fine)
    await asyncio.sleep(0.01)
    assert not transport.echo_learning
    exchange(types.SimpleNamespace(**{**flags, glitch: True}))
    await asyncio.sleep(0.01)
    assert transport.echo_learning
    await transport.close()
    await asyncio.wait_for(task, 2)


async def test_convers_talk_prints_each_side_of_the_conversation_once(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # Through PulseAudio `convers talk` printed "Juniper: Sure,agent> Sure, that that sounds sounds good.":
    # the local transport and the talk command's printer both wrote every word.
    from convers.cli.talk import TranscriptPrinter

    monkeypatch.setitem(sys.modules, "sounddevice", fake_sounddevice())
    talk = TranscriptPrinter(LocalAudioTransport(), "Juniper")
    await talk.send_event({"type": "transcript", "text": "hello", "final": True})
    for delta in ("Sure,", " that sounds good."):
        await talk.send_event({"type": "reply", "turn": 1, "delta": delta})
    await talk.close()
    assert capsys.readouterr().out == "you: hello\nJuniper: Sure, that sounds good.\n"
