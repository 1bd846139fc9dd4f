"""BargeInArbiter: decides what user speech over the agent does to the agent's turn.

Pure and synchronous, like `TurnTaker`: it is told what happened (turn events, how long the voice
has lasted, the transcript's verdict, a played report, the time) and returns actions; it keeps no
clock and starts no task. The session owns the tasks and applies the actions, in order.

Paths (BargeInPolicy in policies.py holds every knob):
- onset over an audible reply -> `Pause` at once (the client keeps the audio);
- the voice lasts `min_barge_in_speech_s` -> `Cut` (cancel and flush), keeping the unheard rest;
- while the client's echo canceller is still learning the room (`echo_learning`), an onset pauses
  nothing and the cut waits for `min_barge_in_speech_while_echo_learning_s`: the echo it lets
  through then sounds like a person for a moment, a person does not stop after a moment; such
  speech that ends before the cut (`ended_suspect`) is echo unless it lasted
  `echo_learning_person_min_s` and its transcript is not mostly the agent's own words
  (engine/barge_in/own_words.py; Whisper writes "Thank you." or runs of the agent's words for echo)
  and the microphone's own audio of it, read as well (`wants_microphone_reading`), is not mostly
  the agent's words either: then it is a person's turn (`StartReply`);
- once the canceller has learnt the room, speech over the agent of which the linear echo filter
  explained `echo_witness_removed_db` or more (engine/barge_in/echo_witness.py, passed in as
  `echo_removed_db`) is the agent's own echo, let through by the canceller's suppressor: its onset
  pauses nothing, it cuts nothing while that holds, and when it ends it is not a turn
  (`ended_echo`: not transcribed; a pause resumes, "echo");
- once the canceller has learnt the room, it may say someone speaks over the agent before the VAD
  does (`double_talk`, see convers.double_talk): -> `Pause` at once; if no onset follows within
  `double_talk_hold_s` of the last such frame -> `Resume` ("noise"), and the cue rests for
  `double_talk_rest_s`;
- the onset drops (a cough) -> `Resume` ("noise");
- a short turn ends: the pause holds until its transcript says: words -> `StartReply` (which
  replaces the reply); nothing or only a backchannel -> `Resume` ("no_words") and, if a cut left
  an unheard rest, `Restart` it; a failed transcription -> nothing now, the timeout decides;
- a pause nothing has settled after `false_interruption_timeout_s`, with the user silent and no
  transcription pending -> `Resume` ("timeout"), judged at `tick(now)`.

The reply is read through `ReplyView` at each call, so the arbiter never holds a stale copy of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from convers.contracts.audio import AudioFrame
from convers.engine.barge_in.own_words import own_words_share
from convers.engine.listening.turn_taking import (
    SpeechDropped,
    SpeechOnset,
    TurnEvent,
    UserTurnEnded,
)
from convers.engine.listening.verdict import Verdict
from convers.policies import BargeInPolicy

# Float slack when comparing clock differences to the timeout.
_EPSILON_S = 1e-6



class ReplyView(Protocol):
    """What the arbiter reads of the agent turn the client is hearing (engine/session/agent_turn.py AgentTurn)."""

    turn: int
    played_ms: float
    settled: bool

    @property
    def generating(self) -> bool: ...

    @property
    def audio_ms(self) -> float: ...

    def unheard_text(self) -> str: ...

    def said_text(self) -> str: ...


@dataclass(frozen=True)
class Pause:
    """Stop the speaker for `turn`, keeping its audio."""

    turn: int


@dataclass(frozen=True)
class Resume:
    """Play the paused `turn` on from where it stopped."""

    turn: int
    reason: Literal["noise", "no_words", "timeout", "echo"]


@dataclass(frozen=True)
class Cut:
    """Cancel the reply of `turn` and flush its audio: the user is really talking."""

    turn: int
    # When the interrupting voice started (for onset_to_flush_ms).
    onset_at: float
    reason: str = "barge_in"


@dataclass(frozen=True)
class Restart:
    """Say `text` (the unheard rest of a reply cut by speech without words) as a new agent turn."""

    text: str


@dataclass(frozen=True)
class StartReply:
    """The user's turn had words: it replaces whatever the agent says."""

    text: str


