"""LearningSpeech: the audio a turn over the agent is read from while the echo canceller learns."""

from __future__ import annotations

from convers.contracts.audio import AudioFrame
from convers.engine.barge_in.arbiter import SuspectEcho
from convers.engine.barge_in.learning_speech import LearningSpeech

RATE = 16000


def piece(seconds: float) -> AudioFrame:
    return AudioFrame(bytes(round(seconds * RATE) * 2), RATE)


class Residuals:
    """The transport's `echo_unsuppressed`: records what it was asked for, answers a frame of its own."""

    def __init__(self) -> None:
        self.asked: list[tuple[AudioFrame, AudioFrame | None]] = []
        self.answer = piece(9.0)

    def __call__(self, audio: AudioFrame, since: AudioFrame | None) -> AudioFrame | None:
        self.asked.append((audio, since))
        return self.answer


def suspect(since: AudioFrame | None = None) -> SuspectEcho:
    return SuspectEcho(speech_s=0.5, said="Welcome back", since=since)


def test_speech_that_did_not_begin_over_a_learning_canceller_is_read_as_heard() -> None:
    speech, residuals = LearningSpeech(), Residuals()
    speech.onset(False)
    assert speech.ended(piece(1.0), None, residuals) is None and not residuals.asked


def test_speech_over_a_learning_canceller_is_read_from_the_residual_cut_or_not() -> None:
    speech, residuals = LearningSpeech(), Residuals()
    first = piece(0.4)
    speech.onset(True)
    assert speech.ended(first, suspect(), residuals) is residuals.answer
    speech.onset(True)
    long_one = piece(3.0)
    assert speech.ended(long_one, None, residuals) is residuals.answer  # cut: no suspect, still the residual
    assert residuals.asked == [(first, None), (long_one, None)]


def test_pieces_the_arbiter_joins_are_read_from_the_start_of_the_first() -> None:
    speech, residuals = LearningSpeech(), Residuals()
    pieces = [piece(0.2), piece(0.3), piece(0.4)]
    for index, audio in enumerate(pieces):
        speech.onset(True)
        speech.ended(audio, suspect(since=pieces[0] if index > 0 else None), residuals)
    assert residuals.asked == [(pieces[0], None), (pieces[1], pieces[0]), (pieces[2], pieces[0])]


def test_without_a_residual_at_hand_the_cleaned_audio_is_read() -> None:
    speech = LearningSpeech()
    speech.onset(True)
    assert speech.ended(piece(1.0), suspect(), None) is None


def test_a_failing_residual_lookup_costs_only_the_better_reading() -> None:
    def broken(audio: AudioFrame, since: AudioFrame | None) -> AudioFrame | None:
        raise RuntimeError("canceller gone")

    speech = LearningSpeech()
    speech.onset(True)
    assert speech.ended(piece(1.0), suspect(), broken) is None
