"""SpeechEdges and the TurnTaker's use of it: a late VAD's onset and end moved back to the voice."""

from __future__ import annotations

import numpy as np
import pytest

from convers.contracts.audio import AudioFrame
from convers.engine.listening.speech_edges import HOP_S, SpeechEdges, hop_levels_dbfs
from convers.engine.listening.turn_taking import SpeechOnset, SpeechPaused, TurnTaker, UserTurnEnded
from convers.policies import TurnTiming

RATE = 16000
FRAME = 512  # Silero's frame: 32 ms
FRAME_S = FRAME / RATE


def signal(segments: list[tuple[float, float]], noise_dbfs: float = -70.0, seed: int = 1) -> np.ndarray:
    """Noise at `noise_dbfs`, with a 220 Hz 'voice' at -20 dBFS in each (start_s, end_s) segment."""
    total_s = max(end for _, end in segments) + 1.0
    rng = np.random.default_rng(seed)
    samples = rng.normal(0.0, 10 ** (noise_dbfs / 20), round(total_s * RATE))
    t = np.arange(len(samples)) / RATE
    for start, end in segments:
        inside = (t >= start) & (t < end)
        samples[inside] += 0.1 * np.sqrt(2) * np.sin(2 * np.pi * 220 * t[inside])
    return samples


