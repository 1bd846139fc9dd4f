"""Piper with the packaged joe voice: its rate, speed, loudness and stopping; trust in the voice files.

The slow tests synthesise with the real voice. The fast tests build a small fake voice package to
show that a voice file which is not the recorded one is never loaded and `auto` falls back to
espeak-ng, and that a configured voice with a broken .onnx.json is named and passed over.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import json
import logging
import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from convers import registry
from convers.audio import concat, dbfs, rms
from convers.config import Settings
from convers.contracts.audio import AudioFrame
from convers.downloads import piper_voice_path
from convers.packaged_models import JOE_VOICE_FILE, PIPER_JOE, PackagedModel
from convers.providers.tts import piper
from convers.providers.tts.piper import PiperTts, PiperVoiceMissing, voice_files, voice_sources
from tests.fake_packages import fake_package, flip_one_byte

JOE_RATE = 22050
SENTENCE = "Please book a table for four people on Friday evening at the little place near the station."
SENTENCES = 12
LONG_TEXT = " ".join(f"This is sentence number {n} of a long answer that nobody wants to hear." for n in range(SENTENCES))

VOICE_INSTALLED = importlib.util.find_spec("piper") is not None and PIPER_JOE.folder() is not None
needs_voice = pytest.mark.skipif(
    not VOICE_INSTALLED, reason=f"needs piper-tts and the packaged voice: {PIPER_JOE.install_command}"
)


async def collect(tts: PiperTts, text: str) -> list[AudioFrame]:
    return [frame async for frame in tts.synthesize(text)]


def words_in(text: str) -> int:
    return len(text.split())


# -------------------------------------------------------------------- the real voice


@pytest.fixture(scope="module")
def joe(tmp_path_factory: pytest.TempPathFactory) -> PiperTts:
    if not VOICE_INSTALLED:
        pytest.skip("packaged voice not installed")
    settings = Settings.model_validate({"data_dir": str(tmp_path_factory.mktemp("data"))})
    assert registry.resolve_auto("tts", settings).name == "piper"
    tts = PiperTts.from_settings(settings)
    assert tts.model_path == PIPER_JOE.path(JOE_VOICE_FILE)  # the packaged voice, checked and chosen
    return tts


def spy_on_sentences(tts: PiperTts, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every chunk Piper itself synthesises for `tts` (one per sentence), as it comes."""
    voice = tts.load()
    real = voice.synthesize
    made: list[Any] = []

    def synthesize(*args: Any, **kwargs: Any) -> Iterator[Any]:
        for chunk in real(*args, **kwargs):
            made.append(chunk)
            yield chunk

    monkeypatch.setattr(voice, "synthesize", synthesize)
    return made


@pytest.mark.slow
@needs_voice
async def test_joe_speaks_at_the_rate_it_declares(joe: PiperTts, monkeypatch: pytest.MonkeyPatch) -> None:
    made = spy_on_sentences(joe, monkeypatch)
    frames = await collect(joe, SENTENCE)
    assert joe.sample_rate == JOE_RATE
    assert frames and {frame.sample_rate for frame in frames} == {JOE_RATE}
    assert made and {chunk.sample_rate for chunk in made} == {JOE_RATE}  # what Piper says it made
    assert all(len(frame.pcm) % 2 == 0 for frame in frames)


@needs_voice
def test_joe_runs_without_a_memory_pattern(joe: PiperTts) -> None:
    # Every sentence is a new input length: a memory pattern per length grew RSS in steps.
    assert joe.load().session.get_session_options().enable_mem_pattern is False


@pytest.mark.slow
@needs_voice
async def test_joe_is_audible_for_about_as_long_as_the_words_take(joe: PiperTts) -> None:
    audio = concat(await collect(joe, SENTENCE))
    assert joe.words_per_minute is None  # the settings leave the rate to the voice: about 250 wpm
    expected_s = words_in(SENTENCE) / 250 * 60
    assert expected_s / 2 < audio.duration_s < expected_s * 2, audio.duration_s
    assert rms(audio) > 0.03 and dbfs(audio) > -30, (rms(audio), dbfs(audio))


@pytest.mark.slow
@needs_voice
async def test_words_per_minute_is_the_rate_joe_speaks_at(joe: PiperTts) -> None:
    # Another sentence than the one the voice is timed on at load, so this is not the fit read back.
    spoken: dict[int, float] = {}
    for words_per_minute in (140, 175, 240):
        tts = PiperTts(joe.model_path, joe.config_path, words_per_minute=words_per_minute)
        seconds = concat(await collect(tts, SENTENCE)).duration_s
        spoken[words_per_minute] = words_in(SENTENCE) / seconds * 60
    for asked, rate in spoken.items():
        assert 0.8 * asked < rate < 1.2 * asked, spoken
    assert spoken[140] < spoken[175] < spoken[240], spoken