@dataclass(frozen=True)
class PlayedOut:
    """The client has played all of `turn` and it is fully generated: the agent turn is over."""

    turn: int


Action = Pause | Resume | Cut | Restart | StartReply | PlayedOut


@dataclass(frozen=True)
class SuspectEcho:
    """A user turn that began over the agent while the echo canceller learnt and ended before the cut."""

    # From the start of the first piece it joins (see `since`) to its end.
    speech_s: float
    # What the agent had put into words in the reply it spoke over (its echo repeats these).
    said: str
    # When it began within `echo_learning_join_gap_s` of the previous such turn's end: the audio of
    # the first piece of that run, from whose start they are judged and read as one; else None.
    since: AudioFrame | None = None


# The client reports what it played in whole milliseconds: within this of the end counts as the end.
PLAYED_TOLERANCE_MS = 1.0


def played_to_end(played_ms: float, audio_ms: float) -> bool:
    """Whether the client's `played` report reached the end of the audio sent (the one rule for it)."""
    return played_ms + PLAYED_TOLERANCE_MS >= audio_ms


def _speaking(reply: ReplyView | None) -> bool:
    if reply is None or reply.settled:
        return False
    return reply.generating or not played_to_end(reply.played_ms, reply.audio_ms)


class BargeInArbiter:
    """Turns user speech over the agent into pause / resume / cut / restart (see the module docstring)."""

    def __init__(self, policy: BargeInPolicy | None = None) -> None:
        self.policy = policy or BargeInPolicy()
        # Where the voice being judged started; None when no speech over the agent is being judged.
        self._onset_at: float | None = None
        self._paused_turn: int | None = None
        self._paused_at = 0.0
        # Between an onset and its drop or turn end the user is talking.
        self._user_active = False
        # User turns ended but not yet transcribed: a paused reply waits for their verdict.
        self._transcribing = 0
        # The unheard rest of the reply last cut, until a verdict says whether the cut was real.
        self._unheard: str | None = None
        # The speech being judged began over the agent while the echo canceller was learning.
        self._onset_while_learning = False
        # The user turn that ended last was such speech, shorter than the cut: its transcript decides.
        self.ended_suspect: SuspectEcho | None = None
        # The user turn that ended last began over the agent and was its echo, by the linear filter:
        # it is not transcribed (`transcribed` is not called for it).
        self.ended_echo = False
        # The run of such turns that ended last: where it began, when it ended, its first piece's audio.
        self._suspect_run: tuple[float, float, AudioFrame] | None = None
        # A pause on the canceller's double-talk cue that no speech onset has confirmed yet resumes
        # at this time, unless the cue goes on. Only read while that pause stands: every onset
        # clears it and every double-talk pause sets it, so no other path needs to.
        self._unconfirmed_until: float | None = None
        # After such a pause resumed unconfirmed, the cue is not trusted again until this time.
        self._cue_rests_until = float("-inf")

    @property
    def judging(self) -> bool:
        """Speech over the agent is being judged now (live decoding may give the VAD the CPU)."""
        return self._onset_at is not None

    @property
    def paused_turn(self) -> int | None:
        """The turn whose playback is paused by this arbiter, if any."""
        return self._paused_turn

    def heard(self, event: TurnEvent, reply: ReplyView | None, echo_learning: bool = False,
              echo_removed_db: float | None = None) -> list[Action]:
        """One TurnTaker event, with the reply as it is now, whether the echo canceller is learning and
        how much of the event's audio its linear filter explained as echo (dB; onset: the last
        `echo_witness.ONSET_WITNESS_S`; turn end: the utterance; None when unknown)."""
        if isinstance(event, SpeechOnset):
            self._user_active = True
            self._unconfirmed_until = None
            if not (self.policy.enabled and _speaking(reply)):
                return []
            assert reply is not None
            self._onset_at = event.started_at
            self._onset_while_learning = echo_learning
            if (self.policy.pause_on_onset and not echo_learning and not self._echo(echo_removed_db)
                    and self._paused_turn != reply.turn):
                self._paused_turn = reply.turn
                self._paused_at = event.at
                return [Pause(reply.turn)]
            return []
        if isinstance(event, SpeechDropped):
            # Too short to be a turn: a click or a cough. The paused reply carries on where it was.
            self._user_active = False
            judged, self._onset_at = self._onset_at, None
            return self._resume(reply, "noise") if judged is not None else []
        if isinstance(event, UserTurnEnded):
            # Ended short of the barge-in minimum: the pause holds until the transcript's verdict.
            self._user_active = False
            over_agent = self._onset_at is not None
            self.ended_echo = over_agent and not self._onset_while_learning and self._echo(echo_removed_db)
            self.ended_suspect = self._suspect(event, reply) if over_agent and self._onset_while_learning else None
            if self.ended_suspect is None:
                self._suspect_run = None
            self._onset_at = None
            if self.ended_echo:
                return self._resume(reply, "echo")
            self._transcribing += 1
        return []

    def double_talk(self, probability: float, at: float, reply: ReplyView | None, echo_learning: bool = False) -> list[Action]:
        """The echo canceller says someone speaks over the agent now; `probability` is the VAD's latest score."""
        policy = self.policy
        if (not (policy.enabled and policy.pause_on_onset and policy.pause_on_double_talk) or echo_learning
                or probability < policy.double_talk_min_probability or not _speaking(reply)
                or at < self._cue_rests_until):
            return []
        assert reply is not None
        if self._paused_turn == reply.turn:
            if self._unconfirmed_until is not None:
                self._unconfirmed_until = at + policy.double_talk_hold_s
            return []
        if self._onset_at is not None:
            return []  # the VAD heard this voice already and chose not to pause
        self._paused_turn = reply.turn
        self._paused_at = at
        self._unconfirmed_until = at + policy.double_talk_hold_s
        return [Pause(reply.turn)]

    def voice(self, voice_s: float, reply: ReplyView | None, echo_learning: bool = False,
              echo_removed_db: float | None = None) -> list[Action]:
        """How long the voice has lasted after a frame's events: past the minimum, the reply is cut,
        unless the linear echo filter explained that voice as echo (`echo_removed_db`, over `voice_s`)."""
        if self._onset_at is None or reply is None or reply.settled:
            return []
        policy = self.policy
        if voice_s < (policy.min_barge_in_speech_while_echo_learning_s if echo_learning else policy.min_barge_in_speech_s):
            return []
        if not echo_learning and self._echo(echo_removed_db):
            return []
        onset_at, self._onset_at = self._onset_at, None
        self._onset_while_learning = False
        # Kept in case the interruption turns out to be only "mm-hm".
        self._unheard = reply.unheard_text() or None
        if self._paused_turn == reply.turn:
            self._paused_turn = None
        return [Cut(reply.turn, onset_at=onset_at)]

    def wants_microphone_reading(self, verdict: Verdict, text: str, suspect: SuspectEcho | None) -> bool:
        """Whether an ended turn's transcript leaves it to the microphone's own audio of the turn to say
        whether a person spoke (then read it, and pass its transcript to `transcribed`)."""
        return suspect is not None and self._a_person(verdict, text, suspect)

    def transcribed(self, verdict: Verdict, text: str, reply: ReplyView | None,
                    suspect: SuspectEcho | None = None, microphone_text: str | None = None) -> list[Action]:
        """The verdict on one ended user turn (one call per `UserTurnEnded`, failed ones included);
        `suspect`: what `ended_suspect` said when that turn ended; `microphone_text`: the transcript of
        the microphone's own audio of it, when `wants_microphone_reading` asked for one."""
        self._transcribing = max(0, self._transcribing - 1)
        if suspect is not None and not self._a_person(verdict, text, suspect, microphone_text):
            return []  # the canceller's first echo of the agent (see the module docstring): nothing to do
        if verdict == "failed":
            return []  # no verdict: the timeout decides
        if verdict == "words":
            self._unheard = None
            self._paused_turn = None  # the new turn replaces the paused one
            return [StartReply(text)]
        actions = self._resume(reply, "no_words")
        # Restart rather than resume: by now the cut turn's audio is flushed on the client, so the
        # unheard text is synthesised again from the start of its chunk.
        rest, self._unheard = self._unheard, None
        if rest:
            actions.append(Restart(rest))
        return actions

    def _echo(self, echo_removed_db: float | None) -> bool:
        """The linear echo filter explained the voice as the agent's own echo (only asked once the canceller has learnt)."""
        return echo_removed_db is not None and echo_removed_db >= self.policy.echo_witness_removed_db

    def _suspect(self, ended: UserTurnEnded, reply: ReplyView | None) -> SuspectEcho:
        """The turn that just ended began over the agent while the canceller learnt: what to judge it by."""
        run = self._suspect_run
        if run is not None and ended.started_at - run[1] <= self.policy.echo_learning_join_gap_s:
            start, first, since = run[0], run[2], run[2]
        else:
            start, first, since = ended.started_at, ended.audio, None
        self._suspect_run = (start, ended.ended_at, first)
        return SuspectEcho(ended.ended_at - start, reply.said_text() if reply is not None else "", since)

    def _a_person(self, verdict: Verdict, text: str, suspect: SuspectEcho, microphone_text: str | None = None) -> bool:
        """Speech that began over the agent while the canceller learnt: a person's words, not the echo."""
        policy = self.policy
        if verdict != "words" or suspect.speech_s < policy.echo_learning_person_min_s:
            return False
        if own_words_share(text, suspect.said) >= policy.echo_learning_own_words_max:
            return False
        # The linear filter's residual holds echo it has not yet learnt garbled past recognising; the
        # microphone holds it whole, and read from there it is the agent's words. (No words there:
        # no reading, not an echo.)
        return not (microphone_text and microphone_text.strip()
                    and own_words_share(microphone_text, suspect.said) >= policy.echo_learning_microphone_own_words_min)

    def played(self, reply: ReplyView | None) -> list[Action]:
        """A played report has reached `reply.played_ms`."""
        if reply is None or reply.settled or reply.generating or not played_to_end(reply.played_ms, reply.audio_ms):
            return []
        return [PlayedOut(reply.turn)]

    def tick(self, now: float, reply: ReplyView | None) -> list[Action]:
        """The session's clock at an inbound frame: a pause left unsettled too long resumes."""
        if self._paused_turn is None:
            return []
        if reply is None or reply.turn != self._paused_turn:
            self._paused_turn = None  # cut or replaced already
            return []
        if self._unconfirmed_until is not None:
            if now + _EPSILON_S < self._unconfirmed_until or self._onset_at is not None:
                return []
            self._unconfirmed_until = None
            self._cue_rests_until = now + self.policy.double_talk_rest_s
            return self._resume(reply, "noise")
        if now - self._paused_at + _EPSILON_S < self.policy.false_interruption_timeout_s:
            return []
        if self._user_active or self._transcribing:
            return []  # the user is still talking, or their words are being transcribed: those decide
        return self._resume(reply, "timeout")

    def _resume(self, reply: ReplyView | None, reason: Literal["noise", "no_words", "timeout", "echo"]) -> list[Action]:
        if reply is None or self._paused_turn != reply.turn or reply.settled:
            return []
        self._paused_turn = None
        return [Resume(reply.turn, reason)]
