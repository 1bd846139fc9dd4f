"""Live transcription: pocketsphinx decodes while the user speaks; the end of a turn waits for little."""

from __future__ import annotations

import asyncio

import pytest

from convers.audio import concat, silence
from convers.contracts.stt import StreamingSpeechToText
from convers.engine.live_stt import LiveTranscription
from convers.engine.timing import TurnTiming
from convers.engine.turns import TurnTaker, UserTurnEnded
from convers.providers.stt.pocketsphinx import PocketSphinxStt
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


async def test_a_cancelled_stream_returns_its_decoder() -> None:
    stt = PocketSphinxStt()
    stream = stt.open_stream()
    stream.feed(silence(0.2, 16000))
    await asyncio.sleep(0.3)
    await stream.cancel()
    await asyncio.sleep(0.5)
    again = stt.open_stream()
    again.feed(silence(0.2, 16000))
    assert (await again.finish()).text == ""