@needs_voice
def test_without_a_rate_joe_keeps_its_own_scale_and_is_not_timed(joe: PiperTts, monkeypatch: pytest.MonkeyPatch) -> None:
    tts = PiperTts(joe.model_path, joe.config_path)
    monkeypatch.setattr(tts, "_timed_scale", lambda *args: pytest.fail("timed without a rate asked"))
    tts.load()
    own = json.loads(joe.config_path.read_text(encoding="utf-8"))["inference"]["length_scale"]
    assert tts.length_scale == own


def test_length_scale_is_solved_on_the_line_through_two_timings() -> None:
    # 10 words: 4 s at scale 1.0, 2.5 s at 0.5, so 1.5 s of the time does not scale.
    assert piper.length_scale_for(150, 10, (1.0, 0.5), (4.0, 2.5)) == pytest.approx(1.0)
    assert piper.length_scale_for(200, 10, (1.0, 0.5), (4.0, 2.5)) == pytest.approx(2 / 3)  # 3 s
    # A rate faster than the voice can go keeps to the shortest scale that still speaks clearly.
    assert piper.length_scale_for(450, 10, (1.0, 0.5), (4.0, 2.5)) == piper.MIN_LENGTH_SCALE
    assert piper.length_scale_for(20, 10, (1.0, 0.5), (4.0, 2.5)) == piper.MAX_LENGTH_SCALE
    # A voice whose time does not grow with the scale keeps its own.
    assert piper.length_scale_for(200, 10, (1.0, 0.5), (4.0, 4.0)) == 1.0


@pytest.mark.slow
@needs_voice
@pytest.mark.parametrize("text", ["", "   ", "...", "\n"])
async def test_text_without_words_gives_no_speech(joe: PiperTts, text: str) -> None:
    frames = await collect(joe, text)
    if frames:  # a breath of silence would do too, but no speech
        audio = concat(frames)
        assert audio.duration_s < 0.5 and rms(audio) < 0.01, (audio.duration_s, rms(audio))


