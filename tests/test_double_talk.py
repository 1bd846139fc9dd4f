"""DoubleTalk: someone speaks over the agent when the canceller, and a linear filter beside it, removed little."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from convers.double_talk import SETTLE_S, DoubleTalk
from convers.linear_echo import LinearEchoFilter

RATE = 16000
BLOCK = 160  # 10 ms, a WebRTC block
BLOCK_S = BLOCK / RATE


def noise(level: float, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(BLOCK) * level


def pcm(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


class Room:
    """Plays noise at `played`; the microphone hears it 3 ms later at half the level, plus a person at `person`."""

    def __init__(self, followable: bool = True) -> None:
        self.detector = DoubleTalk(BLOCK_S, LinearEchoFilter(RATE, BLOCK))
        self.blocks = 0
        self._last = np.zeros(BLOCK)
        # False: what the microphone hears of the agent is nothing a linear filter of what was played
        # can model (as with two clocks far apart): a sound as loud as the echo, unrelated to it.
        self.followable = followable

    def run(self, seconds: float, played: float, person: float, cleaned: float | None) -> list[bool]:
        """`cleaned`: the level of what the canceller let through (None: the person, as they are)."""
        verdicts = []
        for _ in range(round(seconds / BLOCK_S)):
            self.blocks += 1
            out = noise(played, self.blocks)
            echo = 0.5 * np.concatenate([self._last[-48:], out[:-48]])
            if not self.followable:
                echo = noise(played * 0.5, 30_000 + self.blocks)
            self._last = out
            voice = noise(person, 10_000 + self.blocks)
            self.detector.played(pcm(out), audible=played > 0)
            left = voice if cleaned is None else noise(cleaned, 20_000 + self.blocks)
            self.detector.heard(pcm(echo + voice), pcm(left))
            verdicts.append(self.detector.now)
        return verdicts


def test_echo_the_canceller_removes_is_no_double_talk() -> None:
    room = Room()
    assert not any(room.run(3.0, played=0.1, person=0.0, cleaned=0.0001))  # 60 dB removed


def test_a_voice_over_the_agent_is_double_talk_within_a_window() -> None:
    room = Room()
    room.run(3.0, played=0.1, person=0.0, cleaned=0.0001)
    verdicts = room.run(0.1, played=0.1, person=0.05, cleaned=None)
    assert verdicts[-1] and sum(verdicts) >= len(verdicts) - 3  # within one window (30 ms)


def test_no_cue_while_the_linear_filter_does_not_follow_the_agents_echo(caplog: pytest.LogCaptureFixture) -> None:
    room = Room(followable=False)
    with caplog.at_level(logging.INFO, logger="convers.double_talk"):
        room.run(5.0, played=0.1, person=0.0, cleaned=0.0001)
        # Its test ("removed little") passes for the agent's echo alone too: it says nothing of a person.
        assert not any(room.run(0.3, played=0.1, person=0.05, cleaned=None))
    assert not room.detector.witness_follows_echo
    assert caplog.text.count("does not follow this room's echo") == 1
    # Where it follows, the same person is a cue (test_a_voice_over_the_agent_is_double_talk_within_a_window).
    followed = Room()
    followed.run(5.0, played=0.1, person=0.0, cleaned=0.0001)
    assert followed.detector.witness_follows_echo
    assert followed.run(0.3, played=0.1, person=0.05, cleaned=None)[-1]


def test_after_the_echo_moved_the_cue_waits_until_the_witness_follows_again() -> None:
    room = Room()
    room.run(5.0, played=0.1, person=0.0, cleaned=0.0001)
    assert room.detector.witness_follows_echo
    room.detector.echo_moved()  # a sound device lost samples: what it removed before says nothing now
    assert not room.detector.witness_follows_echo
    assert not room.run(0.3, played=0.1, person=0.05, cleaned=None)[-1]
    room.run(2.0, played=0.1, person=0.0, cleaned=0.0001)
    assert room.detector.witness_follows_echo


def test_echo_the_canceller_lets_through_is_no_double_talk_when_the_linear_filter_removes_it() -> None:
    room = Room()
    room.run(3.0, played=0.1, person=0.0, cleaned=0.0001)
    # The canceller lets the agent through for a moment (a level a person would have): the linear
    # filter beside it still explains the microphone, so it is not a person.
    assert not any(room.run(0.3, played=0.1, person=0.0, cleaned=0.03))


def test_not_trusted_in_the_agents_first_moments_after_a_silence() -> None:
    room = Room()
    room.run(3.0, played=0.1, person=0.0, cleaned=0.0001)
    room.run(0.5, played=0.0, person=0.0, cleaned=0.0)  # the agent pauses between replies
    assert not any(room.run(SETTLE_S - 0.1, played=0.1, person=0.05, cleaned=None))
    assert room.run(0.2, played=0.1, person=0.05, cleaned=None)[-1]


def test_room_noise_that_passes_the_canceller_unchanged_is_no_double_talk() -> None:
    room = Room()
    # Quiet agent speech over a fan: little of the microphone is echo, so little is removed, but the
    # cleaned audio stays at its floor.
    assert not any(room.run(3.0, played=0.005, person=0.004, cleaned=0.004))


def test_nothing_is_double_talk_while_the_agent_is_silent() -> None:
    room = Room()
    assert not any(room.run(2.0, played=0.0, person=0.1, cleaned=None))


def test_without_the_linear_witness_there_is_no_cue() -> None:
    detector = DoubleTalk(BLOCK_S, None)
    for index in range(300):
        detector.played(pcm(noise(0.1, index)), audible=True)
        detector.heard(pcm(noise(0.1, index + 1)), pcm(noise(0.1, index + 2)))
        assert not detector.now


def test_a_machine_without_libspeexdsp_gets_no_cue_and_is_told_why(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def missing(*_: object) -> LinearEchoFilter:
        raise ImportError("the double-talk witness needs libspeexdsp")

    monkeypatch.setattr("convers.double_talk.LinearEchoFilter", missing)
    with caplog.at_level(logging.INFO, logger="convers.double_talk"):
        detector = DoubleTalk.for_blocks(RATE, BLOCK)
    assert detector.witness is None
    assert "libspeexdsp" in caplog.text


def test_the_linear_filter_removes_an_echo_it_has_learnt() -> None:
    witness = LinearEchoFilter(RATE, BLOCK)
    previous = np.zeros(BLOCK)
    heard, left = [], []
    for index in range(300):
        out = noise(0.1, index)
        echo = 0.5 * np.concatenate([previous[-48:], out[:-48]])
        previous = out
        residual = witness.residual(pcm(echo), pcm(out))
        if index >= 200:
            heard.append(np.mean(echo**2))
            left.append(np.mean((np.frombuffer(residual, dtype="<i2") / 32768) ** 2))
    assert 10 * np.log10(sum(heard) / sum(left)) > 15


class CountingFilter(LinearEchoFilter):
    """The real filter, counting the blocks it is asked about."""

    calls = 0

    def residual(self, mic: bytes, played: bytes) -> bytes:
        self.calls += 1
        return super().residual(mic, played)


def test_the_linear_filter_rests_while_the_agent_is_long_silent() -> None:
    room = Room()
    witness = CountingFilter(RATE, BLOCK)
    room.detector.witness = witness
    room.run(1.0, played=0.1, person=0.0, cleaned=0.0001)
    during_speech = witness.calls
    room.run(3.0, played=0.0, person=0.05, cleaned=None)  # the person talks; the agent is silent
    assert witness.calls - during_speech <= round(1.0 / BLOCK_S) + 1  # only while its echo could linger
    resting = witness.calls
    room.run(0.5, played=0.1, person=0.0, cleaned=0.0001)
    assert witness.calls - resting == round(0.5 / BLOCK_S)


def test_the_double_talk_cue_waits_for_the_agent_again_after_a_reconnection() -> None:
    room = Room()
    room.run(3.0, played=0.1, person=0.0, cleaned=0.0001)
    room.detector.new_stream()
    # The agent speaks on, a person over it at once: not trusted until SETTLE_S of agent speech...
    early = room.run(SETTLE_S - 0.1, played=0.1, person=0.05, cleaned=None)
    assert not any(early)
    # ... then it is (without new_stream the first window already said so: test_a_voice_over_the_agent_is_double_talk_within_a_window).
    assert room.run(0.2, played=0.1, person=0.05, cleaned=None)[-1]


def test_a_faint_sound_far_under_the_agents_echo_is_no_double_talk() -> None:
    # Between two words the microphone holds only the reverberation's fading tail, which neither
    # filter removes much of; it is far quieter than the echo of the words around it.
    room = Room()
    room.run(3.0, played=0.1, person=0.0, cleaned=0.0001)
    assert not any(room.run(0.3, played=0.002, person=0.002, cleaned=None))
    # The same sound as loud as the agent's echo is a person.
    assert room.run(0.1, played=0.002, person=0.05, cleaned=None)[-1]


@pytest.mark.parametrize("burst", [1, 4])
def test_the_witness_follows_a_speaker_that_runs_ahead_of_the_microphone(burst: int) -> None:
    # As through PulseAudio (`convers bench pulse-room`): the speaker's callback has handed over 170 ms
    # more than the microphone has heard, in bursts, and the echo is 60 ms behind the newest block
    # played. Paired in order, the microphone met blocks older than its echo and the witness removed
    # nothing (0 dB there); now it keeps up with the newest block and removes most of the echo.
    detector = DoubleTalk(BLOCK_S, LinearEchoFilter(RATE, BLOCK))
    ahead, behind = 17, 6
    signal = [noise(0.1, index) for index in range(600)]
    played = 0
    heard, left = [], []
    for index in range(600 - ahead - burst):
        while played < index + ahead + (burst - index % burst):
            detector.played(pcm(signal[played]), audible=True)
            played += 1
        echo = 0.5 * signal[index + ahead - behind]
        detector.heard(pcm(echo), pcm(echo * 0.001))
        if index >= 400:
            heard.append(np.mean(echo**2))
            left.append(np.mean((np.frombuffer(detector.residual or b"", dtype="<i2") / 32768) ** 2))
    assert 10 * np.log10(sum(heard) / sum(left)) > 15


def test_a_small_lead_of_the_speaker_is_left_as_it_is() -> None:
    # Up to MAX_LEAD_S it is also how late the event loop got to the microphone, which comes and goes
    # with the load: realigning on it would make the filter learn a new alignment again and again.
    detector = DoubleTalk(BLOCK_S, LinearEchoFilter(RATE, BLOCK))
    for index in range(300):
        while index % 3 == 0 and len(detector._queued) < 3:
            detector.played(pcm(noise(0.1, index)), audible=True)
        detector.played(pcm(noise(0.1, index)), audible=True)
        detector.heard(pcm(noise(0.05, index)), pcm(noise(0.0001, index)))
    assert detector.realignments == 0


def test_the_witness_says_how_much_of_a_stretch_was_the_agents_echo() -> None:
    room = Room()
    room.run(3.0, played=0.1, person=0.0, cleaned=0.0001)
    echo_only = room.detector.witness_removed_db(0.3)
    room.run(0.3, played=0.1, person=0.05, cleaned=None)  # a person as loud as the echo
    over_person = room.detector.witness_removed_db(0.3)
    assert echo_only is not None and echo_only > 15
    assert over_person is not None and over_person < 6
    # The same echo-only stretch, asked about once it lies 0.3 s back.
    assert room.detector.witness_removed_db(0.3, ago_s=0.3) == pytest.approx(echo_only)


def test_once_the_agents_echo_has_died_away_the_witness_explains_nothing() -> None:
    room = Room()
    room.run(3.0, played=0.1, person=0.0, cleaned=0.0001)
    room.run(1.5, played=0.0, person=0.05, cleaned=None)  # the agent silent: a person alone
    assert room.detector.witness_removed_db(0.3) == pytest.approx(0.0)


def test_without_a_witness_or_audio_nothing_is_said() -> None:
    assert DoubleTalk(BLOCK_S, None).witness_removed_db(0.3) is None
    assert DoubleTalk(BLOCK_S, LinearEchoFilter(RATE, BLOCK)).witness_removed_db(0.3) is None
