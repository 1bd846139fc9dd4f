"""BargeInArbiter as tables: a scripted timeline of inputs, each with the actions it must give.

Time is whatever the rows say (seconds on the session's clock); no task, no sleep.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from convers.contracts.audio import AudioFrame
from convers.engine.barge_in.arbiter import (
    Action,
    BargeInArbiter,
    Cut,
    Pause,
    PlayedOut,
    Restart,
    Resume,
    StartReply,
    SuspectEcho,
)
from convers.engine.listening.turn_taking import (
    SpeechDropped,
    SpeechOnset,
    SpeechPaused,
    SpeechResumed,
    SpeechStarted,
    UserTurnEnded,
)
from convers.engine.listening.verdict import Verdict, verdict_of
from convers.policies import BargeInPolicy

REST = "and the rest of it."


@dataclass
class Reply:
    """The agent turn as the arbiter sees it: turn 1, 2 s of audio, the client 0.5 s in."""

    turn: int = 1
    played_ms: float = 500.0
    settled: bool = False
    generating: bool = True
    audio_ms: float = 2000.0

    def unheard_text(self) -> str:
        return REST

    def said_text(self) -> str:
        return "The kettle is on."


class Timeline:
    """The reply of the moment; `None` once the session has cut or replaced it."""

    def __init__(self) -> None:
        self.reply: Reply | None = Reply()


Step = Callable[[BargeInArbiter, Timeline], list[Action]]


def onset(at: float, removed_db: float | None = None, learning: bool = False) -> Step:
    """A speech onset; `removed_db`: how much of it the linear echo filter explained as the agent's echo."""
    return lambda arbiter, t: arbiter.heard(SpeechOnset(at=at, started_at=at - 0.02), t.reply, learning, removed_db)


def started(at: float) -> Step:
    return lambda arbiter, t: arbiter.heard(SpeechStarted(at=at, started_at=at - 0.15), t.reply)


def dropped(at: float) -> Step:
    return lambda arbiter, t: arbiter.heard(SpeechDropped(at=at, speech_s=0.08), t.reply)


def paused(at: float) -> Step:
    return lambda arbiter, t: arbiter.heard(SpeechPaused(at=at, speech_ended_at=at - 0.02, speech_s=0.2), t.reply)


def resumed(at: float) -> Step:
    return lambda arbiter, t: arbiter.heard(SpeechResumed(at=at, paused_s=0.2), t.reply)


def ended(at: float, removed_db: float | None = None) -> Step:
    audio = AudioFrame(b"\x00\x00" * 160, 16000)
    event = UserTurnEnded(at=at, audio=audio, started_at=at - 0.7, ended_at=at - 0.5)
    return lambda arbiter, t: arbiter.heard(event, t.reply, False, removed_db)


def double_talk(at: float, probability: float = 0.3, learning: bool = False) -> Step:
    """The echo canceller says someone speaks over the agent; the VAD's latest score is `probability`."""
    return lambda arbiter, t: arbiter.double_talk(probability, at, t.reply, learning)


def voice(seconds: float, removed_db: float | None = None) -> Step:
    return lambda arbiter, t: arbiter.voice(seconds, t.reply, False, removed_db)


def verdict(kind: Verdict, text: str = "") -> Step:
    return lambda arbiter, t: arbiter.transcribed(kind, text, t.reply)


def tick(now: float) -> Step:
    return lambda arbiter, t: arbiter.tick(now, t.reply)


def played(ms: float) -> Step:
    def step(arbiter: BargeInArbiter, t: Timeline) -> list[Action]:
        assert t.reply is not None
        t.reply.played_ms = ms
        return arbiter.played(t.reply)

    return step


def reply_is(**changes: object) -> Step:
    """The session changed the reply: generation ended, it settled, or it was cut (`gone=True`)."""

    def step(arbiter: BargeInArbiter, t: Timeline) -> list[Action]:
        if changes.pop("gone", False):
            t.reply = None
        elif "turn" in changes and t.reply is not None and changes["turn"] != t.reply.turn:
            t.reply = Reply(turn=int(changes.pop("turn")), **changes)  # type: ignore[arg-type]
        else:
            assert t.reply is not None
            for name, value in changes.items():
                setattr(t.reply, name, value)
        return []

    return step