@pytest.mark.slow
@needs_voice
async def test_closing_the_stream_stops_synthesis_and_the_next_text_still_speaks(
    joe: PiperTts, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = spy_on_sentences(joe, monkeypatch)
    finished = threading.Event()
    real_chunks = joe._chunks

    def chunks(text: str, stop: threading.Event) -> Iterator[AudioFrame]:
        try:
            yield from real_chunks(text, stop)
        finally:
            finished.set()  # the worker thread's synthesiser is done, however it ended

    monkeypatch.setattr(joe, "_chunks", chunks)
    stream = joe.synthesize(LONG_TEXT)
    first = await anext(stream)
    assert first.duration_s > 0.5
    await stream.aclose()  # the listener barged in

    assert await asyncio.to_thread(finished.wait, 60), "synthesis did not stop after the stream was closed"
    # The sentence handed over, perhaps the one under way and one more; never the whole answer.
    assert len(made) <= 3, f"{len(made)} of {SENTENCES} sentences were synthesised"
    stopped_at = len(made)
    await asyncio.sleep(0.2)
    assert len(made) == stopped_at  # and nothing more afterwards

    finished.clear()
    again = concat(await collect(joe, "Still here."))
    assert finished.is_set() and again.duration_s > 0.3 and rms(again) > 0.03


# -------------------------------------------------------------------- trust in the voice files


def joe_files() -> dict[str, bytes]:
    """What PIPER_JOE records, in miniature: a voice that only the checks ever read."""
    config = {"audio": {"sample_rate": JOE_RATE}, "inference": {"length_scale": 1.0}}
    return {JOE_VOICE_FILE: b"\x08\x01" * 2048 + b"not a network", JOE_VOICE_FILE + ".json": json.dumps(config).encode()}


@pytest.fixture
def packaged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> PackagedModel:
    """A small fake of the packaged joe voice, installed on sys.path and used by the provider."""
    site = tmp_path / "site"
    voice = fake_package(site, joe_files(), subfolder="data")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(piper, "PIPER_JOE", voice)
    return voice


def settings_in(tmp_path: Path, **tts: Any) -> Settings:
    return Settings.model_validate({"data_dir": str(tmp_path / "data"), "tts": tts})


def test_packaged_voice_whose_files_match_is_loaded(packaged: PackagedModel, tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    assert registry.resolve_auto("tts", settings).name == "piper"
    folder = packaged.folder()
    assert folder is not None
    assert voice_files(settings) == (folder / JOE_VOICE_FILE, folder / (JOE_VOICE_FILE + ".json"))
    assert PiperTts.from_settings(settings).sample_rate == JOE_RATE


@pytest.mark.parametrize("corrupted", [JOE_VOICE_FILE, JOE_VOICE_FILE + ".json"])
def test_corrupt_packaged_voice_is_refused_and_auto_falls_back_to_espeak(
    packaged: PackagedModel, tmp_path: Path, corrupted: str
) -> None:
    settings = settings_in(tmp_path)
    folder = packaged.folder()
    assert folder is not None
    flip_one_byte(folder / corrupted)

    source = voice_sources(settings)[-1]
    assert not source.usable and source.broken
    assert source.problem is not None
    assert f"model file {folder / corrupted} has SHA-256" in source.problem
    assert "corrupt" in source.problem and packaged.install_command in source.problem
    with pytest.raises(PiperVoiceMissing, match=re.escape(str(folder / corrupted))):
        PiperTts.from_settings(settings)

    resolution = registry.resolve_auto("tts", settings)
    assert resolution.name == "espeak-ng"
    assert corrupted in resolution.detail  # says what it passed over


@pytest.fixture
def configured_voice(tmp_path: Path) -> Path:
    """A copy of a voice's config beside a stand-in .onnx, as a user would point tts.piper_voice at it."""
    voice = tmp_path / "voices" / "en_US-mine-medium.onnx"
    voice.parent.mkdir()
    voice.write_bytes(joe_files()[JOE_VOICE_FILE])
    real_config = PIPER_JOE.path(JOE_VOICE_FILE + ".json")
    config = voice.with_name(voice.name + ".json")
    if real_config is not None and real_config.is_file():
        shutil.copyfile(real_config, config)
    else:
        config.write_bytes(joe_files()[JOE_VOICE_FILE + ".json"])
    return voice


def test_configured_voice_ranks_first(packaged: PackagedModel, configured_voice: Path, tmp_path: Path) -> None:
    settings = settings_in(tmp_path, piper_voice=str(configured_voice))
    tts = PiperTts.from_settings(settings)
    assert tts.model_path == configured_voice and tts.sample_rate == JOE_RATE


@pytest.mark.parametrize(
    ("config_text", "says"),
    [
        (None, "is missing: it must sit beside en_US-mine-medium.onnx"),
        ("<html>Not Found</html>", "is not a voice config (JSONDecodeError"),
        ('{"audio": {}}', "is not a voice config (KeyError"),
    ],
    ids=["missing", "not-json", "no-sample-rate"],
)
def test_configured_voice_with_a_broken_config_is_named_and_passed_over(
    packaged: PackagedModel,
    configured_voice: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    config_text: str | None,
    says: str,
) -> None:
    config = configured_voice.with_name(configured_voice.name + ".json")
    if config_text is None:
        config.unlink()
    else:
        config.write_text(config_text)
    settings = settings_in(tmp_path, piper_voice=str(configured_voice))

    mine = voice_sources(settings)[0]
    assert not mine.usable and mine.broken
    assert mine.problem is not None and str(config) in mine.problem and says in mine.problem
    with pytest.raises(PiperVoiceMissing, match=re.escape(says)):
        PiperTts(configured_voice, config)  # loaded directly, it says the same

    # `auto` still speaks, with the packaged voice, and the log says why.
    with caplog.at_level(logging.WARNING, logger="convers.model_checks"):
        tts = PiperTts.from_settings(settings)
    folder = packaged.folder()
    assert folder is not None and tts.model_path == folder / JOE_VOICE_FILE
    assert str(config) in caplog.text and says in caplog.text
    assert registry.resolve_auto("tts", settings).name == "piper"


def write_pulled_voice(settings: Settings, record_matches: bool) -> Path:
    """The pulled default voice with the SHA-256 `convers models pull` recorded (right or wrong) in pulled.json."""
    voice = piper_voice_path(settings)
    voice.parent.mkdir(parents=True)
    config = voice.with_name(voice.name + ".json")
    voice.write_bytes(b"pulled voice")
    config.write_bytes(joe_files()[JOE_VOICE_FILE + ".json"])
    record = {str(path): hashlib.sha256(path.read_bytes()).hexdigest() for path in (voice, config)}
    if not record_matches:
        record[str(voice)] = hashlib.sha256(b"what was downloaded").hexdigest()
    (settings.data_path / "models" / "pulled.json").write_text(json.dumps(record))
    return voice


def test_pulled_voice_with_its_recorded_checksum_ranks_first(packaged: PackagedModel, tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    pulled = write_pulled_voice(settings, record_matches=True)
    assert voice_files(settings)[0] == pulled


def test_pulled_voice_whose_checksum_mismatches_is_passed_over_for_the_packaged_one(
    packaged: PackagedModel, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_in(tmp_path)
    pulled = write_pulled_voice(settings, record_matches=False)
    with caplog.at_level(logging.WARNING, logger="convers.model_checks"):
        model, _ = voice_files(settings)
    folder = packaged.folder()
    assert folder is not None and model == folder / JOE_VOICE_FILE
    assert "passes over" in caplog.text and str(pulled) in caplog.text
    assert "convers models pull tts --force" in caplog.text
