"""Live transcription: pocketsphinx decodes while the user speaks; the end of a turn waits for little."""

from __future__ import annotations

import asyncio

import pytest

from convers.audio import concat, silence
from convers.contracts.stt import StreamingSpeechToText
from convers.engine.listening.live_stt import LiveTranscription
from convers.engine.listening.turn_taking import TurnTaker, UserTurnEnded
from convers.policies import TurnTiming
from convers.providers.stt.pocketsphinx import PocketSphinxStt
from tests.doubles import mic_frame
from tests.speech import SpeechMaker, speech  # noqa: F401

pytestmark = pytest.mark.slow


async def test_pocketsphinx_stream_hears_what_the_one_shot_decode_hears(speech: SpeechMaker) -> None:
    stt = PocketSphinxStt()
    assert isinstance(stt, StreamingSpeechToText)
    audio = speech.frame("one two three four five")
    stream = stt.open_stream()
    step = 16000 // 50 * 2  # 20 ms frames, as a microphone delivers them
    for start in range(0, len(audio.pcm), step):
        stream.feed(type(audio)(audio.pcm[start : start + step], audio.sample_rate))
        await asyncio.sleep(0)
    live = await stream.finish()
    numbers = {"one", "two", "three", "four", "five"}
    assert numbers & set(live.text.split())


async def test_only_the_last_step_is_left_at_the_end_of_the_turn(speech: SpeechMaker) -> None:
    stt = PocketSphinxStt()
    await stt.warm_up()
    audio = speech.frame("what is the weather like today in the city")
    stream = stt.open_stream()
    for start in range(0, len(audio.pcm), 640):
        stream.feed(type(audio)(audio.pcm[start : start + 640], audio.sample_rate))
        await asyncio.sleep(0.02 / 4)  # faster than real time, slower than the decoder
    await asyncio.sleep(1.0)  # the decoder catches up while the user is "silent"
    transcript = await stream.finish()
    whole = await stt.transcribe(audio)
    # What the user waits for is the final step, a fraction of decoding the whole utterance.
    assert transcript.decode_s < whole.decode_s / 2
    assert {"weather", "today", "city", "what"} & set(transcript.text.split())


async def test_live_transcription_follows_the_turn_taker(speech: SpeechMaker) -> None:
    stt = PocketSphinxStt()
    timing = TurnTiming()
    turns = TurnTaker(timing)
    live = LiveTranscription(stt)
    utterance = concat([silence(0.3, 16000), speech.frame("one two three"), silence(0.8, 16000)])
    from convers.providers.vad.energy import EnergyVad

    vad = EnergyVad()
    finished = None
    frame_bytes = vad.frame_samples * 2
    for index, start in enumerate(range(0, len(utterance.pcm) - frame_bytes + 1, frame_bytes)):
        frame = type(utterance)(utterance.pcm[start : start + frame_bytes], 16000)
        events = turns.feed(vad.speech_probability(frame.pcm), (index + 1) * vad.frame_samples / 16000, frame)
        ended = live.observe(events, turns)
        await asyncio.sleep(0)
        if ended is not None:
            finished = (ended, next(e for e in events if isinstance(e, UserTurnEnded)))
    assert finished is not None, "the turn never ended"
    stream, event = finished
    transcript = await stream.finish()
    assert len({"one", "two", "three"} & set(transcript.text.split())) >= 1
    assert event.audio.duration_s > 0.5


class CountingSphinx(PocketSphinxStt):
    """Counts the decoders it builds: a stream that reuses a returned one builds none."""

    def __init__(self) -> None:
        super().__init__()
        self.made = 0

    def _new_decoder(self, **defaults):
        self.made += 1
        return super()._new_decoder(**defaults)


async def test_a_cancelled_stream_returns_its_decoder() -> None:
    stt = CountingSphinx()
    stream = stt.open_stream()
    stream.feed(silence(0.2, 16000))
    async with asyncio.timeout(10):
        while not stream._queue.empty():  # the worker has its decoder and is decoding the audio
            await asyncio.sleep(0.01)
    await stream.cancel()
    async with asyncio.timeout(10):
        while not stt._spare:  # the cancelled utterance is ended in the background, then given back
            await asyncio.sleep(0.01)
    again = stt.open_stream()
    again.feed(silence(0.2, 16000))
    assert (await again.finish()).text == ""
    assert stt.made == 1  # the second stream decoded with the first one's decoder: none was built for it


class CountingStream:
    """Counts the bytes fed; its transcript says how many it got."""

    def __init__(self) -> None:
        self.fed = 0
        self.cancelled = False

    def feed(self, audio) -> None:
        self.fed += len(audio.pcm)

    async def finish(self):
        from convers.contracts.stt import Transcript

        return Transcript(f"{self.fed} bytes")

    async def cancel(self) -> None:
        self.cancelled = True


class CountingStt:
    name = "counting"
    sample_rate = 16000

    def __init__(self) -> None:
        self.streams: list[CountingStream] = []

    def open_stream(self) -> CountingStream:
        self.streams.append(CountingStream())
        return self.streams[-1]

    async def transcribe(self, audio):
        raise AssertionError("a live session should not decode the whole utterance")


async def test_early_finish_then_resumed_speech_re_decodes_from_the_start() -> None:
    import numpy as np

    stt = CountingStt()
    turns = TurnTaker(TurnTiming())
    live = LiveTranscription(stt)
    at = 0.0

    def feed(pattern: str) -> list:
        nonlocal at
        seen = []
        for frame in (mic_frame(c == "L") for c in pattern):
            at += 0.02
            loud = np.abs(np.frombuffer(frame.pcm, dtype="<i2")).max() > 1000
            events = turns.feed(1.0 if loud else 0.0, at, frame)
            ended = live.observe(events, turns)
            seen.append((events, ended))
        return seen

    feed("L" * 25)  # 0.5 s of speech: a stream is open and fed
    assert len(stt.streams) == 1 and stt.streams[0].fed > 0
    feed("." * 12)  # a pause: speculation finishes the stream early
    early = await live.finish_early(turns.provisional_audio())
    assert early.text == f"{stt.streams[0].fed} bytes"
    feed("." * 3)
    assert len(stt.streams) == 1  # no new stream while the pause goes on
    feed("L" * 10)  # the user speaks on: a fresh stream gets the whole utterance again
    assert len(stt.streams) == 2
    assert stt.streams[1].fed > stt.streams[0].fed
    results = feed("." * 30)  # end of turn
    finished = [ended for _, ended in results if ended is not None]
    assert finished == [stt.streams[1]]
