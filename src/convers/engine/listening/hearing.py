"""Hearing: the listen side of a voice session, from inbound frames to a user turn's transcript.

It bundles what listens to the user (VAD and `TurnTaker` through `Listener`, live decoding, the
end-of-turn judge, speculation) and turns an ended utterance into its transcript. It decides
nothing about the agent's turn: that is the barge-in arbiter's job (engine/barge_in/arbiter.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from convers.contracts.audio import AudioFrame
from convers.contracts.llm import ChatMessage
from convers.contracts.memory import MemoryHit
from convers.contracts.stt import (
    SpeechStream,
    SpeechToText,
    StreamingSpeechToText,
    Transcript,
)
from convers.engine.listening.end_of_turn import TurnEndWatch
from convers.engine.listening.listener import Listener
from convers.engine.listening.live_stt import LiveTranscription
from convers.engine.listening.speculation import SpeculativeResult, Speculator
from convers.engine.listening.turn_taking import TurnEvent, UserTurnEnded
from convers.engine.listening.verdict import verdict_of
from convers.engine.parts import SessionOptions, SessionParts
from convers.events import EventLog, TurnMetrics

log = logging.getLogger(__name__)

Speculation = asyncio.Task[SpeculativeResult | None]


class Hearing:
    """Listens to one session's user: frames in, turn events out; ended turns transcribed."""

    def __init__(
        self,
        parts: SessionParts,
        options: SessionOptions,
        events: EventLog,
        *,
        recall: Callable[[str], Awaitable[list[MemoryHit]]] | None,
        build_messages: Callable[[str, list[MemoryHit]], list[ChatMessage]],
    ) -> None:
        if parts.vad is None or parts.stt is None:
            raise ValueError("Hearing needs a VAD and an STT: a session without them is text-only")
        self.stt: SpeechToText = parts.stt
        self.events = events
        self.listener = Listener(parts.vad, options.turns)
        self.live: LiveTranscription | None = None
        if isinstance(parts.stt, StreamingSpeechToText) and options.live_transcription:
            self.live = LiveTranscription(parts.stt)
        speculating = options.speculation.enabled
        self.turn_end: TurnEndWatch | None = None
        if parts.turn_end is not None:
            self.turn_end = TurnEndWatch(parts.turn_end, options.turns, events, transcripts=speculating)
        self.speculator: Speculator | None = None
        if speculating:
            policy = options.barge_in
            self.speculator = Speculator(
                parts.stt,
                events,
                options.speculation,
                post_roll_s=options.turns.post_roll_s,
                recall=recall,
                build_messages=build_messages,
                llm=parts.llm,
                tts=parts.tts,
                max_tokens=options.max_tokens,
                temperature=options.temperature,
                usable_text=lambda text: verdict_of(text, policy) == "words",
                transcribe=self.live.finish_early if self.live is not None else None,
                on_transcript=self.turn_end.transcript if self.turn_end is not None else None,
            )

    @property
    def voice_s(self) -> float:
        """How long the user's voice has lasted in the current utterance (0 when silent)."""
        return self.listener.voice_s

    def feed(self, frame: AudioFrame, now: float, hold: bool) -> tuple[list[TurnEvent], SpeechStream | None]:
        """One inbound frame: its turn events, and the live stream of an utterance that ended with it.

        `hold`: speech over the agent is being judged; live decoding waits so the VAD gets the CPU.
        """
        turn_events = self.listener.feed(frame, now)
        turns = self.listener.turns
        if self.speculator is not None:
            self.speculator.observe(turn_events, turns)
        if self.turn_end is not None:
            self.turn_end.observe(turn_events, turns)
        finished = self.live.observe(turn_events, turns, hold=hold) if self.live is not None else None
        return turn_events, finished

    def utterance_began(self, over_agent: bool) -> None:
        """The user started speaking (`SpeechStarted`), over the agent or not."""
        if self.turn_end is not None:
            self.turn_end.utterance_began(over_agent)

    def claim(self, ended: UserTurnEnded) -> Speculation | None:
        """The speculation that ran on exactly this turn's audio, if any."""
        return self.speculator.claim(ended.audio) if self.speculator is not None else None

    async def transcribe(
        self, audio: AudioFrame, speculation: Speculation | None, live: SpeechStream | None
    ) -> tuple[Transcript, SpeculativeResult | None]:
        """The turn's transcript: from its speculation, its live stream, or a decode of `audio`."""
        result = await _speculative_result(speculation)
        if result is not None:
            return result.transcript, result
        if live is not None:
            return await _finish_live(live, self.stt, audio), None
        return await self.stt.transcribe(audio), None

    @staticmethod
    async def drop(speculation: Speculation | None, live: SpeechStream | None) -> None:
        """Stops a claimed speculation and a live stream: the turn is decoded from other audio after all."""
        if speculation is not None:
            speculation.cancel()
            result = await _speculative_result(speculation)
            if result is not None:
                result.discard()  # it had finished: its prefetched reply must not run on
        if live is not None:
            await live.cancel()

    async def aclose(self) -> None:
        if self.speculator is not None:
            await self.speculator.aclose()
        if self.turn_end is not None:
            await self.turn_end.aclose()
        if self.live is not None:
            await self.live.aclose()


def turn_metrics(ended: UserTurnEnded) -> TurnMetrics:
    """The timeline of a spoken user turn so far; the session numbers it when the reply starts."""
    metrics = TurnMetrics(turn=0)
    metrics.mark("speech_start", ended.started_at)
    metrics.mark("speech_end", ended.ended_at)
    metrics.mark("turn_confirmed", ended.at)
    metrics.mark("turn_start", ended.ended_at)
    return metrics


async def _finish_live(live: SpeechStream, stt: SpeechToText, audio: AudioFrame) -> Transcript:
    """The live stream's transcript; a stream that failed is not the user's problem: decode again."""
    try:
        return await live.finish()
    except Exception as error:
        log.warning("live transcription failed, decoding the utterance again: %s", error)
        return await stt.transcribe(audio)


async def _speculative_result(speculation: Speculation | None) -> SpeculativeResult | None:
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
