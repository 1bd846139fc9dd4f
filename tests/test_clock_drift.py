"""Two clocks: the played audio read on the microphone's clock, and the drift between the two measured."""

from __future__ import annotations

import numpy as np
import pytest

from convers.clock_drift import ClockReader, DriftEstimator
from convers.double_talk import DoubleTalk
from convers.linear_echo import LinearEchoFilter

RATE = 16000
BLOCK = 160


def babble(seconds: float, seed: int = 1) -> np.ndarray:
    """Noise shaped like speech: a low-passed spectrum, loud and soft by syllables, with pauses."""
    rng = np.random.default_rng(seed)
    count = round(seconds * RATE)
    spectrum = np.fft.rfft(rng.standard_normal(count))
    spectrum /= 1 + np.fft.rfftfreq(count, 1 / RATE) / 500  # most energy under 1 kHz, as in a voice
    voice = np.fft.irfft(spectrum, count)
    t = np.arange(count) / RATE
    syllables = np.clip(np.sin(2 * np.pi * 3.5 * t), 0, None) * (np.sin(2 * np.pi * 0.2 * t) > -0.6)
    return 0.1 * voice / np.std(voice) * syllables


def drifting_echo(played: np.ndarray, drift_ppm: float, delay: int = 960) -> np.ndarray:
    """What a microphone `drift_ppm` faster than the speaker hears of `played`, `delay` samples late
    (in step: one microphone sample for every sample played)."""
    reader = ClockReader(lag=delay)
    heard = []
    for at in range(0, len(played), RATE):
        reader.feed(played[at : at + RATE])
        heard.append(reader.read(len(played[at : at + RATE]), 1 / (1 + drift_ppm / 1e6)))
    return 0.5 * np.concatenate(heard)


def test_a_reader_on_the_same_clock_gives_the_stream_itself() -> None:
    stream = np.random.default_rng(2).standard_normal(1000)
    reader = ClockReader(lag=10)
    out = []
    for at in range(0, 1000, 100):
        reader.feed(stream[at : at + 100])
        out.append(reader.read(100))
    assert np.array_equal(np.concatenate(out), np.concatenate([np.zeros(10), stream[:990]]))


def test_a_reader_on_a_faster_clock_falls_behind_the_stream_at_its_rate() -> None:
    # A tone read 1000 ppm slower: after 8000 samples it lags 8 samples, and is the same tone still.
    t = np.arange(16000)
    tone = np.sin(2 * np.pi * 440 * t / RATE)
    reader = ClockReader(lag=20)
    reader.feed(tone)
    out = reader.read(16000, 1 / 1.001)
    at = np.arange(16000) / 1.001 - 20
    expected = np.sin(2 * np.pi * 440 * at / RATE)
    assert np.max(np.abs(out[100:15800] - expected[100:15800])) < 1e-3


@pytest.mark.parametrize("drift_ppm", [0.0, 30.0, 100.0, -100.0])
def test_the_drift_between_two_clocks_is_measured_from_the_echo(drift_ppm: float) -> None:
    played = babble(30.0)
    heard = drifting_echo(played, drift_ppm) + np.random.default_rng(5).standard_normal(len(played)) * 0.001
    estimator = DriftEstimator(RATE)
    for at in range(0, len(played), BLOCK):
        estimator.add(heard[at : at + BLOCK], played[at : at + BLOCK])
    drift = estimator.drift()
    assert drift is not None
    assert drift * 1e6 == pytest.approx(drift_ppm, abs=1.0)


def test_no_drift_is_said_while_the_agent_is_silent() -> None:
    estimator = DriftEstimator(RATE)
    silence = np.zeros(BLOCK)
    for _ in range(round(30 * RATE / BLOCK)):
        estimator.add(silence, silence)
    assert estimator.drift() is None and not estimator.delays


def _witness_removed_db(drift_ppm: float, follow: bool) -> tuple[float, float]:
    """What the double-talk witness removed of the echo in the last 10 of 60 s, and the drift it followed."""
    played = babble(60.0, seed=3)
    heard = drifting_echo(played, drift_ppm)
    detector = DoubleTalk(BLOCK / RATE, LinearEchoFilter(RATE, BLOCK))
    if not follow:
        detector._estimator = None  # the witness as it was: every played block as it is
    pcm = lambda samples: (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()  # noqa: E731
    for at in range(0, len(played), BLOCK):
        detector.played(pcm(played[at : at + BLOCK]), audible=True)
        detector.heard(pcm(heard[at : at + BLOCK]), pcm(heard[at : at + BLOCK] * 0.001))
    return detector.witness_removed_db(10.0) or 0.0, detector.drift_ppm


def test_the_witness_follows_two_clocks_apart() -> None:
    removed, followed = _witness_removed_db(100.0, follow=True)
    assert followed == pytest.approx(100.0, abs=2.0)
    # Without following, the same room: the witness keeps learning a path that has moved on.
    unfollowed, _ = _witness_removed_db(100.0, follow=False)
    assert unfollowed < 10.0
    assert removed > unfollowed + 15.0


def test_the_time_the_agent_was_silent_counts_in_the_drift() -> None:
    # Two seconds of every five the agent is silent and nothing is measured (the witness rests); the
    # echo's delay moves on all the same, and the drift is its move per second of all of them.
    played = babble(45.0, seed=4)
    heard = drifting_echo(played, 100.0)
    estimator = DriftEstimator(RATE)
    for at in range(0, len(played), BLOCK):
        if (at / RATE) % 5.0 >= 3.0:
            estimator.skip(BLOCK)
        else:
            estimator.add(heard[at : at + BLOCK], played[at : at + BLOCK])
    drift = estimator.drift()
    assert drift is not None
    assert drift * 1e6 == pytest.approx(100.0, abs=2.0)
