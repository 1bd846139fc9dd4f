"""Live transcription: the utterance is decoded while the user speaks, not after they stop.

With a streaming STT the end of a turn leaves only the decoder's final step (tens of ms for
pocketsphinx) instead of a decode of the whole utterance (0.5 s per second of speech on 2 cores,
measured with `convers bench latency`). Speculation uses it too: at a pause the stream is
finished early (`finish_early`), and if the user speaks on, a fresh stream is fed the utterance
from its start and catches up while they talk.
"""

from __future__ import annotations

from convers.contracts.audio import AudioFrame
from convers.contracts.stt import SpeechStream, StreamingSpeechToText, Transcript
from convers.engine.listening.turn_taking import (
    SpeechResumed,
    TurnEvent,
    TurnTaker,
    UserTurnEnded,
)


class LiveTranscription:
    """Feeds the TurnTaker's growing utterance into a stream from the moment speech is confirmed."""

    def __init__(self, stt: StreamingSpeechToText) -> None:
        self.stt = stt
        self._stream: SpeechStream | None = None
        self._fed_bytes = 0
        # Set when speculation finished the stream at a pause: no new stream until speech resumes.
        self._finished_early = False

    def observe(self, events: list[TurnEvent], turns: TurnTaker, hold: bool = False) -> SpeechStream | None:
        """Call after each inbound frame; returns the finished utterance's stream when a turn ended.

        `hold` defers opening a stream (a barge-in is being decided: decoding would compete with
        the VAD for the event loop); once released, the stream is fed the utterance from its start.
        """
        ended: SpeechStream | None = None
        for event in events:
            if isinstance(event, UserTurnEnded):
                ended = self._take(event.audio)
                self._finished_early = False
            elif isinstance(event, SpeechResumed):
                self._finished_early = False
        if self._stream is None and not self._finished_early and not hold and turns.state in ("speaking", "pausing"):
            # Speech confirmed, or resumed after an early finish: decode the utterance from its start.
            self._stream = self.stt.open_stream()
            self._fed_bytes = 0
        if self._stream is not None:
            fresh = turns.utterance_since(self._fed_bytes)
            if fresh:
                self._stream.feed(AudioFrame(fresh, turns.sample_rate))
                self._fed_bytes += len(fresh)
        return ended

    async def finish_early(self, audio: AudioFrame) -> Transcript:
        """Speculation at a pause: the transcript of what was fed so far (it covers `audio`)."""
        stream, self._stream = self._stream, None
        self._finished_early = True
        self._fed_bytes = 0
        if stream is None:
            return await self.stt.transcribe(audio)
        return await stream.finish()

    def _take(self, audio: AudioFrame) -> SpeechStream | None:
        stream, self._stream = self._stream, None
        if stream is not None and len(audio.pcm) > self._fed_bytes:
            stream.feed(AudioFrame(audio.pcm[self._fed_bytes :], audio.sample_rate))
        self._fed_bytes = 0
        return stream

    async def aclose(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            await stream.cancel()