def pcm(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


def at_byte(seconds: float) -> int:
    return round(seconds * RATE) * 2


def test_levels_per_hop() -> None:
    hop = round(HOP_S * RATE)
    loud = np.full(hop, 0.5)
    levels = hop_levels_dbfs(pcm(np.concatenate([np.zeros(hop), loud, np.zeros(hop // 2)])), RATE)
    assert len(levels) == 2  # the half hop at the end is not judged
    assert levels[0] == -np.inf
    assert levels[1] == pytest.approx(-6.02, abs=0.05)


def test_onset_moves_back_to_where_the_voice_got_loud() -> None:
    audio = pcm(signal([(0.400, 1.0)]))
    edges = SpeechEdges(RATE, max_shift_s=0.12)
    vad_onset = at_byte(0.464)  # two frames late
    threshold = edges.threshold_dbfs(audio, vad_onset)
    assert -62 < threshold < -55  # noise at -70 plus the margin, held up by the minimum level
    onset = edges.onset(audio, vad_onset, threshold)
    assert abs(onset - at_byte(0.400)) <= at_byte(HOP_S)


def test_onset_moves_at_most_the_maximum() -> None:
    audio = pcm(signal([(0.200, 1.0)]))
    edges = SpeechEdges(RATE, max_shift_s=0.12)
    vad_onset = at_byte(0.600)
    onset = edges.onset(audio, vad_onset, edges.threshold_dbfs(audio, vad_onset))
    assert vad_onset - onset == at_byte(0.12)


@pytest.mark.parametrize("noise_dbfs", [-20.0, -15.0])
def test_onset_stays_when_the_voice_is_not_above_the_floor(noise_dbfs: float) -> None:
    # Echo or a loud room as loud as the voice: loudness cannot place the onset, the VAD's stands.
    audio = pcm(signal([(0.400, 1.0)], noise_dbfs=noise_dbfs))
    edges = SpeechEdges(RATE, max_shift_s=0.12)
    vad_onset = at_byte(0.464)
    assert edges.onset(audio, vad_onset, edges.threshold_dbfs(audio, vad_onset)) == vad_onset


def test_onset_stays_when_the_vad_frame_itself_is_quiet() -> None:
    audio = pcm(signal([(0.100, 0.300)]))
    edges = SpeechEdges(RATE, max_shift_s=0.12)
    vad_onset = at_byte(0.352)  # the VAD fires on quiet audio after a loud stretch
    assert edges.onset(audio, vad_onset, edges.threshold_dbfs(audio, vad_onset)) == vad_onset


def test_end_moves_back_to_the_last_loud_hop() -> None:
    audio = pcm(signal([(0.300, 1.000)]))
    edges = SpeechEdges(RATE, max_shift_s=0.12)
    threshold = edges.threshold_dbfs(audio, at_byte(0.300))
    end = edges.end(audio, at_byte(1.064), threshold)
    assert abs(end - at_byte(1.000)) <= at_byte(HOP_S)


def test_end_stays_when_no_loud_hop_is_in_reach() -> None:
    audio = pcm(signal([(0.300, 0.600)]))
    edges = SpeechEdges(RATE, max_shift_s=0.12)
    threshold = edges.threshold_dbfs(audio, at_byte(0.300))
    assert edges.end(audio, at_byte(0.900), threshold) == at_byte(0.900)


def test_disabled_keeps_the_vad_moments() -> None:
    audio = pcm(signal([(0.400, 1.0)]))
    edges = SpeechEdges(RATE, max_shift_s=0.0)
    assert edges.onset(audio, at_byte(0.464), -60.0) == at_byte(0.464)
    assert edges.end(audio, at_byte(1.064), -60.0) == at_byte(1.064)


def feed_late_vad(samples: np.ndarray, speech: tuple[float, float], lag_s: float, timing: TurnTiming) -> list:
    """Feeds 32 ms frames scored by a VAD that hears the speech span `lag_s` late at both ends."""
    taker = TurnTaker(timing, sample_rate=RATE)
    audio = pcm(samples)
    events = []
    for index in range(len(audio) // (FRAME * 2)):
        start_s, end_s = index * FRAME_S, (index + 1) * FRAME_S
        heard = start_s < speech[1] + lag_s and end_s > speech[0] + lag_s
        chunk = AudioFrame(audio[index * FRAME * 2 : (index + 1) * FRAME * 2], RATE)
        events.extend(taker.feed(0.9 if heard else 0.05, end_s, chunk))
    return events


def test_turn_taker_counts_from_the_voice_not_the_late_vad() -> None:
    speech = (0.500, 1.500)
    timing = TurnTiming()
    events = feed_late_vad(signal([speech]), speech, lag_s=0.07, timing=timing)
    onset = next(e for e in events if isinstance(e, SpeechOnset))
    paused = next(e for e in events if isinstance(e, SpeechPaused))
    ended = next(e for e in events if isinstance(e, UserTurnEnded))
    assert abs(onset.started_at - speech[0]) <= HOP_S + 1e-9
    assert abs(paused.speech_ended_at - speech[1]) <= HOP_S + 1e-9
    assert ended.ended_at == paused.speech_ended_at
    # The silence is counted from the voice's end: confirmed within one VAD frame of 0.5 s after it.
    assert speech[1] + timing.end_of_turn_silence_s <= ended.at < speech[1] + timing.end_of_turn_silence_s + FRAME_S
    # The audio runs from the pre-roll before the VAD's onset frame to the post-roll after the voice's end.
    kept_s = len(ended.audio.pcm) / 2 / RATE
    vad_onset_s = onset.at - FRAME_S
    assert kept_s == pytest.approx(timing.pre_roll_s + (speech[1] - vad_onset_s) + timing.post_roll_s, abs=HOP_S)


def test_turn_taker_without_refinement_keeps_the_vad_lag() -> None:
    speech = (0.500, 1.500)
    events = feed_late_vad(signal([speech]), speech, lag_s=0.07, timing=TurnTiming(refine_edges_max_s=0.0))
    onset = next(e for e in events if isinstance(e, SpeechOnset))
    paused = next(e for e in events if isinstance(e, SpeechPaused))
    assert onset.started_at > speech[0] + 0.03
    assert paused.speech_ended_at > speech[1] + 0.03


def pause_after_voice(timing: TurnTiming) -> tuple[TurnTaker, float]:
    """A TurnTaker fed 0.5 s of voice then silence frames until it is pausing; returns it and the voice's end."""
    speech = (0.300, 0.800)
    samples = signal([speech])
    audio = pcm(samples)
    taker = TurnTaker(timing, sample_rate=RATE)
    index = 0
    while taker.state != "pausing":
        chunk = AudioFrame(audio[index * FRAME * 2 : (index + 1) * FRAME * 2], RATE)
        start_s = index * FRAME_S
        heard = start_s < speech[1] + 0.04 and start_s + FRAME_S > speech[0]
        taker.feed(0.9 if heard else 0.05, start_s + FRAME_S, chunk)
        index += 1
    return taker, speech[1]


def test_a_quiet_unscored_tail_ends_the_turn_between_vad_frames() -> None:
    timing = TurnTiming()
    taker, voice_end = pause_after_voice(timing)
    quiet = pcm(np.zeros(320))  # 20 ms the VAD has not scored yet
    assert taker.end_if_quiet(voice_end + 0.45, quiet) == []  # not yet 0.5 s of silence
    ended = taker.end_if_quiet(voice_end + 0.5 + 0.004, quiet)
    assert len(ended) == 1 and isinstance(ended[0], UserTurnEnded)
    assert taker.state == "silent"


def test_a_loud_unscored_tail_waits_for_the_vad() -> None:
    taker, voice_end = pause_after_voice(TurnTiming())
    loud = pcm(0.1 * np.sin(np.arange(320) / 5.0))
    assert taker.end_if_quiet(voice_end + 0.55, loud) == []
    assert taker.state == "pausing"


def test_without_loudness_only_the_vad_ends_the_turn() -> None:
    taker, voice_end = pause_after_voice(TurnTiming(refine_edges_max_s=0.0))
    assert taker.end_if_quiet(voice_end + 0.7, pcm(np.zeros(320))) == []
    assert taker.state == "pausing"


def speaking_taker() -> tuple[TurnTaker, float]:
    """A TurnTaker fed voice from 0.3 s, scored by the VAD through the frame ending at the returned time."""
    audio = pcm(signal([(0.300, 2.0)]))
    taker = TurnTaker(TurnTiming(), sample_rate=RATE)
    index = 0
    while taker.state != "speaking" or taker.voice_s < 0.2:
        chunk = AudioFrame(audio[index * FRAME * 2 : (index + 1) * FRAME * 2], RATE)
        start_s = index * FRAME_S
        taker.feed(0.9 if start_s + FRAME_S > 0.3 else 0.05, start_s + FRAME_S, chunk)
        index += 1
    return taker, index * FRAME_S


def test_loud_unscored_audio_extends_the_voice_before_the_vad_frame_is_whole() -> None:
    taker, scored_until = speaking_taker()
    before = taker.voice_s
    loud = pcm(0.1 * np.sin(2 * np.pi * 220 * np.arange(320) / RATE))  # 20 ms of the next frame
    taker.note_unscored(scored_until + 0.020, loud)
    # Judged in whole 8 ms hops: two of the 20 ms count now, the rest with the next audio.
    extended = taker.voice_s
    assert extended == pytest.approx(before + 2 * HOP_S, abs=1e-6)
    # Noting the same audio again does not count it twice.
    taker.note_unscored(scored_until + 0.020, loud)
    assert taker.voice_s == extended


def test_quiet_unscored_audio_leaves_the_voice_to_the_vad() -> None:
    taker, scored_until = speaking_taker()
    before = taker.voice_s
    taker.note_unscored(scored_until + 0.020, pcm(np.zeros(320)))
    assert taker.voice_s == before


def test_unscored_audio_counts_only_while_the_vad_hears_speech() -> None:
    taker, voice_end = pause_after_voice(TurnTiming())
    before = taker.voice_s
    taker.note_unscored(voice_end + 0.2, pcm(0.1 * np.sin(np.arange(320) / 5.0)))
    assert taker.state == "pausing" and taker.voice_s == before
    silent = TurnTaker(TurnTiming(), sample_rate=RATE)
    silent.note_unscored(0.5, pcm(0.1 * np.sin(np.arange(320) / 5.0)))
    assert silent.state == "silent" and silent.voice_s == 0.0


def test_onset_moves_forward_inside_a_vad_frame_that_starts_silent() -> None:
    # The VAD scores whole 32 ms frames: one that is half silence, half voice is speech from its start.
    audio = pcm(signal([(0.430, 1.0)]))
    edges = SpeechEdges(RATE, max_shift_s=0.12)
    vad_onset = at_byte(0.416)
    frame_end = vad_onset + FRAME * 2
    onset = edges.onset(audio[:frame_end], vad_onset, edges.threshold_dbfs(audio, vad_onset))
    assert vad_onset < onset and abs(onset - at_byte(0.430)) <= at_byte(HOP_S)
