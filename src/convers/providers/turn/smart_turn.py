"""smart-turn v3 (ONNX): an end-of-turn model that hears intonation and phrasing, not only silence.

The model is a Whisper-tiny encoder with a classifier head: 80-bin Whisper log-mel features of the
last 8 s of 16 kHz audio (shorter audio is padded with zeros in front, the whole window is
normalised to zero mean and unit variance first) in, the probability "turn complete" out.
The features are faster-whisper's own extractor (numerically the one the model was trained with:
within 2e-7 of transformers' WhisperFeatureExtractor here), so no second copy of that code.
One inference is ~15 ms of features and ~90 ms of model on one thread here; it runs in a worker.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from convers.audio import pcm16_to_float32, resample
from convers.contracts.audio import AudioFrame
from convers.contracts.provider import (
    RANK_PACKAGED,
    AutoChoice,
    Availability,
)
from convers.model_checks import (
    ModelFileError,
    ModelSource,
    auto_choice_from,
    configured_file_source,
    first_usable,
    problems,
    pulled_file_source,
    verified_files,
    warn_passed_over,
)
from convers.packaged_models import SMART_TURN, SMART_TURN_FILE

if TYPE_CHECKING:
    from convers.config import Settings

SAMPLE_RATE = 16000
WINDOW_S = 8
FEATURES_HINT = "smart-turn computes its features with faster-whisper, which is not installed: pip install 'convers[voice]'"


def pulled_model_path(settings: Settings) -> Path:
    """Where `convers models pull turn` puts the model."""
    from convers.downloads import smart_turn_path

    return smart_turn_path(settings)


def model_sources(settings: Settings) -> list[ModelSource]:
    """Where the model may come from, best first: turn_end.model_path, a pulled copy, the one in pipecat-ai."""
    checks = verified_files(settings.data_path)
    sources: list[ModelSource] = []
    if settings.turn_end.model_path is not None:
        sources.append(
            configured_file_source(settings.turn_end.model_path, "turn_end.model_path", "point it at a smart-turn v3 .onnx")
        )
    pulled = pulled_model_path(settings)
    missing = f"smart-turn is not downloaded: run `convers models pull turn` (looked for {pulled})"
    sources.append(pulled_file_source(settings, checks, pulled, f"pulled model {pulled}", "turn", missing))
    sources.append(SMART_TURN.source(checks, SMART_TURN_FILE))
    return sources


def _features_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("faster_whisper") is not None


class SmartTurn:
    """smart-turn v3 on onnxruntime (see the module docstring); loads on first use, off the event loop."""

    name = "smart-turn"
    sample_rate = SAMPLE_RATE

    def __init__(self, model_path: Path, *, threads: int = 1) -> None:
        self.model_path = model_path
        self.threads = threads
        self._session: Any = None
        self._features: Any = None
        self._input_name = "input_features"
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> SmartTurn:
        if not _features_available():
            raise ImportError(FEATURES_HINT)
        sources = model_sources(settings)
        source = first_usable(sources)
        if source is None or source.path is None:
            raise FileNotFoundError(problems(sources))
        warn_passed_over(sources, source, cls.name)
        return cls(source.path, threads=settings.turn_end.threads)

    @classmethod
    def availability(cls, settings: Settings) -> Availability:
        choice = cls.auto_choice(settings)
        return Availability(choice.usable, choice.detail)

    @classmethod
    def auto_choice(cls, settings: Settings) -> AutoChoice:
        if not _features_available():
            return AutoChoice(RANK_PACKAGED, False, FEATURES_HINT)
        return auto_choice_from(model_sources(settings), RANK_PACKAGED)

    async def warm_up(self) -> None:
        await asyncio.to_thread(self.probability, AudioFrame(b"\x00\x00" * SAMPLE_RATE, SAMPLE_RATE))

    async def done_probability(self, audio: AudioFrame, transcript: str | None = None) -> float | None:
        if not audio.pcm:
            return None
        return await asyncio.to_thread(self.probability, audio)

    def probability(self, audio: AudioFrame) -> float:
        """The model's probability that the turn in `audio` is complete (blocking)."""
        session, features = self._load()
        samples = pcm16_to_float32(resample(audio, SAMPLE_RATE).pcm)
        window = SAMPLE_RATE * WINDOW_S
        # The newest 8 s; shorter audio is padded in front, as the model was trained.
        samples = samples[-window:]
        if samples.size < window:
            samples = np.concatenate([np.zeros(window - samples.size, dtype=np.float32), samples])
        samples = (samples - samples.mean()) / np.sqrt(samples.var() + 1e-7)
        mel = features(samples, padding=0)[np.newaxis].astype(np.float32)
        output = session.run(None, {self._input_name: mel})[0]
        return float(np.clip(np.asarray(output).reshape(-1)[0], 0.0, 1.0))

    def _load(self) -> tuple[Any, Any]:
        with self._lock:
            if self._session is None:
                from faster_whisper.feature_extractor import FeatureExtractor

                from convers.providers.onnx import cpu_session

                try:
                    session = cpu_session(self.model_path, self.threads)
                except Exception as error:  # onnxruntime raises its own types for a bad file
                    raise ModelFileError(
                        f"smart-turn model {self.model_path} cannot be loaded ({error}): "
                        "run `convers models pull turn --force` or set turn_end.provider = \"silence\""
                    ) from error
                self._input_name = session.get_inputs()[0].name
                self._features = FeatureExtractor(
                    feature_size=80, sampling_rate=SAMPLE_RATE, hop_length=160, chunk_length=WINDOW_S, n_fft=400
                )
                self._session = session
            return self._session, self._features