def play(rows: list[tuple[Step, list[Action]]], policy: BargeInPolicy | None = None) -> None:
    arbiter = BargeInArbiter(policy or BargeInPolicy(min_barge_in_speech_s=0.25, false_interruption_timeout_s=1.0))
    timeline = Timeline()
    for index, (step, expected) in enumerate(rows):
        assert step(arbiter, timeline) == expected, f"row {index}"


CUT = Cut(1, onset_at=-0.02)

TABLES: dict[str, list[tuple[Step, list[Action]]]] = {
    "a cough pauses, then resumes where it stopped": [
        (onset(0.0), [Pause(1)]),
        (voice(0.06), []),
        (dropped(0.1), [Resume(1, "noise")]),
        (tick(5.0), []),  # nothing left paused for the timeout
    ],
    "a short mm-hm resumes, nothing to restart": [
        (onset(0.0), [Pause(1)]),
        (started(0.15), []),
        (voice(0.2), []),
        (ended(0.7), []),
        (verdict("backchannel", "mm-hm"), [Resume(1, "no_words")]),
    ],
    "an mm-hm long enough to cut restarts the unheard rest": [
        (onset(0.0), [Pause(1)]),
        (started(0.15), []),
        (voice(0.24), []),
        (voice(0.25), [CUT]),
        (reply_is(gone=True), []),
        (ended(0.9), []),
        (verdict("backchannel", "mm-hm"), [Restart(REST)]),
        (verdict("nothing"), []),  # the rest is said once
    ],
    "a real interruption cuts, and its words start a reply": [
        (onset(0.0), [Pause(1)]),
        (started(0.15), []),
        (voice(0.3), [CUT]),
        (voice(0.4), []),  # cut once
        (reply_is(gone=True), []),
        (ended(1.2), []),
        (verdict("words", "stop please"), [StartReply("stop please")]),
        (tick(9.0), []),
    ],
    "a short turn with words replaces the paused reply": [
        (onset(0.0), [Pause(1)]),
        (ended(0.7), []),
        (tick(1.5), []),  # past the timeout, but its transcript is pending
        (verdict("words", "no"), [StartReply("no")]),
        (tick(2.0), []),  # the pause went with the replaced reply
    ],
    "an interruption during a pause does not pause again, and can cut": [
        (onset(0.0), [Pause(1)]),
        (ended(0.7), []),
        (onset(0.9), []),  # already paused
        (voice(0.25), [Cut(1, onset_at=0.88)]),
        (reply_is(gone=True), []),
        (verdict("nothing"), [Restart(REST)]),
    ],
    "an interruption during speculation: the pause holds while the user only pauses": [
        (onset(0.0), [Pause(1)]),
        (started(0.15), []),
        (voice(0.2), []),
        (paused(0.22), []),  # speculation starts here
        (tick(1.5), []),  # the user is mid-turn: no timeout
        (resumed(1.6), []),
        (voice(0.25), [CUT]),
    ],
    "after the reply ended there is nothing to pause or cut": [
        (reply_is(generating=False, played_ms=2000.0), []),
        (onset(0.0), []),
        (voice(0.5), []),
        (dropped(0.6), []),
    ],
    "a settled reply is never paused": [
        (reply_is(settled=True), []),
        (onset(0.0), []),
        (voice(0.5), []),
    ],
    "no reply at all": [
        (reply_is(gone=True), []),
        (onset(0.0), []),
        (voice(0.5), []),
        (ended(0.8), []),
        (verdict("backchannel", "mm"), []),
    ],
    "an STT failure during a pause resumes after the timeout": [
        (onset(0.0), [Pause(1)]),
        (ended(0.7), []),
        (tick(0.8), []),
        (verdict("failed"), []),
        (tick(0.99), []),
        (tick(1.0), [Resume(1, "timeout")]),
        (tick(2.0), []),
    ],
    "the timeout waits while the user is still talking": [
        (onset(0.0), [Pause(1)]),
        (started(0.15), []),
        (tick(1.2), []),
        (dropped(1.3), [Resume(1, "noise")]),
    ],
    "a pause of a reply that was replaced never resumes": [
        (onset(0.0), [Pause(1)]),
        (dropped(0.05), [Resume(1, "noise")]),
        (onset(0.1), [Pause(1)]),  # each pause starts its own timeout
        (tick(1.05), []),
        (reply_is(turn=2), []),
        (tick(1.2), []),
    ],
    "played to the end of a finished reply: the turn is over once": [
        (played(1500.0), []),
        (reply_is(generating=False), []),
        (played(1990.0), []),
        (played(1999.5), [PlayedOut(1)]),
        (reply_is(settled=True), []),
        (played(2000.0), []),
    ],
    "the canceller's double-talk cue pauses before the VAD's onset, which then confirms it": [
        (double_talk(-0.06), [Pause(1)]),
        (double_talk(-0.03), []),
        (onset(0.0), []),  # already paused
        (tick(0.5), []),  # confirmed: no early resume
        (voice(0.25), [CUT]),
    ],
    "a double-talk cue no onset confirms resumes once the cue has stopped for the hold time": [
        (double_talk(0.0), [Pause(1)]),
        (double_talk(0.2), []),  # the cue goes on: the hold starts again
        (tick(0.4), []),
        (tick(0.51), [Resume(1, "noise")]),
        (tick(5.0), []),
    ],
    "after an unconfirmed double-talk pause the cue rests, then works again": [
        (double_talk(0.0), [Pause(1)]),
        (tick(0.31), [Resume(1, "noise")]),
        (double_talk(0.4), []),  # resting: the same stretch of echo pauses nothing again
        (double_talk(2.2), []),
        (double_talk(2.4), [Pause(1)]),
    ],
    "by default a double-talk cue pauses whatever the VAD scores (the suppressor thins a first syllable)": [
        (double_talk(0.0, probability=0.0), [Pause(1)]),
    ],
    "a double-talk cue while the canceller is learning the room pauses nothing": [
        (double_talk(0.0, learning=True), []),
    ],
    "a double-talk cue over an agent that is not speaking does nothing": [
        (reply_is(generating=False, played_ms=2000.0), []),
        (double_talk(0.0), []),
    ],
    "echo the linear filter explains pauses nothing, cuts nothing and is no turn": [
        (onset(0.0, removed_db=23.0), []),
        (voice(0.3, removed_db=22.0), []),
        (voice(0.6, removed_db=20.0), []),
        (ended(1.2, removed_db=21.0), []),
        (tick(5.0), []),
    ],
    "a person the linear filter cannot explain pauses and cuts as ever": [
        (onset(0.0, removed_db=3.0), [Pause(1)]),
        (voice(0.3, removed_db=2.0), [CUT]),
    ],
    "echo that becomes a person: the cut waits until the filter no longer explains the voice": [
        (onset(0.0, removed_db=25.0), []),
        (voice(0.3, removed_db=14.0), []),
        (voice(0.4, removed_db=6.0), [CUT]),
    ],
    "a short turn over the agent that the filter explains resumes a pause it made": [
        (double_talk(-0.05), [Pause(1)]),
        (onset(0.0, removed_db=18.0), []),
        (ended(0.7, removed_db=15.0), [Resume(1, "echo")]),
        (verdict("words", "love all of us"), [StartReply("love all of us")]),  # never asked: see the test below
    ],
    "while the canceller learns the filter is not asked (it is learning too)": [
        (onset(0.0, removed_db=25.0, learning=True), []),
        (ended(0.7, removed_db=25.0), []),  # judged as speech over a learning canceller: by its transcript
        (verdict("words", "hello there"), [StartReply("hello there")]),
    ],
    "an onset that drops after a double-talk pause resumes as noise": [
        (double_talk(0.0), [Pause(1)]),
        (onset(0.03), []),
        (dropped(0.1), [Resume(1, "noise")]),
        (tick(5.0), []),
    ],
}


