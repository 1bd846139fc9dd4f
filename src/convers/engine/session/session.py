"""One conversation with one client: listens all the time, replies in a cancellable task.

The session owns tasks and the history; it decides nothing about barge-in (engine/barge_in/arbiter.py
does; engine/session/voice.py applies its actions) or about when a user turn ends (engine/listening/hearing.py).
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
    EventKind,
    MetricsMessage,
    RecordingMessage,
    StateMessage,
    StatusMessage,
)
from convers.contracts.llm import (
    ChatMessage,
    LlmError,
    PromptCachingModel,
    PromptReading,
    for_session,
)
from convers.contracts.memory import MemoryHit
from convers.contracts.transport import (
    InboundAudio,
    InboundPlayed,
    InboundText,
    Transport,
)
from convers.engine.barge_in.arbiter import BargeInArbiter
from convers.engine.listening.hearing import Hearing
from convers.engine.listening.speculation import SpeculativeResult
from convers.engine.parts import SessionOptions, SessionParts
from convers.engine.reply.prompt import PromptBuilder
from convers.engine.reply.recall import recall_within
from convers.engine.reply.spoken_text import SpokenTextTts
from convers.engine.reply.streamer import ReplyProgress, ReplyStreamer
from convers.engine.reply.tool_calls import with_tools
from convers.engine.session.agent_turn import AgentTurn
from convers.engine.session.greeting import greet
from convers.engine.session.tasks import clear_frames, log_failure
from convers.engine.session.transcript_echo import echo_user_turn
from convers.engine.session.voice import VoiceTurns
from convers.events import EventLog, TurnMetrics

log = logging.getLogger(__name__)

NO_VOICE = ErrorMessage("no_voice", "this session has no speech recognition; type instead")


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
        self.events = events
        self.options = options or SessionOptions()
        self.session_id = session_id or uuid.uuid4().hex[:12]
        # Speech is normalised in the voice itself, so the reply and a speculative first chunk say the same.
        self.parts = replace(parts, tts=SpokenTextTts.around(parts.tts))
        # The session's own view of the model: a prompt cache of its own where the model keeps one.
        # Tools are offered on every request of the session, the speculative ones included.
        self._cached_llm = for_session(parts.llm, self.session_id, self._on_reading)
        self.parts.llm = with_tools(self._cached_llm, parts.tools)
        self.prompt = prompt
        # The prompt as an append-only log, so the model's cache keeps all but the newest words.
        self.prompt_log = prompt.log()
        self.history: list[ChatMessage] = []
        self.current: AgentTurn | None = None
        self._next_turn = 1
        self._background: set[asyncio.Task[Any]] = set()
        options = self.options
        self._streamer = ReplyStreamer(
            self.parts.llm, parts.tts, transport, events, options.max_tokens, options.temperature, tools=parts.tools
        )
        self._arbiter = BargeInArbiter(self.options.barge_in)
        self._voice: VoiceTurns | None = None
        # Names under which this session holds the shared idle gate (idle_gate.py).
        self._speech_hold = f"{self.session_id}/speech"
        self._reply_hold = f"{self.session_id}/reply"
        if parts.vad is not None and parts.stt is not None:
            recall = (lambda text: self._recall(text, TurnMetrics(turn=0))) if parts.memory is not None else None
            hearing = Hearing(self.parts, options, events, recall=recall, build_messages=self._messages)
            self._voice = VoiceTurns(self, hearing, self._arbiter, spawn=self._spawn)

    def _messages(self, text: str, recalled: list[MemoryHit], history: list[ChatMessage] | None = None) -> list[ChatMessage]:
        """The prompt for `text` (a speculation builds the same one the reply will, if confirmed)."""
        return self.prompt_log.build(text, self.history if history is None else history, self._profile(), recalled)

    def _profile(self) -> str:
        return self.parts.memory.profile_text() if self.parts.memory is not None else ""

    def _on_reading(self, reading: PromptReading) -> None:
        self.events.emit(
            EventKind.LLM_PROMPT, purpose=reading.purpose, prompt_tokens=reading.prompt_tokens,
            read_tokens=reading.read_tokens, read_ms=round(reading.read_ms, 1),
        )

    def read_ahead(self) -> None:
        """Has the model read the prompt so far (system message and conversation) while the person
        speaks, so that at the end of their turn only their words and its recall remain to read.
        Not while a reply is generating: its request holds the session's cache slot."""
        llm = self._cached_llm
        if not self.options.read_ahead or not isinstance(llm, PromptCachingModel):
            return
        if self.current is not None and self.current.generating:
            return
        self._spawn(llm.prefill(self.prompt_log.prefix(self.history, self._profile())))

    async def _recall(self, text: str, metrics: TurnMetrics) -> list[MemoryHit]:
        return await recall_within(self.parts.memory, text, self.options.recall_timeout_s, self.events, metrics)

    def user_speaking(self, speaking: bool) -> None:
        """The person started (True) or stopped speaking: background model work waits meanwhile."""
        if self.parts.idle is not None:
            (self.parts.idle.hold if speaking else self.parts.idle.release)(self._speech_hold)

    def _replying(self, replying: bool) -> None:
        """An agent turn began (True) or settled: background model work waits meanwhile."""
        if self.parts.idle is not None:
            (self.parts.idle.hold if replying else self.parts.idle.release)(self._reply_hold)

    # ----------------------------------------------------------------- lifecycle

    async def run(self) -> None:
        """Runs until the client goes away; always leaves no task behind."""
        self.events.emit(EventKind.SESSION_START, session=self.session_id)
        try:
            if self.parts.recorder is not None:
                await self.transport.send_event(RecordingMessage(on=True).to_wire())  # the page shows a dot
            await self._set_state("listening")
            if self.options.greet and self.parts.memory is not None:
                self._spawn(greet(self, self.parts.memory, self.options.agent_name))
            else:
                self.read_ahead()  # the system message, read before the first words come
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
        if self._voice is not None:
            await self._voice.aclose()
            self._voice = None  # it refers back to the session: let both go without a full collection
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self.parts.recorder is not None:
            await self.parts.recorder.aclose()
        self.user_speaking(False)
        self._replying(False)
        self.events.emit(EventKind.SESSION_END, session=self.session_id)

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(log_failure)
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
        self.events.emit(EventKind.USER_TURN, turn=turn, text=text)
        self.history.append(ChatMessage("user", text))
        if self.parts.recorder is not None:
            self.parts.recorder.user_turn(turn, text, audio)
        stored = None
        if self.parts.memory is not None:
            stored = self.parts.memory.remember(self.session_id, "user", self.options.speaker_name, text)
        # The echo waits for the commit (what it promises, docs/protocol.md); the reply starts now.
        self._spawn(echo_user_turn(self.transport, turn, text, stored, self.options.echo_commit_wait_s))
        progress = ReplyProgress(turn=turn)
        agent_turn = AgentTurn(turn=turn, progress=progress, metrics=metrics, task=None)
        self._replying(True)
        agent_turn.task = asyncio.create_task(self._reply(agent_turn, text, speculative))
        self.current = agent_turn
        return agent_turn.task

    async def interrupt(self, reason: str = "interrupted") -> None:
        """Stops the agent now (Ctrl-C in the terminal, a stop button, a barge-in): cancel and flush."""
        if self.current is not None and not self.current.settled:
            await self._cancel_current(reason=reason, flush=True)

    async def _reply(self, agent_turn: AgentTurn, text: str, speculative: SpeculativeResult | None = None) -> None:
        await self._set_state("thinking")
        if speculative is not None and speculative.recall_done_at is not None:
            recalled = speculative.recalled or []  # recalled during the end-of-turn silence
            if speculative.recall_started_at is not None:
                agent_turn.metrics.mark("recall_start", speculative.recall_started_at)
            agent_turn.metrics.mark("recall_done", speculative.recall_done_at)
        else:
            recalled = await self._recall(text, agent_turn.metrics)
        # The user's message is already the last history entry; the builder appends it itself.
        messages = self._messages(text, recalled, self.history[:-1])
        self.prompt_log.commit(self.history[-1], messages, recalled, self._profile())
        failure: str | None = None
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
            failure = f"the language model failed: {error}"
            self.events.emit(EventKind.LLM_ERROR, turn=agent_turn.turn, error=str(error))
            await self.transport.send_event(ErrorMessage("llm_unavailable", str(error)).to_wire())
        except* Exception as group:
            # A TTS or transport failure ends this reply with a visible error, never the session.
            reply_error = group.exceptions[0]
            log.error("reply %d failed", agent_turn.turn, exc_info=reply_error)
            self.events.emit(EventKind.REPLY_ERROR, turn=agent_turn.turn, error=repr(reply_error))
            await self.transport.send_event(ErrorMessage("reply_failed", str(reply_error)).to_wire())
        finally:
            if speculative is not None:
                speculative.mark_replayed(agent_turn.metrics)
                speculative.discard()  # whatever the reply did not replay (a barge-in came first) stops now
        await self._never_silent(agent_turn, failure)
        self._finish_generation(agent_turn)

    async def _never_silent(self, agent_turn: AgentTurn, failure: str | None) -> None:
        """A reply that said nothing (empty, only markup or an end token, or a model that failed
        before its first word) is answered with a short line, and the reason is logged and shown:
        the person never waits in silence for words that will not come."""
        progress = agent_turn.progress
        voiced = self.parts.tts is not None
        if (progress.audio_ms > 0) if voiced else progress.text.strip():
            return
        reason = failure or ("the model wrote nothing" if not progress.text.strip() else
                             f"nothing speakable in the model's reply {progress.text[:80]!r}")
        log.warning("turn %d: %s; saying so instead of staying silent", agent_turn.turn, reason)
        self.events.emit(EventKind.REPLY_FALLBACK, turn=agent_turn.turn, reason=reason)
        await self.transport.send_event(StatusMessage("reply_fallback", agent_turn.turn, 0, reason).to_wire())
        if voiced:
            await self._set_state("speaking")
        progress.chunks.clear()
        await self._streamer.speak_text(self.options.fallback_line, progress, agent_turn.metrics)

    def _finish_generation(self, agent_turn: AgentTurn) -> None:
        """The reply is fully generated; its history entry stands unless a barge-in cuts it."""
        progress = agent_turn.progress
        metrics = agent_turn.metrics
        metrics.mark("reply_done", self.events.now())
        agent_turn.enter_in(self.history)
        self.events.emit(EventKind.REPLY_DONE, turn=agent_turn.turn, text=progress.text, metrics=metrics.latencies())
        self._spawn(self.transport.send_event(MetricsMessage(agent_turn.turn, metrics.latencies()).to_wire()))
        if self.parts.tts is None or progress.audio_ms == 0:
            self._settle(agent_turn, progress.text)
            self._spawn(self._set_state("listening"))

    def _settle(self, agent_turn: AgentTurn, final_text: str) -> None:
        """The agent turn is over; what the user heard goes to long-term memory once."""
        if agent_turn.settled:
            return
        agent_turn.settled = True
        if agent_turn is self.current or self.current is None:
            self._replying(False)
        if self.parts.recorder is not None:
            self.parts.recorder.finish_turn(agent_turn.turn, final_text, played_ms=agent_turn.played_ms_if_cut)
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
            clear_frames(task)
        if agent_turn.settled:
            return
        kept = agent_turn.kept_text(voiced=self.parts.tts is not None)
        agent_turn.keep_in(self.history, kept)
        self.events.emit(EventKind.REPLY_CUT, turn=agent_turn.turn, reason=reason, played_ms=agent_turn.played_ms, kept=kept)
        self._settle(agent_turn, kept)

    # ----------------------------------------------------------------- fixed speech (greeting, restart)

    async def say(self, text: str, kind: EventKind = EventKind.GREETING) -> None:
        """Speaks fixed text as an agent turn (no LLM), recorded in history like any reply."""
        if self.current is not None and self.current.audible:
            return  # never talk over ourselves
        turn = self._next_turn
        self._next_turn += 1
        self.current = agent_turn = AgentTurn.starting(turn, self.events.now())
        self._replying(True)
        progress, metrics = agent_turn.progress, agent_turn.metrics
        self.events.emit(kind, turn=turn, text=text)

        async def speak() -> None:
            if self.parts.tts is not None:
                await self._set_state("speaking")
            await self._streamer.speak_text(text, progress, metrics)
            self._finish_generation(agent_turn)

        agent_turn.task = asyncio.create_task(speak())
        await asyncio.gather(agent_turn.task, return_exceptions=True)
        self.read_ahead()  # synthesised: while it plays, the model reads the prompt with it

    async def _on_audio(self, frame: AudioFrame) -> None:
        if self._voice is not None:
            await self._voice.hear(frame)
        else:
            await self.transport.send_event(NO_VOICE.to_wire())

    async def _on_played(self, turn: int, ms: int) -> None:
        current = self.current
        if current is None or current.turn != turn:
            return
        current.played_ms = max(current.played_ms, float(ms))
        if self._arbiter.played(current):  # played to the end of a fully generated turn
            self.events.emit(EventKind.PLAYED, turn=turn, ms=ms)
            self._settle(current, current.progress.text)
            await self._set_state("listening")

    async def _set_state(self, state: AgentState) -> None:
        await self.transport.send_event(StateMessage(state).to_wire())
