"""Kokoro-82M through kokoro-onnx: a model file and a voices file, 24 kHz output."""

from __future__ import annotations

import importlib.util
import re
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from convers.audio import float32_to_pcm16
from convers.config import ProviderOptions, provider_options
from convers.contracts.audio import AudioFrame
from convers.contracts.provider import RANK_USER_MODEL, AutoChoice, Availability
from convers.providers.onnx import cpu_session
from convers.providers.tts._threaded import iterate_in_thread

if TYPE_CHECKING:
    from convers.config import Settings

KOKORO_RATE = 24000
NATURAL_WORDS_PER_MINUTE = 175
# Kokoro refuses speeds outside this range.
MIN_SPEED, MAX_SPEED = 0.5, 2.0
# Synthesising sentence by sentence gets the first one out before the rest are done.
_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+")


class KokoroFilesMissing(FileNotFoundError):
    """The Kokoro model or voices file is not configured or not there."""


def kokoro_files(settings: Settings) -> tuple[Path, Path]:
    tts = settings.tts
    if tts.kokoro_model is None or tts.kokoro_voices is None:
        raise KokoroFilesMissing(
            "Kokoro is not configured: set tts.kokoro_model (kokoro-v1.0.onnx) and tts.kokoro_voices (voices-v1.0.bin)"
        )
    model, voices = tts.kokoro_model.expanduser(), tts.kokoro_voices.expanduser()
    for path, key in ((model, "tts.kokoro_model"), (voices, "tts.kokoro_voices")):
        if not path.is_file():
            raise KokoroFilesMissing(f"Kokoro file {path} does not exist: download it or fix {key}")
    return model, voices


class KokoroTts:
    """Synthesises with kokoro-onnx in a worker thread, one chunk per sentence of the text given."""

    name = "kokoro"
    sample_rate = KOKORO_RATE

    def __init__(
        self,
        model_path: Path,
        voices_path: Path,
        *,
        voice: str = "af_heart",
        words_per_minute: int | None = None,
        language: str = "en-us",
        threads: int = 1,
    ) -> None:
        self.model_path = model_path
        self.voices_path = voices_path
        self.voice = voice
        self.language = language
        self.threads = threads
        # Unset: the voice's own pace (speed 1.0).
        speed = 1.0 if words_per_minute is None else words_per_minute / NATURAL_WORDS_PER_MINUTE
        self.speed = min(MAX_SPEED, max(MIN_SPEED, speed))
        self._kokoro: Any = None
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> KokoroTts:
        if importlib.util.find_spec("kokoro_onnx") is None:
            raise ModuleNotFoundError("kokoro-onnx is not installed: pip install 'convers[kokoro]'")
        model, voices = kokoro_files(settings)
        tts = settings.tts
        return cls(
            model,
            voices,
            voice=tts.kokoro_voice,
            words_per_minute=tts.words_per_minute,
            language=provider_options(cls.Options, settings, "tts", "kokoro").language,
            threads=tts.threads,
        )

    class Options(ProviderOptions):
        """tts.options for Kokoro."""

        language: str = "en-us"

    @classmethod
    def auto_choice(cls, settings: Settings) -> AutoChoice:
        """Kokoro takes part when the user configured its files."""
        available = cls.availability(settings)
        return AutoChoice(RANK_USER_MODEL, available.usable, available.detail)

    @classmethod
    def availability(cls, settings: Settings) -> Availability:
        if importlib.util.find_spec("kokoro_onnx") is None:
            return Availability(False, "kokoro-onnx is not installed: pip install 'convers[kokoro]'")
        try:
            model, _ = kokoro_files(settings)
        except KokoroFilesMissing as missing:
            return Availability(False, str(missing))
        return Availability(True, f"model {model}, voice {settings.tts.kokoro_voice}")

    def load(self) -> Any:
        with self._lock:
            if self._kokoro is None:
                from kokoro_onnx import Kokoro

                session = cpu_session(self.model_path, self.threads)
                if hasattr(Kokoro, "from_session"):
                    self._kokoro = Kokoro.from_session(session, str(self.voices_path))
                else:  # older kokoro-onnx: its own session, default threads
                    self._kokoro = Kokoro(str(self.model_path), str(self.voices_path))
            return self._kokoro

    def _chunks(self, text: str, stop: threading.Event) -> Iterator[AudioFrame]:
        kokoro = self.load()
        for sentence in _SENTENCE_END.split(text.strip()):
            if stop.is_set():
                return
            if not sentence:
                continue
            samples, rate = kokoro.create(sentence, voice=self.voice, speed=self.speed, lang=self.language)
            if rate != self.sample_rate:
                raise RuntimeError(f"Kokoro produced {rate} Hz audio, expected {self.sample_rate} Hz")
            yield AudioFrame(float32_to_pcm16(np.asarray(samples, dtype=np.float32)), self.sample_rate)

    def synthesize(self, text: str) -> AsyncIterator[AudioFrame]:
        return iterate_in_thread(lambda stop: self._chunks(text, stop))
