"""One conversation with one client: listens all the time, replies in a cancellable task."""

from __future__ import annotations

import asyncio
import copy
import logging
import traceback
import uuid
from dataclasses import dataclass, replace
from typing import Any

from convers.contracts.audio import AudioFrame
from convers.contracts.llm import ChatMessage, LanguageModel, LlmError
from convers.contracts.memory import ConversationMemory, MemoryHit
from convers.contracts.stt import SpeechStream, SpeechToText, StreamingSpeechToText, Transcript
from convers.contracts.transport import InboundAudio, InboundPlayed, InboundText, Transport
from convers.contracts.tts import TextToSpeech
from convers.contracts.vad import Vad
from convers.engine.listener import Listener
from convers.engine.live_stt import LiveTranscription
from convers.engine.prompt import PromptBuilder
from convers.engine.reply import ReplyProgress, ReplyStreamer, heard_text
from convers.engine.speculation import SpeculativeResult, Speculator
from convers.engine.spoken_text import SpokenTextTts
from convers.engine.timing import BargeInPolicy, SpeculationPolicy, TurnTiming
from convers.engine.turns import SpeechDropped, SpeechOnset, SpeechStarted, TurnEvent, UserTurnEnded
from convers.events import EventLog, TurnMetrics


log = logging.getLogger(__name__)

# Utterances that say "I'm listening" rather than "stop": they never cost the agent its reply.
BACKCHANNELS = frozenset({"mm", "mhm", "mm-hm", "mmhm", "uh-huh", "hmm", "uh", "um", "ah", "oh", "huh"})


@dataclass
class SessionParts:
    """The providers a session talks through. Voice parts are None in a text-only session."""

    llm: LanguageModel
    tts: TextToSpeech | None = None
    stt: SpeechToText | None = None
    vad: Vad | None = None
    memory: ConversationMemory | None = None


@dataclass
class SessionOptions:
    """What a session needs from settings, as plain values."""

    agent_name: str = "Juniper"
    speaker_name: str = "user"
    max_tokens: int | None = None
    temperature: float | None = None
    # Recall is context, not a requirement: past this wait the reply goes ahead without it.
    recall_timeout_s: float = 0.35
    greet: bool = True
    # When the client's input ends (Ctrl-D, a closed pipe), finish the reply in flight before leaving;
    # a browser that disconnects gets no such grace, its speaker is gone.
    finish_reply_on_input_end: bool = False
    turns: TurnTiming = TurnTiming()
    barge_in: BargeInPolicy = BargeInPolicy()
    # Off unless asked for (wiring passes settings.speculation, on by default): a session built by
    # hand then makes exactly one STT call per utterance, which scripted tests rely on.
    speculation: SpeculationPolicy = SpeculationPolicy(enabled=False)
    # Decode while the user speaks when the STT can stream (pocketsphinx can): the end of a turn
    # then waits only for the decoder's final step (and speculation finishes the stream at a pause).
    live_transcription: bool = True