@pytest.mark.parametrize("name", list(TABLES))
def test_barge_in_paths(name: str) -> None:
    play(TABLES[name])


def test_echo_that_ended_is_marked_so_the_session_does_not_transcribe_it() -> None:
    arbiter = BargeInArbiter(BargeInPolicy())
    reply = Reply()
    audio = AudioFrame(b"\x00\x00" * 160, 16000)
    arbiter.heard(SpeechOnset(at=0.0, started_at=-0.02), reply, False, 20.0)
    arbiter.heard(UserTurnEnded(at=1.0, audio=audio, started_at=0.0, ended_at=0.6), reply, False, 20.0)
    assert arbiter.ended_echo
    arbiter.heard(SpeechOnset(at=2.0, started_at=1.98), reply, False, 2.0)
    arbiter.heard(UserTurnEnded(at=3.0, audio=audio, started_at=2.0, ended_at=2.6), reply, False, 2.0)
    assert not arbiter.ended_echo
    assert arbiter.transcribed("words", "wait", reply) == [StartReply("wait")]


def test_speech_over_a_learning_canceller_is_read_again_from_the_microphone_before_it_is_a_person() -> None:
    arbiter = BargeInArbiter(BargeInPolicy())
    reply = Reply()
    suspect = SuspectEcho(speech_s=1.4, said="I remember you love old films. Tonight there is a Hitchcock.")
    # The residual's reading is not the agent's words: the microphone's own audio is asked for ...
    assert arbiter.wants_microphone_reading("words", "the bill.", suspect)
    # ... and when it reads as the agent's words, it is echo.
    assert arbiter.transcribed("words", "the bill.", reply, suspect, "old films. Tonight there is a Hitchcock") == []
    assert arbiter.transcribed("words", "the bill.", reply, suspect, "what time is it") == [StartReply("the bill.")]
    assert arbiter.transcribed("words", "the bill.", reply, suspect, "") == [StartReply("the bill.")]
    # A reading that is echo already, or too short to be a person, needs no second one.
    assert not arbiter.wants_microphone_reading("words", "you love old films", suspect)
    assert not arbiter.wants_microphone_reading("words", "the bill.", SuspectEcho(speech_s=0.5, said=suspect.said))
    assert not arbiter.wants_microphone_reading("words", "the bill.", None)


