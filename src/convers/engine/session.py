"""One conversation with one client: listens all the time, replies in a cancellable task.

The session owns tasks and the history; it decides nothing about barge-in (engine/interruption.py
does, the session applies its actions) or about when a user turn ends (engine/hearing.py).
"""

from __future__ import annotations

import asyncio
import copy
import logging
import uuid
from dataclasses import replace
from typing import Any

from convers.contracts.audio import AudioFrame
from convers.contracts.events import (
    AgentState,
    ErrorMessage,
    MetricsMessage,
    RecordingMessage,
    StateMessage,
    TranscriptMessage,
)
from convers.contracts.llm import ChatMessage, LlmError
from convers.contracts.memory import MemoryHit
from convers.contracts.stt import SpeechStream
from convers.contracts.transport import (
    InboundAudio,
    InboundPlayed,
    InboundText,
    Transport,
)
from convers.engine.agent_turn import AgentTurn
from convers.engine.hearing import Hearing, Speculation, turn_metrics
from convers.engine.interruption import (
    Action,
    BargeInArbiter,
    Cut,
    Pause,
    Restart,
    Resume,
    StartReply,
    verdict_of,
)
from convers.engine.prompt import PromptBuilder
from convers.engine.recall import recall_within
from convers.engine.reply import ReplyProgress, ReplyStreamer
from convers.engine.session_parts import SessionOptions, SessionParts
from convers.engine.speculation import SpeculativeResult
from convers.engine.spoken_text import SpokenTextTts
from convers.engine.tool_calls import with_tools
from convers.engine.turns import SpeechStarted, TurnEvent, UserTurnEnded
from convers.events import EventLog, TurnMetrics

__all__ = ["AgentTurn", "Session", "SessionOptions", "SessionParts"]

log = logging.getLogger(__name__)