@dataclass
class AgentTurn:
    """The agent turn the client is hearing or about to hear."""

    turn: int
    progress: ReplyProgress
    metrics: TurnMetrics
    task: asyncio.Task[None] | None
    history_index: int | None = None
    played_ms: float = 0.0
    paused: bool = False
    settled: bool = False

    @property
    def audible(self) -> bool:
        """Generating, or audio sent that the client has not finished playing."""
        running = self.task is not None and not self.task.done()
        return running or self.played_ms + 1 < self.progress.audio_ms


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
        self.transport = transport
        # Speech is normalised in the voice itself, so the reply and a speculative first chunk say the same.
        self.parts = replace(parts, tts=SpokenTextTts.around(parts.tts))
        self.prompt = prompt
        self.events = events
        self.options = options or SessionOptions()
        self.session_id = session_id or uuid.uuid4().hex[:12]
        self.history: list[ChatMessage] = []
        self.current: AgentTurn | None = None
        self._next_turn = 1
        self._background: set[asyncio.Task[Any]] = set()
        self._streamer = ReplyStreamer(
            parts.llm,
            parts.tts,
            transport,
            events,
            max_tokens=self.options.max_tokens,
            temperature=self.options.temperature,
        )
        self._listener: Listener | None = None
        if parts.vad is not None and parts.stt is not None:
            self._listener = Listener(parts.vad, self.options.turns)
        self._live: LiveTranscription | None = None
        streaming = isinstance(parts.stt, StreamingSpeechToText) and self.options.live_transcription
        if self._listener is not None and streaming:
            self._live = LiveTranscription(parts.stt)
        self._speculator: Speculator | None = None
        if self._listener is not None and parts.stt is not None and self.options.speculation.enabled:
            self._speculator = self._make_speculator(parts.stt)
        self._barge_onset_at: float | None = None
        # User turns being transcribed right now (a paused reply waits for their verdict).
        self._transcribing = 0
        self._pending_restart: str | None = None

    def _make_speculator(self, stt: SpeechToText) -> Speculator:
        memory = self.parts.memory

        def build_messages(text: str, recalled: list[MemoryHit]) -> list[ChatMessage]:
            # What _reply will build if the turn is confirmed now: same history, same recall.
            profile = memory.profile_text() if memory is not None else ""
            return self.prompt.build(text, self.history, profile=profile, recalled=recalled)

        return Speculator(
            stt,
            self.events,
            self.options.speculation,
            post_roll_s=self.options.turns.post_roll_s,
            recall=(lambda text: self._recall(text, TurnMetrics(turn=0))) if memory is not None else None,
            build_messages=build_messages,
            llm=self.parts.llm,
            tts=self.parts.tts,
            max_tokens=self.options.max_tokens,
            temperature=self.options.temperature,
            usable_text=_has_words,
            transcribe=self._live.finish_early if self._live is not None else None,
        )

    # ----------------------------------------------------------------- lifecycle

    async def run(self) -> None:
        """Runs until the client goes away; always leaves no task behind."""
        self.events.emit("session_start", session=self.session_id)
        try:
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
        if self._speculator is not None:
            await self._speculator.aclose()
            # Its callbacks hold this session: dropped, a closed session is freed by reference counting.
            self._speculator = None
        if self._live is not None:
            await self._live.aclose()
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        self.events.emit("session_end", session=self.session_id)

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(_log_failure)
        return task

    # ----------------------------------------------------------------- text in, reply out

    async def user_said(
        self, text: str, metrics: TurnMetrics | None = None, speculative: SpeculativeResult | None = None
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
        await self.transport.send_event({"type": "transcript", "text": text, "final": True})
        self.history.append(ChatMessage("user", text))
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
        profile = self.parts.memory.profile_text() if self.parts.memory is not None else ""
        # The user's message is already the last history entry; the builder appends it itself.
        messages = self.prompt.build(text, self.history[:-1], profile=profile, recalled=recalled)
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
            await self.transport.send_event({"type": "error", "code": "llm_unavailable", "message": str(error)})
        except* Exception as group:
            # A TTS or transport failure ends this reply with a visible error, never the session.
            error = group.exceptions[0]
            log.error("reply %d failed", agent_turn.turn, exc_info=error)
            self.events.emit("reply_error", turn=agent_turn.turn, error=repr(error))
            await self.transport.send_event({"type": "error", "code": "reply_failed", "message": str(error)})
        finally:
            if speculative is not None:
                speculative.discard()  # whatever the reply did not replay (a barge-in came first) stops now
        self._finish_generation(agent_turn)

    async def _recall(self, text: str, metrics: TurnMetrics) -> list[MemoryHit]:
        memory = self.parts.memory
        if memory is None:
            return []
        try:
            hits = await asyncio.wait_for(memory.recall(text), self.options.recall_timeout_s)
        except TimeoutError:
            self.events.emit("recall_timeout", turn=metrics.turn)
            hits = []
        except Exception as error:  # memory is optional: a failure costs context, never the reply
            log.warning("recall failed: %s", error)
            hits = []
        metrics.mark("recall_done", self.events.now())
        return hits

    def _finish_generation(self, agent_turn: AgentTurn) -> None:
        """The reply is fully generated; its history entry stands unless a barge-in cuts it."""
        progress = agent_turn.progress
        metrics = agent_turn.metrics
        metrics.mark("reply_done", self.events.now())
        if progress.text:
            self.history.append(ChatMessage("assistant", progress.text))
            agent_turn.history_index = len(self.history) - 1
        self.events.emit("reply_done", turn=agent_turn.turn, text=progress.text, metrics=metrics.latencies())
        self._spawn(self.transport.send_event({"type": "metrics", "turn": agent_turn.turn, **metrics.latencies()}))
        if self.parts.tts is None or progress.audio_ms == 0:
            self._settle(agent_turn, progress.text)
            self._spawn(self._set_state("listening"))

    def _settle(self, agent_turn: AgentTurn, final_text: str) -> None:
        """The agent turn is over; what the user heard goes to long-term memory once."""
        if agent_turn.settled:
            return
        agent_turn.settled = True
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
            _clear_frames(task)
        if agent_turn.settled:
            return
        was_audible = self.parts.tts is not None and agent_turn.progress.audio_ms > agent_turn.played_ms + 1
        if self.parts.tts is None:
            kept = agent_turn.progress.text  # in text every generated word was shown
        elif was_audible or not agent_turn.progress.generation_done:
            kept = heard_text(agent_turn.progress, agent_turn.played_ms)
        else:
            kept = agent_turn.progress.text
        self._replace_history(agent_turn, kept)
        self.events.emit(
            "reply_cut", turn=agent_turn.turn, reason=reason, played_ms=agent_turn.played_ms, kept=kept
        )
        self._settle(agent_turn, kept)

    def _replace_history(self, agent_turn: AgentTurn, text: str) -> None:
        if agent_turn.history_index is not None:
            if text:
                self.history[agent_turn.history_index] = ChatMessage("assistant", text)
            else:
                del self.history[agent_turn.history_index]
        elif text:
            self.history.append(ChatMessage("assistant", text))

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
        if self._listener is None:
            await self.transport.send_event(
                {"type": "error", "code": "no_voice", "message": "this session has no speech recognition; type instead"}
            )
            return
        turn_events = self._listener.feed(frame, self.events.now())
        if self._speculator is not None:
            self._speculator.observe(turn_events, self._listener.turns)
        finished = None
        if self._live is not None:
            # While speech over the agent is being judged, the VAD gets the CPU; decoding catches up after.
            finished = self._live.observe(turn_events, self._listener.turns, hold=self._barge_onset_at is not None)
        for event in turn_events:
            await self._on_turn_event(event, finished if isinstance(event, UserTurnEnded) else None)
        current = self.current
        if (
            self._barge_onset_at is not None
            and current is not None
            and not current.settled
            and self._listener.voice_s >= self.options.barge_in.min_barge_in_speech_s
        ):
            await self._barge_in(current)

    async def _on_turn_event(self, event: TurnEvent, live: SpeechStream | None = None) -> None:
        """Acts on one TurnTaker event; `live` is the finished utterance's stream when STT runs live."""
        current = self.current
        speaking = current is not None and current.audible and not current.settled
        if isinstance(event, SpeechOnset):
            if speaking and self.options.barge_in.enabled:
                assert current is not None
                self._barge_onset_at = event.started_at
                if self.options.barge_in.pause_on_onset and not current.paused:
                    current.paused = True
                    await self.transport.pause(current.turn)
                    self.events.emit("playback_paused", turn=current.turn)
                    self._spawn(self._resume_if_unconfirmed(current))
        elif isinstance(event, SpeechStarted):
            self.events.emit("speech_start", at=round(event.started_at, 4), over_agent=speaking)
        elif isinstance(event, SpeechDropped):
            # Too short to be a turn: a click or a cough. The paused reply carries on where it was.
            if self._barge_onset_at is not None:
                await self._resume(current, reason="noise")
            self._barge_onset_at = None
        elif isinstance(event, UserTurnEnded):
            # Speech over the agent that ended short of the barge-in minimum: keep the reply paused
            # until its transcript says whether it was words (a new turn) or not (resume).
            self._barge_onset_at = None
            self.events.emit("speech_end", duration_s=round(event.speech_s, 3), reason=event.reason)
            metrics = TurnMetrics(turn=0)
            metrics.mark("speech_start", event.started_at)
            metrics.mark("speech_end", event.ended_at)
            metrics.mark("turn_confirmed", event.at)
            speculation = self._speculator.claim(event.audio) if self._speculator is not None else None
            self._spawn(self._transcribe(event.audio, metrics, speculation, live))

    async def _resume(self, agent_turn: AgentTurn | None, reason: str) -> None:
        """Playback of a paused, uncut reply goes on where it stopped."""
        if agent_turn is None or not agent_turn.paused or agent_turn.settled or self.current is not agent_turn:
            return
        agent_turn.paused = False
        await self.transport.resume(agent_turn.turn)
        self.events.emit("playback_resumed", turn=agent_turn.turn, reason=reason)

    async def _resume_if_unconfirmed(self, agent_turn: AgentTurn) -> None:
        """A pause that no barge-in or new turn has settled within the timeout was not an interruption."""
        while True:
            await asyncio.sleep(self.options.barge_in.false_interruption_timeout_s)
            if self.current is not agent_turn or not agent_turn.paused:
                return  # cut, replaced or resumed already
            listening = self._listener is not None and self._listener.turns.state != "silent"
            if not (listening or self._transcribing):
                break
            # The user is still talking, or their words are being transcribed: those decide.
        await self._resume(agent_turn, reason="timeout")

    async def _barge_in(self, agent_turn: AgentTurn) -> None:
        onset = self._barge_onset_at
        self._barge_onset_at = None
        unheard = agent_turn.progress.unspoken_text(agent_turn.played_ms)
        await self._cancel_current(reason="barge_in", flush=True)
        flushed_at = self.events.now()
        self.events.emit(
            "barge_in",
            turn=agent_turn.turn,
            onset_to_flush_ms=round((flushed_at - onset) * 1000, 1) if onset is not None else None,
            played_ms=agent_turn.played_ms,
        )
        # Keep what was left unsaid in case the interruption was only "mm-hm".
        self._pending_restart = unheard or None
        await self._set_state("listening")

    async def _transcribe(
        self,
        audio: AudioFrame,
        metrics: TurnMetrics,
        speculation: asyncio.Task[SpeculativeResult | None] | None = None,
        live: SpeechStream | None = None,
    ) -> None:
        self._transcribing += 1
        try:
            await self._transcribe_turn(audio, metrics, speculation, live)
        finally:
            self._transcribing -= 1

    async def _transcribe_turn(
        self,
        audio: AudioFrame,
        metrics: TurnMetrics,
        speculation: asyncio.Task[SpeculativeResult | None] | None,
        live: SpeechStream | None,
    ) -> None:
        assert self.parts.stt is not None
        metrics.mark("turn_start", metrics.marks["speech_end"])
        result = await _speculative_result(speculation)
        try:
            if result is not None:
                transcript = result.transcript
            elif live is not None:
                transcript = await _finish_live(live, self.parts.stt, audio)
            else:
                transcript = await self.parts.stt.transcribe(audio)
        except Exception as error:
            log.warning("speech recognition failed: %s", error)
            await self.transport.send_event({"type": "error", "code": "stt_failed", "message": str(error)})
            return
        metrics.mark("stt_final", result.stt_done_at if result is not None else self.events.now())
        metrics.durations_ms["stt_decode_ms"] = transcript.decode_s * 1000
        self.events.emit("stt_final", text=transcript.text, decode_s=round(transcript.decode_s, 4))
        if not _has_words(transcript.text):
            if result is not None:
                result.discard()
            await self._resume(self.current, reason="no_words")
            await self._false_interruption()
            return
        self._pending_restart = None
        await self.user_said(transcript.text, metrics, speculative=result)

    async def _false_interruption(self) -> None:
        """An interruption without words: say the rest of the cut reply instead of losing it.

        Restart rather than resume: by the time STT has spoken, the cut turn's audio is flushed
        on the client, so the unheard text is synthesised again from the start of its chunk.
        """
        rest, self._pending_restart = self._pending_restart, None
        if rest:
            self.events.emit("reply_restart", text=rest)
            await self.say(rest, kind="reply_restart")

    async def _on_played(self, turn: int, ms: int) -> None:
        current = self.current
        if current is None or current.turn != turn:
            return
        current.played_ms = max(current.played_ms, float(ms))
        done = current.task is None or current.task.done()
        if done and not current.settled and current.played_ms + 1 >= current.progress.audio_ms:
            self.events.emit("played", turn=turn, ms=ms)
            self._settle(current, current.progress.text)
            await self._set_state("listening")

    async def _set_state(self, state: str) -> None:
        await self.transport.send_event({"type": "state", "state": state})


def _has_words(text: str) -> bool:
    """Words that make a turn: not silence, not only "mm-hm"."""
    words = [w.strip(".,!?").lower() for w in text.split()]
    return bool(words) and not all(w in BACKCHANNELS for w in words)


def _clear_frames(task: asyncio.Task[Any]) -> None:
    """Clears the frames a finished task's exception still holds.

    A cancelled reply's CancelledError keeps its traceback, whose frames hold the session and the
    exception itself (an `__aexit__` on the way out holds it as a local): a cycle that only a full
    garbage collection would free, keeping a closed session's memory until then.
    """
    if not task.done():
        return
    try:
        task.result()
    except BaseException as error:  # noqa: BLE001 - only its frames are wanted
        chained: BaseException | None = error
        seen: set[int] = set()
        while chained is not None and id(chained) not in seen:
            seen.add(id(chained))
            traceback.clear_frames(chained.__traceback__)
            chained = chained.__context__


async def _finish_live(live: SpeechStream, stt: SpeechToText, audio: AudioFrame) -> Transcript:
    """The live stream's transcript; a stream that failed is not the user's problem: decode again."""
    try:
        return await live.finish()
    except Exception as error:
        log.warning("live transcription failed, decoding the utterance again: %s", error)
        return await stt.transcribe(audio)


async def _speculative_result(
    speculation: asyncio.Task[SpeculativeResult | None] | None,
) -> SpeculativeResult | None:
    """The claimed speculation's result, or None (none claimed, or it failed: transcribe again)."""
    if speculation is None:
        return None
    try:
        return await speculation
    except asyncio.CancelledError:
        if speculation.cancelled():
            return None  # the speculation was dropped, not this task
        raise
    except Exception as error:
        log.info("speculation failed, transcribing again: %s", error)
        return None


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("session task failed", exc_info=task.exception())