def test_the_echo_threshold_is_the_policys() -> None:
    play([(onset(0.0, removed_db=23.0), [Pause(1)])], BargeInPolicy(echo_witness_removed_db=30.0))


def test_turned_off_it_never_pauses_or_cuts() -> None:
    play([(onset(0.0), []), (voice(1.0), []), (dropped(1.1), [])], BargeInPolicy(enabled=False))


def test_a_double_talk_cue_with_the_vad_under_a_set_minimum_pauses_nothing() -> None:
    play([(double_talk(0.0, probability=0.1), []), (tick(1.0), [])], BargeInPolicy(double_talk_min_probability=0.2))


def test_double_talk_pauses_nothing_when_switched_off() -> None:
    play([(double_talk(0.0), []), (onset(0.05), [Pause(1)])],
         BargeInPolicy(pause_on_double_talk=False, min_barge_in_speech_s=0.25))


def test_without_pause_on_onset_speech_still_cuts() -> None:
    play([(onset(0.0), []), (voice(0.25), [CUT])], BargeInPolicy(pause_on_onset=False, min_barge_in_speech_s=0.25))


def test_the_minimum_speech_is_the_policys() -> None:
    play([(onset(0.0), [Pause(1)]), (voice(0.39), []), (voice(0.4), [CUT])], BargeInPolicy(min_barge_in_speech_s=0.4))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "nothing"),
        ("   ", "nothing"),
        ("mm-hm.", "backchannel"),
        ("Uh-huh, mm!", "backchannel"),
        ("no", "words"),
        ("mm no", "words"),
        ("Stop.", "words"),
    ],
)
def test_verdict_of_a_transcript(text: str, expected: str) -> None:
    assert verdict_of(text, BargeInPolicy()) == expected


def test_backchannels_are_the_policys() -> None:
    assert verdict_of("okay", BargeInPolicy(backchannels=("okay",))) == "backchannel"
    assert verdict_of("mm", BargeInPolicy(backchannels=("okay",))) == "words"
