"""DoubleTalk: someone speaks over the agent when the canceller removed little of the microphone."""

from __future__ import annotations

import numpy as np

from convers.double_talk import DoubleTalk

RATE = 16000
BLOCK = 160  # 10 ms, a WebRTC block
BLOCK_S = BLOCK / RATE


def tone(level: float, seed: int = 0) -> bytes:
    """10 ms of noise at `level` (full scale 1) as PCM16."""
    samples = np.random.default_rng(seed).standard_normal(BLOCK) * level
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


def run(detector: DoubleTalk, seconds: float, played: float, mic: float, cleaned: float) -> list[bool]:
    """Feeds `seconds` of blocks at the given levels; returns the detector's verdict after each."""
    verdicts = []
    for index in range(round(seconds / BLOCK_S)):
        detector.played(tone(played, index))
        detector.heard(tone(mic, index + 1), tone(cleaned, index + 2))
        verdicts.append(detector.now)
    return verdicts


def test_echo_the_canceller_removes_is_no_double_talk() -> None:
    detector = DoubleTalk(BLOCK_S)
    assert not any(run(detector, 3.0, played=0.1, mic=0.1, cleaned=0.0001))  # 60 dB removed


def test_a_voice_the_canceller_cannot_remove_is_double_talk() -> None:
    detector = DoubleTalk(BLOCK_S)
    run(detector, 2.0, played=0.1, mic=0.1, cleaned=0.0001)
    # A person at the agent's level: the cleaned audio is their voice, 6 dB under the microphone.
    verdicts = run(detector, 0.1, played=0.1, mic=0.14, cleaned=0.07)
    assert verdicts[-1] and sum(verdicts) >= len(verdicts) - 3  # within one window (30 ms)


def test_not_trusted_in_the_first_second_after_the_agent_was_silent() -> None:
    detector = DoubleTalk(BLOCK_S)
    run(detector, 2.0, played=0.1, mic=0.1, cleaned=0.0001)
    run(detector, 0.5, played=0.0, mic=0.0, cleaned=0.0)  # the agent pauses between replies
    # The canceller lets a burst through as the agent starts again: not taken for a person.
    assert not any(run(detector, 0.9, played=0.1, mic=0.1, cleaned=0.05))
    assert run(detector, 0.2, played=0.1, mic=0.1, cleaned=0.05)[-1]


def test_room_noise_that_passes_the_canceller_unchanged_is_no_double_talk() -> None:
    detector = DoubleTalk(BLOCK_S)
    # Quiet agent speech over a fan: little of the microphone is echo, so little is removed, but the
    # cleaned audio stays at its floor.
    assert not any(run(detector, 3.0, played=0.1, mic=0.004, cleaned=0.003))


def test_nothing_is_double_talk_while_the_agent_is_silent() -> None:
    detector = DoubleTalk(BLOCK_S)
    assert not any(run(detector, 2.0, played=0.0, mic=0.1, cleaned=0.1))
