"""VoiceTurns: what the user's audio does to a session: new user turns, and barge-in applied.

Each inbound frame goes through `Hearing` (VAD, turn-taking, live STT, speculation); its turn events
and the session's clock go to the `BargeInArbiter`, whose actions are carried out here through the
session's public side (`current`, `user_said`, `say`, `interrupt`, its transport and event log).
An ended utterance is transcribed in a task of its own, and its verdict goes back to the arbiter.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from convers.contracts.audio import AudioFrame
from convers.contracts.events import ErrorMessage, EventKind, StateMessage
from convers.contracts.stt import SpeechStream
from convers.contracts.transport import EchoCancellingTransport, Transport
from convers.engine.barge_in.arbiter import (
    Action,
    BargeInArbiter,
    Cut,
    Pause,
    Restart,
    Resume,
    StartReply,
    SuspectEcho,
)
from convers.engine.barge_in.echo_witness import event_echo_removed_db, voice_echo_removed_db
from convers.engine.barge_in.learning_speech import LearningSpeech
from convers.engine.listening.hearing import Hearing, Speculation, turn_metrics
from convers.engine.listening.speculation import SpeculativeResult
from convers.engine.listening.turn_taking import SpeechDropped, SpeechOnset, SpeechStarted, TurnEvent, UserTurnEnded
from convers.engine.listening.verdict import verdict_of
from convers.engine.session.agent_turn import AgentTurn
from convers.events import EventLog, TurnMetrics

log = logging.getLogger(__name__)


class SessionSide(Protocol):
    """The side of a Session that VoiceTurns acts on (engine/session/session.py implements it)."""

    transport: Transport
    events: EventLog
    current: AgentTurn | None

    async def user_said(self, text: str, metrics: TurnMetrics | None = None,
                        speculative: SpeculativeResult | None = None,
                        audio: AudioFrame | None = None) -> asyncio.Task[None] | None: ...

    async def say(self, text: str, kind: EventKind = EventKind.GREETING) -> None: ...

    async def interrupt(self, reason: str = "interrupted") -> None: ...

    def read_ahead(self) -> None: ...

    def user_speaking(self, speaking: bool) -> None: ...


class VoiceTurns:
    """Hears one session's user and applies the barge-in arbiter's decisions to that session."""

    def __init__(
        self,
        session: SessionSide,
        hearing: Hearing,
        arbiter: BargeInArbiter,
        spawn: Callable[[Coroutine[Any, Any, None]], asyncio.Task[Any]],
    ) -> None:
        self.session = session
        self.hearing = hearing
        self.arbiter = arbiter
        # Transcriptions run as the session's background tasks: it cancels them when it closes.
        self._spawn = spawn
        # Whether the transport's echo canceller is still learning the room, as of the current frame.
        self._echo_learning = False
        # The transport when it cancels echo (else None), as of the current frame.
        self._cancelling: EchoCancellingTransport | None = None
        # Which audio a turn spoken over the agent while the canceller learns is read from.
        self._learning_speech = LearningSpeech()

    async def hear(self, frame: AudioFrame) -> None:
        """One inbound frame: turn events, the barge-in minimum, then the false-interruption timeout."""
        session = self.session
        now = session.events.now()
        transport = session.transport
        cancelling = self._cancelling = transport if isinstance(transport, EchoCancellingTransport) else None
        self._echo_learning = cancelling is not None and cancelling.echo_learning
        turn_events, finished = self.hearing.feed(frame, now, hold=self.arbiter.judging)
        for event in turn_events:
            await self._on_turn_event(event, finished if isinstance(event, UserTurnEnded) else None)
        if cancelling is not None and cancelling.echo_double_talk:
            probability = self.hearing.listener.last_probability
            await self.apply(self.arbiter.double_talk(probability, now, session.current, self._echo_learning))
        voice_s = self.hearing.voice_s
        measure = cancelling.echo_removed_db if cancelling is not None else None
        removed = voice_echo_removed_db(measure, voice_s, self.arbiter.judging, self._echo_learning)
        await self.apply(self.arbiter.voice(voice_s, session.current, self._echo_learning, removed))
        # The timeout runs on the session's clock, judged at each frame: no timer task, no real sleep.
        await self.apply(self.arbiter.tick(now, session.current))

    async def _on_turn_event(self, event: TurnEvent, live: SpeechStream | None) -> None:
        """One TurnTaker event; `live` is the finished utterance's stream when STT runs live."""
        events = self.session.events
        current = self.session.current
        speaking = current is not None and current.audible and not current.settled
        measure = self._cancelling.echo_removed_db if self._cancelling is not None else None
        removed = event_echo_removed_db(measure, event, self.session.events.now())
        await self.apply(self.arbiter.heard(event, current, self._echo_learning, removed))
        if isinstance(event, SpeechOnset):
            self._learning_speech.onset(speaking and self._echo_learning)
        elif isinstance(event, SpeechStarted):
            self.session.user_speaking(True)
            self.hearing.utterance_began(over_agent=speaking)
            events.emit(EventKind.SPEECH_START, at=round(event.started_at, 4), over_agent=speaking)
            if not speaking:
                self.session.read_ahead()  # the model reads the prompt so far while the person speaks
        elif isinstance(event, SpeechDropped):
            self.session.user_speaking(False)
        elif isinstance(event, UserTurnEnded):
            self.session.user_speaking(False)
            events.emit(EventKind.SPEECH_END, duration_s=round(event.speech_s, 3), reason=event.reason)
            speculation = self.hearing.claim(event)
            if self.arbiter.ended_echo:
                # The agent's own echo (the linear filter explained it): nobody to transcribe or answer.
                events.emit(EventKind.ECHO_HEARD, duration_s=round(event.speech_s, 3))
                await self.hearing.drop(speculation, live)
                return
            suspect = self.arbiter.ended_suspect
            unsuppress = self._cancelling.echo_unsuppressed if self._cancelling is not None else None
            unsuppressed = self._learning_speech.ended(event.audio, suspect, unsuppress)
            # Kept now, while the canceller still holds it: a second reading if the first says a person.
            heard = (self._cancelling.echo_microphone(event.audio, suspect.since)
                     if suspect is not None and self._cancelling is not None else None)
            self._spawn(self._transcribe(event.audio, turn_metrics(event), speculation, live, suspect, unsuppressed, heard))

    async def _transcribe(
        self, audio: AudioFrame, metrics: TurnMetrics, speculation: Speculation | None, live: SpeechStream | None,
        suspect: SuspectEcho | None = None, unsuppressed: AudioFrame | None = None, heard: AudioFrame | None = None,
    ) -> None:
        """One ended user turn to text, and its verdict to the arbiter (exactly once, even on failure).
        With `unsuppressed` audio, that is what is decoded (the speculation and live stream heard the
        other); `heard`, the microphone's own audio of the turn, is decoded too when the arbiter asks."""
        session = self.session
        judged = False
        try:
            if unsuppressed is not None:
                await self.hearing.drop(speculation, live)
                audio, speculation, live = unsuppressed, None, None
            started = session.events.now()
            try:
                transcript, result = await self.hearing.transcribe(audio, speculation, live)
            except Exception as error:
                log.warning("speech recognition failed: %s", error)
                await session.transport.send_event(ErrorMessage("stt_failed", str(error)).to_wire())
                return
            # The STT call whose transcript is used: the speculative one ran in the silence.
            metrics.mark("stt_start", result.stt_started_at if result is not None else started)
            metrics.mark("stt_final", result.stt_done_at if result is not None else session.events.now())
            metrics.durations_ms["stt_decode_ms"] = transcript.decode_s * 1000
            session.events.emit(EventKind.STT_FINAL, text=transcript.text, decode_s=round(transcript.decode_s, 4))
            verdict = verdict_of(transcript.text, self.arbiter.policy)
            microphone_text = None
            if heard is not None and self.arbiter.wants_microphone_reading(verdict, transcript.text, suspect):
                microphone_text = await self._read_microphone(heard)
            judged = True
            actions = self.arbiter.transcribed(verdict, transcript.text, session.current, suspect, microphone_text)
            replies = any(isinstance(action, StartReply) for action in actions)
            if suspect is not None:
                session.events.emit(EventKind.LEARNING_SPEECH, speech_s=round(suspect.speech_s, 3),
                                    joined=suspect.since is not None, residual=unsuppressed is not None,
                                    microphone_text=microphone_text, person=replies)
            if result is not None and not replies:
                result.discard()  # no reply comes of it (no words, or taken for echo): stop its work
            await self.apply(actions, metrics=metrics, speculative=result, audio=audio)
        finally:
            if not judged:
                self.arbiter.transcribed("failed", "", session.current)

    async def _read_microphone(self, heard: AudioFrame) -> str | None:
        """The transcript of the microphone's own audio of a turn; None when it cannot be read (the
        first reading then decides alone)."""
        try:
            transcript, _ = await self.hearing.transcribe(heard, None, None)
        except Exception as error:  # noqa: BLE001 - a second reading is optional
            log.warning("no second reading of speech over the agent: %s", error)
            return None
        return transcript.text

    async def apply(self, actions: list[Action], **user_turn: Any) -> None:
        """Carries out the arbiter's actions in order; `user_turn` goes with a `StartReply`."""
        session = self.session
        for action in actions:
            if isinstance(action, Pause):
                await session.transport.pause(action.turn)
                session.events.emit(EventKind.PLAYBACK_PAUSED, turn=action.turn)
            elif isinstance(action, Resume):
                await session.transport.resume(action.turn)
                session.events.emit(EventKind.PLAYBACK_RESUMED, turn=action.turn, reason=action.reason)
            elif isinstance(action, Cut):
                await self._cut(action)
            elif isinstance(action, Restart):
                session.events.emit(EventKind.REPLY_RESTART, text=action.text)
                await session.say(action.text, kind=EventKind.REPLY_RESTART)
            elif isinstance(action, StartReply):
                await session.user_said(action.text, **user_turn)

    async def _cut(self, cut: Cut) -> None:
        session = self.session
        agent_turn = session.current
        if agent_turn is None or agent_turn.turn != cut.turn:
            return
        await session.interrupt(reason=cut.reason)
        flushed_at = session.events.now()
        session.events.emit(
            EventKind.BARGE_IN,
            turn=agent_turn.turn,
            onset_to_flush_ms=round((flushed_at - cut.onset_at) * 1000, 1),
            played_ms=agent_turn.played_ms,
        )
        await session.transport.send_event(StateMessage("listening").to_wire())

    async def aclose(self) -> None:
        await self.hearing.aclose()