class Session:
    """Owns the listen loop, the reply task of the current agent turn, and the history.

    User speech over an audible agent turn is a barge-in: playback pauses at onset, and once the
    speech lasts `min_barge_in_speech_s` the reply task is cancelled and the turn flushed. Speech
    that stays shorter resumes the paused audio; an interruption that turns out to hold no words
    (or only "mm-hm") restarts the unheard rest of the reply as a new turn.
    """

    def __init__(
        self,
        transport: Transport,
        parts: SessionParts,
        prompt: PromptBuilder,
        events: EventLog,
        options: SessionOptions | None = None,
        session_id: str | None = None,
    ) -> None:
        if parts.recorder is not None:
            transport = parts.recorder.wrap(transport)  # keeps a copy of the agent's audio per turn
        self.transport = transport
        # Speech is normalised in the voice itself, so the reply and a speculative first chunk say the same.
        self.parts = replace(parts, tts=SpokenTextTts.around(parts.tts))
        # Tools are offered on every request of the session, the speculative ones included.
        self.parts.llm = with_tools(parts.llm, parts.tools)
        self.prompt = prompt
        self.events = events
        self.options = options or SessionOptions()
        self.session_id = session_id or uuid.uuid4().hex[:12]
        self.history: list[ChatMessage] = []
        self.current: AgentTurn | None = None
        self._next_turn = 1
        self._background: set[asyncio.Task[Any]] = set()
        self._streamer = ReplyStreamer(
            self.parts.llm,
            parts.tts,
            transport,
            events,
            max_tokens=self.options.max_tokens,
            temperature=self.options.temperature,
            tools=parts.tools,
        )
        self._hearing: Hearing | None = None
        if parts.vad is not None and parts.stt is not None:
            recall = (lambda text: self._recall(text, TurnMetrics(turn=0))) if parts.memory is not None else None
            self._hearing = Hearing(self.parts, self.options, events, recall=recall, build_messages=self._messages)
        self._arbiter = BargeInArbiter(self.options.barge_in)

    def _messages(self, text: str, recalled: list[MemoryHit], history: list[ChatMessage] | None = None) -> list[ChatMessage]:
        """The prompt for `text` (a speculation builds the same one the reply will, if confirmed)."""
        profile = self.parts.memory.profile_text() if self.parts.memory is not None else ""
        return self.prompt.build(text, self.history if history is None else history, profile=profile, recalled=recalled)

    def _recall(self, text: str, metrics: TurnMetrics) -> Any:
        return recall_within(self.parts.memory, text, self.options.recall_timeout_s, self.events, metrics)

    # ----------------------------------------------------------------- lifecycle

    async def run(self) -> None:
        """Runs until the client goes away; always leaves no task behind."""
        self.events.emit("session_start", session=self.session_id)
        try:
            if self.parts.recorder is not None:
                await self.transport.send_event(RecordingMessage(on=True).to_wire())  # the page shows a dot
            await self._set_state("listening")
            if self.options.greet and self.parts.memory is not None:
                self._spawn(self._greet())
            async for event in self.transport.inbound():
                if isinstance(event, InboundAudio):
                    await self._on_audio(event.frame)
                elif isinstance(event, InboundText):
                    await self.user_said(event.text)
                elif isinstance(event, InboundPlayed):
                    await self._on_played(event.turn, event.ms)
            if self.options.finish_reply_on_input_end and self.current is not None and self.current.task is not None:
                await asyncio.gather(self.current.task, return_exceptions=True)
        finally:
            await self.close()

    async def close(self) -> None:
        if self.current is not None:
            await self._cancel_current(reason="session_end", flush=False)
        if self._hearing is not None:
            await self._hearing.aclose()
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self.parts.recorder is not None:
            await self.parts.recorder.aclose()
        self.events.emit("session_end", session=self.session_id)

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(_log_failure)
        return task

    # ----------------------------------------------------------------- text in, reply out

    async def user_said(
        self,
        text: str,
        metrics: TurnMetrics | None = None,
        speculative: SpeculativeResult | None = None,
        audio: AudioFrame | None = None,
    ) -> asyncio.Task[None] | None:
        """A finished user turn (typed, or transcribed): cancel what the agent says, start a reply."""
        text = text.strip()
        if not text:
            return None
        if self.current is not None:
            await self._cancel_current(reason="new_user_turn", flush=True)
        turn = self._next_turn
        self._next_turn += 1
        metrics = metrics or TurnMetrics(turn=turn)
        metrics.turn = turn
        metrics.mark("turn_start", self.events.now())
        self.events.emit("user_turn", turn=turn, text=text)
        await self.transport.send_event(TranscriptMessage(text, final=True).to_wire())
        self.history.append(ChatMessage("user", text))
        if self.parts.recorder is not None:
            self.parts.recorder.user_turn(turn, text, audio)
        if self.parts.memory is not None:
            self.parts.memory.remember(self.session_id, "user", self.options.speaker_name, text)
        progress = ReplyProgress(turn=turn)
        agent_turn = AgentTurn(turn=turn, progress=progress, metrics=metrics, task=None)
        agent_turn.task = asyncio.create_task(self._reply(agent_turn, text, speculative))
        self.current = agent_turn
        return agent_turn.task

    async def interrupt(self) -> None:
        """Stops the agent now (Ctrl-C in the terminal, a stop button): same path as a barge-in."""
        if self.current is not None and not self.current.settled:
            await self._cancel_current(reason="interrupted", flush=True)

    async def _reply(self, agent_turn: AgentTurn, text: str, speculative: SpeculativeResult | None = None) -> None:
        await self._set_state("thinking")
        if speculative is not None and speculative.recall_done_at is not None:
            recalled = speculative.recalled or []  # recalled during the end-of-turn silence
            agent_turn.metrics.mark("recall_done", speculative.recall_done_at)
        else:
            recalled = await self._recall(text, agent_turn.metrics)
        # The user's message is already the last history entry; the builder appends it itself.
        messages = self._messages(text, recalled, self.history[:-1])
        try:
            if self.parts.tts is not None:
                await self._set_state("speaking")
            streamer = self._streamer
            if speculative is not None and speculative.prefetch is not None:
                # The LLM request may already be running: answer from its buffer if the prompt is the same.
                streamer = copy.copy(self._streamer)
                streamer.llm = speculative.language_model(self._streamer.llm)
                if streamer.tts is not None:
                    streamer.tts = speculative.voice(streamer.tts)
            await streamer.run(messages, agent_turn.progress, agent_turn.metrics)
        except* LlmError as group:
            error = group.exceptions[0]
            self.events.emit("llm_error", turn=agent_turn.turn, error=str(error))
            await self.transport.send_event(ErrorMessage("llm_unavailable", str(error)).to_wire())
        except* Exception as group:
            # A TTS or transport failure ends this reply with a visible error, never the session.
            error = group.exceptions[0]
            log.error("reply %d failed", agent_turn.turn, exc_info=error)
            self.events.emit("reply_error", turn=agent_turn.turn, error=repr(error))
            await self.transport.send_event(ErrorMessage("reply_failed", str(error)).to_wire())
        finally:
            if speculative is not None:
                speculative.discard()  # whatever the reply did not replay (a barge-in came first) stops now
        self._finish_generation(agent_turn)

    def _finish_generation(self, agent_turn: AgentTurn) -> None:
        """The reply is fully generated; its history entry stands unless a barge-in cuts it."""
        progress = agent_turn.progress
        metrics = agent_turn.metrics
        metrics.mark("reply_done", self.events.now())
        self.history.extend(progress.tool_messages)  # the calls and results, so later turns can refer to them
        if progress.text:
            self.history.append(ChatMessage("assistant", progress.text))
            agent_turn.history_index = len(self.history) - 1
        self.events.emit("reply_done", turn=agent_turn.turn, text=progress.text, metrics=metrics.latencies())
        self._spawn(self.transport.send_event(MetricsMessage(agent_turn.turn, metrics.latencies()).to_wire()))
        if self.parts.tts is None or progress.audio_ms == 0:
            self._settle(agent_turn, progress.text)
            self._spawn(self._set_state("listening"))

    def _settle(self, agent_turn: AgentTurn, final_text: str) -> None:
        """The agent turn is over; what the user heard goes to long-term memory once."""
        if agent_turn.settled:
            return
        agent_turn.settled = True
        if self.parts.recorder is not None:
            played = agent_turn.played_ms if agent_turn.played_ms + 1 < agent_turn.progress.audio_ms else 0.0
            self.parts.recorder.finish_turn(agent_turn.turn, final_text, played_ms=played)
        if final_text and self.parts.memory is not None:
            self.parts.memory.remember(self.session_id, "assistant", self.options.agent_name, final_text)

    async def _cancel_current(self, reason: str, flush: bool) -> None:
        agent_turn = self.current
        if agent_turn is None:
            return
        self.current = None
        task = agent_turn.task
        if task is not None and not task.done():
            task.cancel()
        if flush and not agent_turn.settled:
            # Flush before waiting for the reply to wind down (closing the LLM stream, stopping TTS):
            # the listener hears silence sooner, and transports drop any frame of the turn sent later.
            await self.transport.flush(agent_turn.turn)
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)
        if agent_turn.settled:
            return
        kept = agent_turn.kept_text(voiced=self.parts.tts is not None)
        agent_turn.keep_in(self.history, kept)
        self.events.emit(
            "reply_cut", turn=agent_turn.turn, reason=reason, played_ms=agent_turn.played_ms, kept=kept
        )
        self._settle(agent_turn, kept)

    # ----------------------------------------------------------------- greeting

    async def _greet(self) -> None:
        assert self.parts.memory is not None
        try:
            text = await self.parts.memory.greeting(self.options.agent_name)
        except Exception as error:
            log.warning("greeting failed: %s", error)
            return
        if any(message.role == "user" for message in self.history):
            return  # the user spoke first; a late "welcome back" would talk over the conversation
        await self.say(text)

    async def say(self, text: str, kind: str = "greeting") -> None:
        """Speaks fixed text as an agent turn (no LLM), recorded in history like any reply."""
        if self.current is not None and self.current.audible:
            return  # never talk over ourselves
        turn = self._next_turn
        self._next_turn += 1
        metrics = TurnMetrics(turn=turn)
        metrics.mark("turn_start", self.events.now())
        progress = ReplyProgress(turn=turn)
        agent_turn = AgentTurn(turn=turn, progress=progress, metrics=metrics, task=None)
        self.current = agent_turn
        self.events.emit(kind, turn=turn, text=text)

        async def speak() -> None:
            if self.parts.tts is not None:
                await self._set_state("speaking")
            await self._streamer.speak_text(text, progress, metrics)
            self._finish_generation(agent_turn)

        agent_turn.task = asyncio.create_task(speak())
        await asyncio.gather(agent_turn.task, return_exceptions=True)

    # ----------------------------------------------------------------- audio in

    async def _on_audio(self, frame: AudioFrame) -> None:
        if self._hearing is None:
            message = ErrorMessage("no_voice", "this session has no speech recognition; type instead")
            await self.transport.send_event(message.to_wire())
            return
        now = self.events.now()
        turn_events, finished = self._hearing.feed(frame, now, hold=self._arbiter.judging)
        for event in turn_events:
            await self._on_turn_event(event, finished if isinstance(event, UserTurnEnded) else None)
        await self._apply(self._arbiter.voice(self._hearing.voice_s, self.current))
        # The false-interruption timeout runs on the session's clock, judged at each frame.
        await self._apply(self._arbiter.tick(now, self.current))

    async def _on_turn_event(self, event: TurnEvent, live: SpeechStream | None = None) -> None:
        """Acts on one TurnTaker event; `live` is the finished utterance's stream when STT runs live."""
        current = self.current
        speaking = current is not None and current.audible and not current.settled
        await self._apply(self._arbiter.heard(event, current))
        if isinstance(event, SpeechStarted):
            self.events.emit("speech_start", at=round(event.started_at, 4), over_agent=speaking)
        elif isinstance(event, UserTurnEnded):
            assert self._hearing is not None
            self.events.emit("speech_end", duration_s=round(event.speech_s, 3), reason=event.reason)
            speculation = self._hearing.claim(event)
            self._spawn(self._transcribe(event.audio, turn_metrics(event), speculation, live))

    async def _transcribe(
        self, audio: AudioFrame, metrics: TurnMetrics, speculation: Speculation | None, live: SpeechStream | None
    ) -> None:
        """One ended user turn to text, and its verdict to the arbiter (exactly once, even on failure)."""
        assert self._hearing is not None
        judged = False
        try:
            try:
                transcript, result = await self._hearing.transcribe(audio, speculation, live)
            except Exception as error:
                log.warning("speech recognition failed: %s", error)
                await self.transport.send_event(ErrorMessage("stt_failed", str(error)).to_wire())
                return
            metrics.mark("stt_final", result.stt_done_at if result is not None else self.events.now())
            metrics.durations_ms["stt_decode_ms"] = transcript.decode_s * 1000
            self.events.emit("stt_final", text=transcript.text, decode_s=round(transcript.decode_s, 4))
            verdict = verdict_of(transcript.text, self.options.barge_in)
            if verdict != "words" and result is not None:
                result.discard()
            judged = True
            actions = self._arbiter.transcribed(verdict, transcript.text, self.current)
            await self._apply(actions, metrics=metrics, speculative=result, audio=audio)
        finally:
            if not judged:
                self._arbiter.transcribed("failed", "", self.current)

    async def _apply(self, actions: list[Action], **user_turn: Any) -> None:
        """Carries out the arbiter's actions in order; `user_turn` goes with a `StartReply`."""
        for action in actions:
            if isinstance(action, Pause):
                await self.transport.pause(action.turn)
                self.events.emit("playback_paused", turn=action.turn)
            elif isinstance(action, Resume):
                await self.transport.resume(action.turn)
                self.events.emit("playback_resumed", turn=action.turn, reason=action.reason)
            elif isinstance(action, Cut):
                await self._barge_in(action)
            elif isinstance(action, Restart):
                self.events.emit("reply_restart", text=action.text)
                await self.say(action.text, kind="reply_restart")
            elif isinstance(action, StartReply):
                await self.user_said(action.text, **user_turn)

    async def _barge_in(self, cut: Cut) -> None:
        agent_turn = self.current
        if agent_turn is None or agent_turn.turn != cut.turn:
            return
        await self._cancel_current(reason=cut.reason, flush=True)
        flushed_at = self.events.now()
        self.events.emit(
            "barge_in",
            turn=agent_turn.turn,
            onset_to_flush_ms=round((flushed_at - cut.onset_at) * 1000, 1),
            played_ms=agent_turn.played_ms,
        )
        await self._set_state("listening")

    async def _on_played(self, turn: int, ms: int) -> None:
        current = self.current
        if current is None or current.turn != turn:
            return
        current.played_ms = max(current.played_ms, float(ms))
        if self._arbiter.played(current):  # played to the end of a fully generated turn
            self.events.emit("played", turn=turn, ms=ms)
            self._settle(current, current.progress.text)
            await self._set_state("listening")

    async def _set_state(self, state: AgentState) -> None:
        await self.transport.send_event(StateMessage(state).to_wire())


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("session task failed", exc_info=task.exception())
