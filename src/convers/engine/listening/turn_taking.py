"""TurnTaker: decides from VAD scores when the user starts talking, pauses, resumes and is done.

Pure and synchronous: it is fed (probability, timestamp, frame) and returns events; it keeps no
clock and starts no task. Timestamps are the moment each frame was complete (its end), in seconds
on any monotonic clock, so a live listener passes `now` as frames arrive and a test passes a
scripted timeline. A frame covers [at - frame.duration_s, at].

Onset and end times are the VAD's, moved to where the audio got loud or quiet (back by at most
`refine_edges_max_s`, engine/listening/speech_edges.py), so `started_at` and `speech_ended_at` are when the
voice itself started and stopped.

States: silent -> onset (above the start threshold, not yet `min_speech_s` long) -> speaking ->
pausing (below the stop threshold after speech) -> speaking again or, after
`end_of_turn_silence_s`, a finished turn and silent again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from convers.audio import PcmRing
from convers.contracts.audio import AudioFrame
from convers.engine.listening.speech_edges import SpeechEdges
from convers.policies import TurnTiming

# Float slack when comparing accumulated frame times to thresholds: 25 x 0.02 s must reach 0.5 s.
_EPSILON_S = 1e-6

State = Literal["silent", "onset", "speaking", "pausing"]


@dataclass(frozen=True)
class SpeechOnset:
    """A frame rose above the start threshold: maybe speech. Pause the agent now, confirm later."""

    kind: ClassVar[str] = "speech_onset"
    at: float
    started_at: float


@dataclass(frozen=True)
class SpeechStarted:
    """The onset lasted `min_speech_s`: the user is talking."""

    kind: ClassVar[str] = "speech_started"
    at: float
    started_at: float


@dataclass(frozen=True)
class SpeechDropped:
    """The onset fell silent before `min_speech_s`: a click or a cough, not a turn."""

    kind: ClassVar[str] = "speech_dropped"
    at: float
    speech_s: float


@dataclass(frozen=True)
class SpeechPaused:
    """Silence after speech: the turn may be ending (a good moment to start speculative work)."""

    kind: ClassVar[str] = "speech_paused"
    at: float
    speech_ended_at: float
    speech_s: float


@dataclass(frozen=True)
class SpeechResumed:
    """Speech came back before the end-of-turn silence was reached: the pause was mid-turn."""

    kind: ClassVar[str] = "speech_resumed"
    at: float
    paused_s: float


@dataclass(frozen=True)
class UserTurnEnded:
    """The user's turn is over, by silence or because it reached `max_utterance_s`.

    `audio` holds the pre-roll, the whole utterance and up to `post_roll_s` after the last speech.
    `ended_at` is when speech stopped (not when the silence confirmed it: that is `at`).
    """

    kind: ClassVar[str] = "user_turn_ended"
    at: float
    audio: AudioFrame
    started_at: float
    ended_at: float
    reason: Literal["silence", "max_length"] = "silence"

    @property
    def speech_s(self) -> float:
        return self.ended_at - self.started_at


TurnEvent = SpeechOnset | SpeechStarted | SpeechDropped | SpeechPaused | SpeechResumed | UserTurnEnded


class TurnTaker:
    """Turns a stream of VAD probabilities into turn events (see the module docstring)."""

    def __init__(self, timing: TurnTiming | None = None, sample_rate: int = 16000) -> None:
        self.timing = timing or TurnTiming()
        self.sample_rate = sample_rate
        self._ring = PcmRing(round(self.timing.pre_roll_s * sample_rate))
        self._edges = SpeechEdges(sample_rate, self.timing.refine_edges_max_s)
        # What counts as voice for the edges, set from the pre-roll at each onset.
        self._voice_dbfs = self._edges.min_level_dbfs
        # Where in the utterance buffer the voice started (after the pre-roll).
        self._onset_bytes = 0
        # End of the last loud moment while the VAD called speech; None when loudness cannot tell
        # voice from the floor (a loud room, echo): durations then follow the VAD alone.
        self._voice_until: float | None = None
        self._utterance = bytearray()
        self.state: State = "silent"
        self._started_at = 0.0
        self._speech_ended_at = 0.0
        # Length of the utterance buffer when the current pause began: where speech stopped.
        self._speech_end_bytes = 0
        self._last_at = 0.0
        # The silence that ends the current pause as a turn: `end_of_turn_silence_s`, unless an
        # end-of-turn judge (engine/listening/end_of_turn.py) shortens or extends it for this pause.
        self.silence_needed_s = self.timing.end_of_turn_silence_s

    @property
    def pause_s(self) -> float:
        """How long the current pause has lasted since speech stopped (0 unless pausing)."""
        return self._last_at - self._speech_ended_at if self.state == "pausing" else 0.0

    @property
    def speech_s(self) -> float:
        """How long the current utterance has been going (0 when silent)."""
        return 0.0 if self.state == "silent" else self._last_at - self._started_at

    @property
    def voice_s(self) -> float:
        """How long the voice has lasted: from its onset to its last loud moment while the VAD
        called speech, up to the newest audio (`note_unscored`) (0 when silent). Where loudness
        cannot tell, the VAD's span (`speech_s`).

        This, not `speech_s`, is what `min_speech_s` and the barge-in minimum are held to: the
        VAD keeps calling speech for a frame or more after a cough, and the onset was moved back
        to the voice, so its span would make a 120 ms burst look like 250 ms of speech.
        """
        if self.state == "silent":
            return 0.0
        if self._voice_until is None:
            return self.speech_s
        return self._voice_until - self._started_at

    def utterance_since(self, offset: int) -> bytes:
        """PCM bytes of the current utterance from byte `offset` on ('' when silent): for live STT.

        During a pause only up to the post-roll: the rest of the silence is not part of the turn's
        audio unless speech resumes (then it comes with the next call). Decoding it would only keep
        the decoder busy when the turn ends.
        """
        if self.state == "silent":
            return b""
        end = len(self._utterance)
        if self.state == "pausing":
            end = min(end, self._speech_end_bytes + round(self.timing.post_roll_s * self.sample_rate) * 2)
        return bytes(self._utterance[offset:end])

    def provisional_audio(self, with_post_roll: bool = True, through_now: bool = False) -> AudioFrame | None:
        """While pausing, the audio a silence-ended turn would carry; None in any other state.

        With `with_post_roll`, None until `post_roll_s` of the pause has been heard: from then on
        the result is exactly the `UserTurnEnded.audio` to come, unless speech resumes.
        Without, the speech so far (no post-roll). Speculative work runs on it.
        `through_now` gives the whole utterance with the pause so far, as an end-of-turn model hears it.
        """
        if self.state != "pausing":
            return None
        if through_now:
            return AudioFrame(bytes(self._utterance), self.sample_rate)
        end = self._speech_end_bytes
        if with_post_roll:
            end += round(self.timing.post_roll_s * self.sample_rate) * 2
            if len(self._utterance) < end:
                return None
        return AudioFrame(bytes(self._utterance[:end]), self.sample_rate)

    def reset(self) -> None:
        """Forget everything: a new stream starts."""
        self._ring.clear()
        self._clear_utterance()

    def feed(self, probability: float, at: float, frame: AudioFrame) -> list[TurnEvent]:
        """One VAD-scored frame that ended at `at`; returns what it decided, in order."""
        if frame.sample_rate != self.sample_rate:
            raise ValueError(f"TurnTaker runs at {self.sample_rate} Hz, got a frame at {frame.sample_rate} Hz")
        timing = self.timing
        frame_start = at - frame.duration_s
        self._last_at = at
        events: list[TurnEvent] = []
        loud = probability >= timing.speech_start_threshold
        quiet = probability < timing.speech_stop_threshold

        if self.state == "silent":
            if loud:
                self.state = "onset"
                self._utterance = bytearray(self._ring.contents())
                vad_onset = len(self._utterance)
                self._utterance.extend(frame.pcm)
                self._voice_dbfs = self._edges.threshold_dbfs(self._utterance, vad_onset)
                self._onset_bytes = self._edges.onset(self._utterance, vad_onset, self._voice_dbfs)
                self._started_at = frame_start - self._seconds(vad_onset - self._onset_bytes)
                self._voice_until = None
                if self._edges.enabled and self._edges.last_loud_end(frame.pcm, self._voice_dbfs) is not None:
                    self._voice_until = self._started_at
                    self._note_voice(frame, frame_start)
                events.append(SpeechOnset(at=at, started_at=self._started_at))
                self._confirm_if_long_enough(at, events)
        elif self.state == "onset":
            if quiet:
                events.append(SpeechDropped(at=at, speech_s=frame_start - self._started_at))
                self._clear_utterance()
            else:
                self._utterance.extend(frame.pcm)
                self._note_voice(frame, frame_start)
                self._confirm_if_long_enough(at, events)
        elif self.state == "speaking":
            if not quiet:
                self._note_voice(frame, frame_start)
            if quiet:
                self.state = "pausing"
                vad_end = len(self._utterance)
                self._speech_end_bytes = self._edges.end(
                    self._utterance, vad_end, self._voice_dbfs, not_before=self._onset_bytes
                )
                self._speech_ended_at = frame_start - self._seconds(vad_end - self._speech_end_bytes)
                self.silence_needed_s = timing.end_of_turn_silence_s
                events.append(
                    SpeechPaused(
                        at=at,
                        speech_ended_at=self._speech_ended_at,
                        speech_s=self._speech_ended_at - self._started_at,
                    )
                )
            self._utterance.extend(frame.pcm)
        elif self.state == "pausing":
            self._utterance.extend(frame.pcm)
            if loud:
                self.state = "speaking"
                self._note_voice(frame, frame_start)
                events.append(SpeechResumed(at=at, paused_s=frame_start - self._speech_ended_at))
            elif at - self._speech_ended_at + _EPSILON_S >= self.silence_needed_s:
                events.append(self._end_turn(at, "silence"))

        if self.state in ("speaking", "pausing") and at - self._started_at + _EPSILON_S >= timing.max_utterance_s:
            events.append(self._end_turn(at, "max_length"))
            # The cut audio is in the event; a pre-roll from it would hear its tail twice.
            self._ring.clear()
            return events
        self._ring.append(frame.pcm)
        return events

    def note_unscored(self, at: float, unscored: bytes) -> None:
        """Between VAD frames: the voice goes on through loud audio the VAD has not scored yet
        (`unscored`, ending at `at`), while its last verdict was speech.

        `voice_s` then follows the audio as the transport delivers it instead of waiting for the
        VAD's next whole frame (32 ms for Silero), so a barge-in is confirmed when its speech
        reaches the minimum, not up to a frame later. Quiet unscored audio changes nothing: the
        VAD's frame decides whether the speech stopped. Where loudness cannot tell, nothing moves.
        """
        if self.state not in ("onset", "speaking"):
            return
        frame = AudioFrame(unscored, self.sample_rate)
        self._note_voice(frame, at - frame.duration_s)

    def end_if_quiet(self, at: float, unscored: bytes) -> list[TurnEvent]:
        """Between VAD frames: ends a paused turn once its silence is long enough, if the audio the
        VAD has not scored yet (`unscored`, ending at `at`) is quiet by loudness.

        The VAD judges whole frames (32 ms for Silero), so its verdict on the last stretch of the
        end-of-turn silence comes up to a frame late; the loudness of what has arrived can give it
        at the frame the transport delivered. Where loudness cannot tell, the VAD's frame decides.
        """
        if self.state != "pausing" or self._voice_until is None:
            return []
        if at - self._speech_ended_at + _EPSILON_S < self.silence_needed_s:
            return []
        if self._edges.last_loud_end(unscored, self._voice_dbfs) is not None:
            return []
        self._last_at = at
        event = self._end_turn(at, "silence")
        # The unscored audio still goes through `feed` when its frame is complete; it then lands in
        # the pre-roll ring like any silence.
        return [event]

    def _seconds(self, pcm_bytes: int) -> float:
        return pcm_bytes / 2 / self.sample_rate

    def _note_voice(self, frame: AudioFrame, frame_start: float) -> None:
        if self._voice_until is None:
            return
        end = self._edges.last_loud_end(frame.pcm, self._voice_dbfs)
        if end is not None:
            self._voice_until = max(self._voice_until, frame_start + self._seconds(end))

    def _confirm_if_long_enough(self, at: float, events: list[TurnEvent]) -> None:
        if self.voice_s + _EPSILON_S >= self.timing.min_speech_s:
            self.state = "speaking"
            events.append(SpeechStarted(at=at, started_at=self._started_at))

    def _end_turn(self, at: float, reason: Literal["silence", "max_length"]) -> UserTurnEnded:
        if self.state == "pausing":
            ended_at = self._speech_ended_at
            post_roll = round(self.timing.post_roll_s * self.sample_rate) * 2
            pcm = bytes(self._utterance[: self._speech_end_bytes + post_roll])
        else:
            ended_at = at
            pcm = bytes(self._utterance)
        event = UserTurnEnded(
            at=at,
            audio=AudioFrame(pcm, self.sample_rate),
            started_at=self._started_at,
            ended_at=ended_at,
            reason=reason,
        )
        self._clear_utterance()
        return event

    def _clear_utterance(self) -> None:
        self.state = "silent"
        self._utterance = bytearray()
        self._speech_end_bytes = 0
        self._onset_bytes = 0
