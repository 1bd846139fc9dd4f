"""Text to speech: espeak-ng streams and stops at once; Piper and Kokoro say clearly what is missing."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import signal
from pathlib import Path
from typing import Any

import pytest

from convers import registry
from convers.audio import concat, rms
from convers.config import Settings
from convers.contracts.audio import AudioFrame
from convers.contracts.tts import TextToSpeech
from convers.providers.tts.espeak import EspeakTts, WavHeaderParser, WavStreamError
from convers.providers.tts.kokoro import KokoroTts
from convers.providers.tts.piper import PiperTts

LONG_TEXT = "This sentence is long enough to come out of the synthesiser in several pieces. " * 4


async def collect(tts: TextToSpeech, text: str) -> list[AudioFrame]:
    return [frame async for frame in tts.synthesize(text)]


@pytest.fixture
def espeak() -> EspeakTts:
    return EspeakTts.from_settings(Settings())


def test_espeak_is_available_and_registered() -> None:
    result = EspeakTts.availability(Settings())
    assert result.usable and "espeak-ng" in result.detail
    assert isinstance(registry.create("tts", "espeak-ng", Settings()), TextToSpeech)


async def test_espeak_streams_several_chunks_at_its_rate(espeak: EspeakTts) -> None:
    frames = await collect(espeak, LONG_TEXT)
    assert len(frames) > 3
    assert {f.sample_rate for f in frames} == {espeak.sample_rate} == {22050}
    audio = concat(frames)
    # 56 words at 175 words per minute is about 19 s of speech.
    assert 10 < audio.duration_s < 30
    assert rms(audio) > 0.01
    assert all(len(f.pcm) % 2 == 0 for f in frames)


async def test_espeak_rate_follows_words_per_minute() -> None:
    slow = concat(await collect(EspeakTts(words_per_minute=120), "one two three four five six seven"))
    fast = concat(await collect(EspeakTts(words_per_minute=300), "one two three four five six seven"))
    assert fast.duration_s < slow.duration_s * 0.7


async def test_espeak_empty_text_yields_nothing(espeak: EspeakTts) -> None:
    assert await collect(espeak, "   ") == []


async def test_espeak_text_starting_with_a_dash_is_spoken(espeak: EspeakTts) -> None:
    frames = await collect(espeak, "--version and -v are not options here")
    assert concat(frames).duration_s > 1.0


def spy_on_processes(espeak: EspeakTts, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every espeak-ng process the provider starts (the one speaking and the spare for the next text)."""
    started: list[Any] = []
    real = espeak._spawn

    def spy() -> Any:
        process = real()
        started.append(process)
        return process

    monkeypatch.setattr(espeak, "_spawn", spy)
    return started


async def test_closing_the_stream_kills_espeak_at_once(espeak: EspeakTts, monkeypatch: pytest.MonkeyPatch) -> None:
    started = spy_on_processes(espeak, monkeypatch)
    stream = espeak.synthesize(LONG_TEXT * 20)
    first = await anext(stream)
    assert first.samples > 0
    speaking = started[0]
    assert speaking.poll() is None  # still synthesising (its pipe is full)
    await stream.aclose()
    assert speaking.returncode == -signal.SIGKILL
    await espeak.aclose()


async def test_cancelling_the_consumer_kills_espeak(espeak: EspeakTts, monkeypatch: pytest.MonkeyPatch) -> None:
    started = spy_on_processes(espeak, monkeypatch)
    first_chunk = asyncio.Event()

    async def consume() -> None:
        async with contextlib.aclosing(espeak.synthesize(LONG_TEXT * 20)) as stream:
            async for _ in stream:
                first_chunk.set()
                await asyncio.sleep(10)  # a slow speaker: the reply gets cancelled meanwhile

    task = asyncio.create_task(consume())
    # The consumer must close what it iterates (contextlib.aclosing): a cancelled `async for`
    # alone leaves the generator to the garbage collector.
    await first_chunk.wait()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert started[0].returncode == -signal.SIGKILL
    await espeak.aclose()


async def test_the_next_text_is_spoken_by_a_process_started_ahead(espeak: EspeakTts, monkeypatch: pytest.MonkeyPatch) -> None:
    started = spy_on_processes(espeak, monkeypatch)
    first = await collect(espeak, "First sentence.")
    for _ in range(200):  # the spare starts in the background
        if len(started) == 2:
            break
        await asyncio.sleep(0.01)
    assert len(started) == 2
    spare = started[1]
    assert spare.poll() is None  # waiting on stdin for the next text
    second = await collect(espeak, "Second sentence.")
    assert concat(first).duration_s > 0.3 and concat(second).duration_s > 0.3
    assert spare.returncode == 0  # it spoke the second text and exited
    await espeak.aclose()
    for _ in range(200):
        if all(p.poll() is not None for p in started):
            break
        await asyncio.sleep(0.01)
    assert all(p.poll() is not None for p in started)  # no espeak-ng left behind


@pytest.mark.parametrize("voice", ["en-us", "en-gb-x-rp", "en-us+m3", "English_(America)"])
def test_espeak_known_voices_are_available(voice: str) -> None:
    assert EspeakTts.availability(settings_with(voice=voice)).usable


def test_espeak_unknown_voice_is_reported_not_silently_replaced() -> None:
    # espeak-ng itself would speak with its default voice and exit 0.
    result = EspeakTts.availability(settings_with(voice="no-such-voice"))
    assert not result.usable and "no-such-voice" in result.detail and "espeak-ng --voices" in result.detail


