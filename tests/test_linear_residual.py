"""LinearResidual and EchoCancelling.unsuppressed: the stretch of the linear filter's residual under a stretch of cleaned audio."""

from __future__ import annotations

import numpy as np
import pytest

from convers.audio import frame_from_float
from convers.bench.echo import Room, RoomEcho
from convers.contracts.audio import AudioFrame
from convers.echo_cancelling import EchoCancelling
from convers.linear_residual import LinearResidual
from convers.providers.echo.webrtc import WebRtcEchoCanceller
from tests.test_echo_cancelling import RATE, speech_like

BLOCK = 320  # bytes: 10 ms at 16 kHz


def noise_blocks(count: int, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [rng.integers(-3000, 3000, BLOCK // 2, dtype="<i2").tobytes() for _ in range(count)]


def likeness(frame: AudioFrame, voice: np.ndarray) -> float:
    """Normalised correlation of a frame with a voice at no lag."""
    heard = np.frombuffer(frame.pcm, dtype="<i2") / 32768
    return float(np.dot(heard, voice) / np.sqrt(np.dot(heard, heard) * np.dot(voice, voice) + 1e-12))


def test_the_residual_of_a_stretch_of_cleaned_audio_is_found_by_its_bytes() -> None:
    kept = LinearResidual(RATE)
    cleaned, residual, heard = noise_blocks(50, 1), noise_blocks(50, 2), noise_blocks(50, 3)
    for c, r, m in zip(cleaned, residual, heard, strict=True):
        kept.add(c, r, m)
    # A stretch starting mid-block, as an utterance with its pre-roll does.
    stretch = b"".join(cleaned)[1000:6000]
    assert kept.of(stretch) == b"".join(residual)[1000:6000]
    assert kept.microphone_of(stretch) == b"".join(heard)[1000:6000]


def test_a_match_off_the_sample_grid_is_passed_over_for_the_one_on_it() -> None:
    kept = LinearResidual(RATE)
    needle = bytes([1, 2, 1, 2, 1, 2, 1, 2])
    # Earlier on the grid; later, one byte off it (which would split every sample in two).
    kept.add(b"\0\0" + needle + b"\0\0", b"\1\1" + b"\7" * len(needle) + b"\1\1", bytes(len(needle) + 4))
    kept.add(b"\0" + needle + b"\0", b"\2" * (len(needle) + 2), bytes(len(needle) + 2))
    assert kept.of(needle) == b"\7" * len(needle)


@pytest.mark.parametrize("stretch", [bytes(640), b"", b"\1\2\3", noise_blocks(1, 9)[0]])
def test_silence_an_odd_length_or_audio_from_elsewhere_has_no_residual(stretch: bytes) -> None:
    kept = LinearResidual(RATE)
    for c, r in zip(noise_blocks(20, 3), noise_blocks(20, 4), strict=True):
        kept.add(c + bytes(640), r + bytes(640), c + bytes(640))
    assert kept.of(stretch) is None


def test_only_the_last_seconds_are_kept() -> None:
    kept = LinearResidual(RATE, keep_s=0.1)  # 10 blocks
    blocks = noise_blocks(40, 5)
    for block in blocks:
        kept.add(block, block, block)
    assert kept.of(blocks[-1]) == blocks[-1]
    assert kept.of(blocks[0]) is None


def test_blocks_of_different_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="residual"):
        LinearResidual(RATE).add(bytes(320), bytes(318), bytes(320))


def test_a_voice_over_the_agent_while_the_canceller_learns_is_whole_in_the_unsuppressed_audio() -> None:
    """At 0 dB echo in the canceller's first seconds, AEC3's suppressor thins a voice over the agent;
    the linear filter's residual of the same stretch keeps it."""
    cancelling = EchoCancelling(WebRtcEchoCanceller())
    agent = speech_like(4.0, seed=2) * 0.3
    person = np.zeros(len(agent))
    person[RATE * 2 : RATE * 3] = speech_like(1.0, seed=5) * 0.3
    room = RoomEcho(Room(delay_ms=60, rt60_s=0.3, echo_db=0).impulse(np.random.default_rng(1)), 1.0)
    cleaned = bytearray()
    for start in range(0, len(agent), 320):
        played = agent[start : start + 320]
        cancelling.played(frame_from_float(played, RATE))
        cleaned += cancelling.cleaned(frame_from_float(room.push(played) + person[start : start + 320], RATE)).pcm
    assert cancelling.learning
    # The person's second, as the turn-taking would hand it over.
    utterance = AudioFrame(bytes(cleaned[RATE * 2 * 2 : RATE * 3 * 2]), RATE)
    unsuppressed = cancelling.unsuppressed(utterance)
    assert unsuppressed is not None and unsuppressed.samples == utterance.samples
    voice = person[RATE * 2 : RATE * 3]
    # The voice itself, sample for sample (AEC3's output of the same second hardly resembles it).
    assert likeness(unsuppressed, voice) > 0.5
    assert likeness(unsuppressed, voice) > likeness(utterance, voice) + 0.3
    assert cancelling.unsuppressed(AudioFrame(utterance.pcm, 48000)) is None  # not this stream's rate


def test_without_libspeexdsp_there_is_no_unsuppressed_audio(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(*_: object, **__: object) -> None:
        raise ImportError("the double-talk witness needs libspeexdsp")

    monkeypatch.setattr("convers.double_talk.LinearEchoFilter", missing)
    cancelling = EchoCancelling(WebRtcEchoCanceller())
    frame = frame_from_float(speech_like(0.1) * 0.3, RATE)
    cancelling.played(frame)
    cleaned = cancelling.cleaned(frame)
    assert cancelling.unsuppressed(cleaned) is None


def test_the_residual_from_an_earlier_stretch_runs_to_the_end_of_the_later_one() -> None:
    kept = LinearResidual(RATE)
    cleaned, residual = noise_blocks(30, 6), noise_blocks(30, 7)
    for c, r in zip(cleaned, residual, strict=True):
        kept.add(c, r, c)
    stream, res = b"".join(cleaned), b"".join(residual)
    first, second = stream[640:1600], stream[3200:4800]
    assert kept.of(second, since=first) == res[640:4800]
    assert kept.of(second, since=noise_blocks(1, 99)[0]) is None  # an earlier stretch that is not kept
