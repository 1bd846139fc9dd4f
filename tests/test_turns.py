"""TurnTaker: scripted VAD timelines in, turn events out."""

from __future__ import annotations

import numpy as np
import pytest

from convers.audio import Rechunker, concat, silence
from convers.config import Settings
from convers.contracts.audio import AudioFrame
from convers.engine.listening.turn_taking import SpeechPaused, SpeechStarted, TurnTaker, UserTurnEnded
from convers.policies import TurnTiming
from convers.providers.vad.silero import SileroVad
from tests.speech import SpeechMaker, speech  # noqa: F401

# A tiny rate keeps frames small: 20 samples = 20 ms per frame.
RATE = 1000
FRAME_S = 0.02
# One character per 20 ms frame: S speech, m between the thresholds (hysteresis band), . silence.
PROBABILITY = {"S": 0.9, "m": 0.42, ".": 0.05}
TIMING = TurnTiming(
    speech_start_threshold=0.5,
    speech_stop_threshold=0.35,
    min_speech_s=0.06,  # 3 frames
    end_of_turn_silence_s=0.1,  # 5 frames
    pre_roll_s=0.04,  # 2 frames
    post_roll_s=0.02,  # 1 frame
    max_utterance_s=0.4,  # 20 frames
)


def frame(index: int) -> AudioFrame:
    """Frame `index` is filled with the value `index`, so audio contents show which frames they came from."""
    return AudioFrame(np.full(int(RATE * FRAME_S), index, dtype="<i2").tobytes(), RATE)


def frame_indices(audio: AudioFrame) -> list[int]:
    samples = np.frombuffer(audio.pcm, dtype="<i2")
    return [int(v) for v in samples[:: int(RATE * FRAME_S)]]


def run(script: str, timing: TurnTiming = TIMING) -> list[tuple[str, int]]:
    """Feeds the script; returns (event kind, index of the frame that produced it)."""
    taker = TurnTaker(timing, sample_rate=RATE)
    out = []
    for index, symbol in enumerate(script):
        for event in taker.feed(PROBABILITY[symbol], (index + 1) * FRAME_S, frame(index)):
            out.append((event.kind, index))
    return out


def feed_all(script: str, timing: TurnTiming = TIMING) -> list:
    taker = TurnTaker(timing, sample_rate=RATE)
    events = []
    for index, symbol in enumerate(script):
        events.extend(taker.feed(PROBABILITY[symbol], (index + 1) * FRAME_S, frame(index)))
    return events


CASES = [
    ("silence only", ".........", []),
    ("mid-band only never starts", "..mmmmmm..", []),
    (
        "blip shorter than min speech is dropped",
        "....SS.....",
        [("speech_onset", 4), ("speech_dropped", 6)],
    ),
    (
        "exactly min speech starts, then the turn ends after the silence",
        "...SSS.......",
        [("speech_onset", 3), ("speech_started", 5), ("speech_paused", 6), ("user_turn_ended", 10)],
    ),
    (
        "mid-band frames keep an onset alive (hysteresis)",
        "..SmmS....",
        [("speech_onset", 2), ("speech_started", 4), ("speech_paused", 6)],
    ),
    (
        "mid-band frames do not pause speech (hysteresis)",
        "SSSSmmmmSS.....",
        [("speech_onset", 0), ("speech_started", 2), ("speech_paused", 10), ("user_turn_ended", 14)],
    ),
    (
        "a pause shorter than end-of-turn resumes the same turn",
        "SSSS....SSS......",
        [
            ("speech_onset", 0),
            ("speech_started", 2),
            ("speech_paused", 4),
            ("speech_resumed", 8),
            ("speech_paused", 11),
            ("user_turn_ended", 15),
        ],
    ),
    (
        "mid-band during a pause counts as silence, not as a resume",
        "SSSS.mm..S",
        [("speech_onset", 0), ("speech_started", 2), ("speech_paused", 4), ("user_turn_ended", 8), ("speech_onset", 9)],
    ),
    (
        "max utterance cuts the turn and a new onset follows",
        "S" * 23,
        [("speech_onset", 0), ("speech_started", 2), ("user_turn_ended", 19), ("speech_onset", 20), ("speech_started", 22)],
    ),
    (
        "max utterance also cuts during a pause",
        "S" * 17 + "....",
        [("speech_onset", 0), ("speech_started", 2), ("speech_paused", 17), ("user_turn_ended", 19)],
    ),
    (
        "two turns in a row",
        "SSS.....SSS.....",
        [
            ("speech_onset", 0),
            ("speech_started", 2),
            ("speech_paused", 3),
            ("user_turn_ended", 7),
            ("speech_onset", 8),
            ("speech_started", 10),
            ("speech_paused", 11),
            ("user_turn_ended", 15),
        ],
    ),
]


@pytest.mark.parametrize(("script", "expected"), [(c[1], c[2]) for c in CASES], ids=[c[0] for c in CASES])
def test_turn_events(script: str, expected: list[tuple[str, int]]) -> None:
    assert run(script) == expected


def test_min_speech_of_one_frame_starts_on_the_onset_frame() -> None:
    timing = TurnTiming(min_speech_s=0.01, end_of_turn_silence_s=0.1, pre_roll_s=0.0)
    assert run("..S", timing) == [("speech_onset", 2), ("speech_started", 2)]


