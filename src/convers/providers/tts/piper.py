"""Piper neural voices (piper-tts package, onnxruntime) from a .onnx voice file and its .onnx.json."""

from __future__ import annotations

import importlib.util
import json
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from convers.contracts.audio import AudioFrame
from convers.contracts.provider import Availability
from convers.providers.onnx import cpu_session
from convers.providers.tts._threaded import iterate_in_thread

if TYPE_CHECKING:
    from convers.config import Settings

# Words per minute that a length scale of 1.0 roughly corresponds to; espeak-ng's default too.
NATURAL_WORDS_PER_MINUTE = 175


class PiperVoiceMissing(FileNotFoundError):
    """The configured Piper voice files are not there."""


def voice_files(settings: Settings) -> tuple[Path, Path]:
    """The voice .onnx and its .onnx.json; raises PiperVoiceMissing saying what to do."""
    voice = settings.tts.piper_voice
    if voice is None:
        raise PiperVoiceMissing(
            "no Piper voice configured: set tts.piper_voice to a .onnx voice file (its .onnx.json beside it)"
        )
    model = voice.expanduser()
    config = model.with_name(model.name + ".json")
    if not model.is_file():
        raise PiperVoiceMissing(f"Piper voice {model} does not exist: download a voice or fix tts.piper_voice")
    if not config.is_file():
        raise PiperVoiceMissing(f"Piper voice config {config} is missing: it must sit beside {model.name}")
    return model, config


class PiperTts:
    """Synthesises with a Piper voice, one audio chunk per sentence, in a worker thread.

    The onnxruntime session is built here (not by piper's loader) so it uses `tts.threads`.
    """

    name = "piper"

    def __init__(self, model_path: Path, config_path: Path, *, words_per_minute: int = 175, threads: int = 1) -> None:
        self.model_path = model_path
        self.config_path = config_path
        self.threads = threads
        config = json.loads(config_path.read_text(encoding="utf-8"))
        self.sample_rate = int(config["audio"]["sample_rate"])
        base_scale = float(config.get("inference", {}).get("length_scale", 1.0))
        self.length_scale = base_scale * NATURAL_WORDS_PER_MINUTE / words_per_minute
        self._voice: Any = None
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> PiperTts:
        if importlib.util.find_spec("piper") is None:
            raise ModuleNotFoundError("piper-tts is not installed: pip install 'convers[piper]'")
        model, config = voice_files(settings)
        return cls(model, config, words_per_minute=settings.tts.words_per_minute, threads=settings.tts.threads)

    @classmethod
    def availability(cls, settings: Settings) -> Availability:
        if importlib.util.find_spec("piper") is None:
            return Availability(False, "piper-tts is not installed: pip install 'convers[piper]'")
        try:
            model, _ = voice_files(settings)
        except PiperVoiceMissing as missing:
            return Availability(False, str(missing))
        return Availability(True, f"voice {model}")

    def load(self) -> Any:
        """The PiperVoice, loaded on first use (blocking)."""
        with self._lock:
            if self._voice is None:
                from piper import PiperVoice
                from piper.config import PiperConfig

                session = cpu_session(self.model_path, self.threads)
                config = PiperConfig.from_dict(json.loads(self.config_path.read_text(encoding="utf-8")))
                self._voice = PiperVoice(config=config, session=session)
            return self._voice

    def _chunks(self, text: str, stop: threading.Event) -> Iterator[AudioFrame]:
        from piper import SynthesisConfig

        voice = self.load()
        for chunk in voice.synthesize(text, SynthesisConfig(length_scale=self.length_scale)):
            if stop.is_set():
                return
            pcm = chunk.audio_int16_bytes if hasattr(chunk, "audio_int16_bytes") else np.asarray(chunk).tobytes()
            yield AudioFrame(pcm, self.sample_rate)

    def synthesize(self, text: str) -> AsyncIterator[AudioFrame]:
        return iterate_in_thread(lambda stop: self._chunks(text, stop))