@pytest.mark.slow
async def test_espeak_speech_is_recognisable() -> None:
    from convers.providers.stt.pocketsphinx import PocketSphinxStt

    audio = concat(await collect(EspeakTts(voice="en-us", words_per_minute=150), "one two three four five"))
    transcript = await PocketSphinxStt().transcribe(audio)
    heard = {w.lower() for w in transcript.text.split()}
    assert len(heard & {"one", "two", "three", "four", "five"}) >= 2, transcript.text


@pytest.mark.parametrize(
    ("chunks", "rate"),
    [
        ([b"RIFF\x24\xf0\xff\x7fWAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00\x22\x56\x00\x00\x44\xac\x00\x00\x02\x00\x10\x00data\x00\xf0\xff\x7f\x01\x02"], 22050),
        # The header arriving a few bytes at a time.
        ([b"RIF", b"F\x24\xf0\xff\x7fWAVEf", b"mt \x10\x00\x00\x00\x01\x00\x01\x00\x80\x3e\x00\x00\x00\x7d\x00\x00\x02\x00\x10\x00da", b"ta\x00\xf0\xff\x7f\x01\x02"], 16000),
    ],
)
def test_wav_header_parser_finds_pcm_after_the_header(chunks: list[bytes], rate: int) -> None:
    parser = WavHeaderParser()
    pcm = b"".join(parser.feed(c) for c in chunks)
    assert parser.sample_rate == rate
    assert pcm == b"\x01\x02"
    assert parser.feed(b"\x03\x04") == b"\x03\x04"


def test_wav_header_parser_refuses_non_wav_and_stereo() -> None:
    with pytest.raises(WavStreamError, match="RIFF"):
        WavHeaderParser().feed(b"not a wav file at all")
    stereo = b"RIFF\x00\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x02\x00\x22\x56\x00\x00\x44\xac\x00\x00\x04\x00\x10\x00"
    with pytest.raises(WavStreamError, match="2 channels"):
        WavHeaderParser().feed(stereo)


# ------------------------------------------------------------------ piper and kokoro

PIPER_INSTALLED = importlib.util.find_spec("piper") is not None
KOKORO_INSTALLED = importlib.util.find_spec("kokoro_onnx") is not None


def settings_with(data_dir: str | None = None, **tts: Any) -> Settings:
    return Settings.model_validate({"tts": tts, **({"data_dir": data_dir} if data_dir else {})})


def test_piper_without_a_voice_says_what_to_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from convers.packaged_models import PackagedModel

    absent = PackagedModel("Piper voice (package absent)", "absent-voice-package", "convers_no_such_module", "data", {})
    monkeypatch.setattr("convers.providers.tts.piper.PIPER_JOE", absent)
    result = PiperTts.availability(settings_with(data_dir=str(tmp_path)))
    assert not result.usable
    if PIPER_INSTALLED:
        assert "convers models pull tts" in result.detail and "pip install --no-deps" in result.detail
    else:
        assert "pip install" in result.detail


@pytest.mark.skipif(not PIPER_INSTALLED, reason="piper-tts not installed")
def test_piper_missing_voice_files_are_named(tmp_path: Path) -> None:
    from convers.packaged_models import PIPER_JOE

    voice = tmp_path / "en_US-lessac-medium.onnx"
    result = PiperTts.availability(settings_with(piper_voice=str(voice), data_dir=str(tmp_path)))
    assert str(voice) in result.detail
    voice.write_bytes(b"")
    result = PiperTts.availability(settings_with(piper_voice=str(voice), data_dir=str(tmp_path)))
    assert "en_US-lessac-medium.onnx.json is missing" in result.detail
    if PIPER_JOE.folder() is None:
        assert not result.usable
        with pytest.raises(FileNotFoundError, match="onnx.json"):
            PiperTts.from_settings(settings_with(piper_voice=str(voice), data_dir=str(tmp_path)))
    else:  # the next choice takes over, and says what it passed over
        assert result.usable and "passed over configured voice" in result.detail
        tts = PiperTts.from_settings(settings_with(piper_voice=str(voice), data_dir=str(tmp_path)))
        assert tts.model_path.name == "en_US-joe-medium.onnx"


def test_piper_reads_rate_and_speed_from_the_voice_config(tmp_path: Path) -> None:
    voice = tmp_path / "voice.onnx"
    config = tmp_path / "voice.onnx.json"
    voice.write_bytes(b"")
    config.write_text('{"audio": {"sample_rate": 22050}, "inference": {"length_scale": 0.9}}')
    tts = PiperTts(voice, config, words_per_minute=350)
    assert tts.sample_rate == 22050
    # The voice's own scale until it is loaded and timed (tests/test_tts_piper.py times joe).
    assert tts.length_scale == pytest.approx(0.9) and tts.words_per_minute == 350


def test_kokoro_without_files_says_what_to_set(tmp_path: Path) -> None:
    result = KokoroTts.availability(Settings())
    assert not result.usable
    if KOKORO_INSTALLED:
        assert "tts.kokoro_model" in result.detail
        missing = settings_with(kokoro_model=str(tmp_path / "k.onnx"), kokoro_voices=str(tmp_path / "v.bin"))
        assert "k.onnx" in KokoroTts.availability(missing).detail
    else:
        assert "pip install" in result.detail
        with pytest.raises(ModuleNotFoundError, match="kokoro"):
            KokoroTts.from_settings(Settings())


def test_kokoro_speed_is_clamped_to_what_it_accepts(tmp_path: Path) -> None:
    assert KokoroTts(tmp_path, tmp_path, words_per_minute=450).speed == 2.0
    assert KokoroTts(tmp_path, tmp_path, words_per_minute=80).speed == 0.5
    assert KokoroTts(tmp_path, tmp_path, words_per_minute=175).speed == 1.0
    assert KokoroTts(tmp_path, tmp_path).speed == 1.0  # no rate asked: the voice's own