def test_turn_audio_holds_pre_roll_speech_and_post_roll() -> None:
    events = feed_all("......SSSS........")
    ended = [e for e in events if isinstance(e, UserTurnEnded)]
    assert len(ended) == 1
    # Two frames of pre-roll (4, 5), the speech (6-9), one frame of post-roll (10).
    assert frame_indices(ended[0].audio) == [4, 5, 6, 7, 8, 9, 10]
    assert ended[0].reason == "silence"
    assert ended[0].started_at == pytest.approx(6 * FRAME_S)
    assert ended[0].ended_at == pytest.approx(10 * FRAME_S)
    assert ended[0].speech_s == pytest.approx(4 * FRAME_S)
    assert ended[0].at == pytest.approx(15 * FRAME_S)


def test_speech_at_stream_start_has_no_pre_roll() -> None:
    ended = [e for e in feed_all("SSSS......") if isinstance(e, UserTurnEnded)]
    assert frame_indices(ended[0].audio) == [0, 1, 2, 3, 4]
    assert ended[0].started_at == 0.0


def test_turn_audio_keeps_the_mid_turn_pause() -> None:
    ended = [e for e in feed_all("..SSS..SSS......") if isinstance(e, UserTurnEnded)]
    assert frame_indices(ended[0].audio) == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]


def test_dropped_blip_stays_in_the_pre_roll_of_the_next_onset() -> None:
    ended = [e for e in feed_all("..S.SSS......") if isinstance(e, UserTurnEnded)]
    assert frame_indices(ended[0].audio) == [2, 3, 4, 5, 6, 7]


def test_max_length_cut_keeps_all_audio_and_next_turn_has_no_repeated_pre_roll() -> None:
    events = feed_all("S" * 23 + "......")
    ended = [e for e in events if isinstance(e, UserTurnEnded)]
    assert [e.reason for e in ended] == ["max_length", "silence"]
    assert frame_indices(ended[0].audio) == list(range(20))
    assert ended[0].ended_at == pytest.approx(20 * FRAME_S)
    # The second turn starts at frame 20 with nothing from the first one before it.
    assert frame_indices(ended[1].audio) == [20, 21, 22, 23]


def test_paused_event_says_when_speech_stopped() -> None:
    paused = [e for e in feed_all("..SSSS...") if isinstance(e, SpeechPaused)]
    assert paused[0].speech_ended_at == pytest.approx(6 * FRAME_S)
    assert paused[0].speech_s == pytest.approx(4 * FRAME_S)
    started = [e for e in feed_all("..SSSS...") if isinstance(e, SpeechStarted)]
    assert started[0].started_at == pytest.approx(2 * FRAME_S)


def test_speech_s_tracks_the_current_utterance_and_reset_forgets_it() -> None:
    taker = TurnTaker(TIMING, sample_rate=RATE)
    for index in range(5):
        taker.feed(0.9, (index + 1) * FRAME_S, frame(index))
    assert taker.state == "speaking"
    assert taker.speech_s == pytest.approx(5 * FRAME_S)
    taker.reset()
    assert taker.state == "silent"
    assert taker.speech_s == 0.0
    # After a reset there is no pre-roll left from before it.
    events = []
    for index in range(5, 15):
        events.extend(taker.feed(0.9 if index < 9 else 0.0, (index + 1) * FRAME_S, frame(index)))
    ended = [e for e in events if isinstance(e, UserTurnEnded)]
    assert frame_indices(ended[0].audio) == [5, 6, 7, 8, 9]


def test_frame_at_another_rate_is_refused() -> None:
    taker = TurnTaker(TIMING, sample_rate=16000)
    with pytest.raises(ValueError, match="16000 Hz"):
        taker.feed(0.9, 0.02, AudioFrame(b"\x00\x00" * 160, 8000))


# ------------------------------------------------------------------ with real speech and Silero



def voiced_span(audio: AudioFrame) -> tuple[float, float]:
    """Start and end (s) of the audible part: espeak-ng pads its output with silence."""
    loud = np.flatnonzero(np.abs(np.frombuffer(audio.pcm, dtype="<i2")) > 300)
    return loud[0] / audio.sample_rate, loud[-1] / audio.sample_rate


def test_silero_and_turn_taker_find_each_spoken_turn(speech: SpeechMaker) -> None:  # noqa: F811
    """Two sentences with a long gap are two turns; each turn's audio covers its sentence."""
    first = speech.frame("Hello there, how are you today?")
    second = speech.frame("Tell me about the weather.")
    stream = concat([silence(0.6, 16000), first, silence(1.2, 16000), second, silence(1.0, 16000)])
    vad = SileroVad.from_settings(Settings())
    taker = TurnTaker(TurnTiming(), sample_rate=16000)
    ended = []
    for index, frame in enumerate(Rechunker(512, 16000).push(stream)):
        at = (index + 1) * 512 / 16000
        ended += [e for e in taker.feed(vad.speech_probability(frame.pcm), at, frame) if isinstance(e, UserTurnEnded)]
    assert len(ended) == 2
    begin, end = voiced_span(first)
    assert ended[0].started_at == pytest.approx(0.6 + begin, abs=0.1)
    assert ended[0].ended_at == pytest.approx(0.6 + end, abs=0.15)
    begin, _ = voiced_span(second)
    assert ended[1].started_at == pytest.approx(0.6 + first.duration_s + 1.2 + begin, abs=0.1)
    # Pre-roll + speech + post-roll: never shorter than the words themselves.
    assert ended[1].audio.duration_s >= second.duration_s - 0.2
