"""Silero VAD through onnxruntime (no torch), with the model file taken from an installed package."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from convers.audio import pcm16_to_float32
from convers.config import ProviderOptions, provider_options
from convers.contracts.provider import Availability
from convers.providers.onnx import cpu_session

if TYPE_CHECKING:
    from convers.config import Settings

# Where installed packages keep a Silero ONNX model: (package, path inside it). Never downloaded:
# faster-whisper ships v6 for its own VAD filter, the silero-vad package ships v5.
MODEL_LOCATIONS: tuple[tuple[str, str], ...] = (
    ("faster_whisper", "assets/silero_vad_v6.onnx"),
    ("silero_vad", "data/silero_vad.onnx"),
)


def _package_dir(package: str) -> Path | None:
    # find_spec locates the package without importing it: silero_vad imports torch on import.
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def find_silero_model(settings: Settings | None = None) -> tuple[Path | None, str]:
    """The Silero ONNX file to use and where it came from, or None and why none was found."""
    override = settings.vad.options.get("model_path") if settings is not None else None
    if override:
        path = Path(str(override)).expanduser()
        if path.is_file():
            return path, f"model {path} (vad.options.model_path)"
        return None, f"vad.options.model_path {path} does not exist"
    for package, inner in MODEL_LOCATIONS:
        folder = _package_dir(package)
        if folder is not None and (folder / inner).is_file():
            return folder / inner, f"model from package {package}: {folder / inner}"
    return None, "no Silero model found: install faster-whisper (pip install 'convers[whisper]') or silero-vad"


class SileroModel:
    """A loaded Silero ONNX model and its input layout: read-only after loading, so one serves many streams.

    Both published ONNX layouts are read from the model's own inputs: v6 (faster-whisper: `input`
    [n, 576], `h`/`c` [1, 1, 128]) and v5 (silero-vad: `input` [n, 576], `state` [2, 1, 128], `sr`).
    onnxruntime's InferenceSession.run is thread-safe, and every call here passes its state in and
    gets the new state back, so streams never share anything that changes.
    """

    def __init__(self, model_path: Path, threads: int = 1) -> None:
        self.model_path = model_path
        self._session = cpu_session(model_path, threads)
        inputs = self._session.get_inputs()
        outputs = [o.name for o in self._session.get_outputs()]
        self._audio_input = "input"
        self._rate_input: str | None = None
        # Recurrent state inputs, paired in order with the outputs after the probability.
        self._state_shapes: dict[str, tuple[int, ...]] = {}
        for item in inputs:
            if item.name == "sr":
                self._rate_input = item.name
            elif item.name in {"input", "x"}:
                self._audio_input = item.name
            else:
                self._state_shapes[item.name] = tuple(d if isinstance(d, int) else 1 for d in item.shape)
        self._prob_output = outputs[0]
        self._state_outputs = dict(zip(outputs[1:], self._state_shapes, strict=False))
        if len(self._state_outputs) != len(self._state_shapes):
            raise ValueError(
                f"unexpected Silero model layout in {model_path}: inputs {[i.name for i in inputs]}, outputs {outputs}"
            )

    def initial_states(self) -> dict[str, np.ndarray]:
        return {name: np.zeros(shape, dtype=np.float32) for name, shape in self._state_shapes.items()}

    def run(self, window: np.ndarray, states: dict[str, np.ndarray], sample_rate: int) -> tuple[float, dict[str, np.ndarray]]:
        """The speech probability of `window` ([1, context + frame] float32) and the states after it."""
        feeds: dict[str, Any] = {self._audio_input: window, **states}
        if self._rate_input is not None:
            feeds[self._rate_input] = np.array(sample_rate, dtype=np.int64)
        results = self._session.run(None, feeds)
        by_name = dict(zip([self._prob_output, *self._state_outputs], results, strict=True))
        new_states = {state: by_name[output] for output, state in self._state_outputs.items()}
        return float(np.asarray(by_name[self._prob_output]).reshape(-1)[0]), new_states


class SileroVad:
    """Silero VAD on 512-sample frames at 16 kHz: one audio stream's LSTM state and 64 samples of context.

    Each window the model sees is the last 64 samples of the previous frame followed by the new 512;
    without that context the probabilities come out noticeably lower and jumpier. The model itself
    (SileroModel) is shared by every stream made with `new_stream`.
    """

    name = "silero"
    sample_rate = 16000
    frame_samples = 512
    context_samples = 64

    def __init__(self, model_path: Path | None = None, threads: int = 1, *, model: SileroModel | None = None) -> None:
        if model is None:
            if model_path is None:
                raise ValueError("SileroVad needs a model_path or a loaded SileroModel")
            model = SileroModel(model_path, threads)
        self.model = model
        self.model_path = model.model_path
        self._states: dict[str, np.ndarray] = {}
        self._context = np.zeros(self.context_samples, dtype=np.float32)
        self.reset()

    class Options(ProviderOptions):
        """vad.options for Silero."""

        # Another copy of the Silero ONNX file; unset: the one an installed package carries.
        model_path: Path | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> SileroVad:
        provider_options(cls.Options, settings, "vad", "silero")  # a misspelt option is an error
        path, detail = find_silero_model(settings)
        if path is None:
            raise FileNotFoundError(detail)
        return cls(path, threads=settings.vad.threads)

    @classmethod
    def availability(cls, settings: Settings) -> Availability:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            return Availability(False, "onnxruntime is not installed: pip install onnxruntime")
        path, detail = find_silero_model(settings)
        return Availability(path is not None, detail)

    def new_stream(self) -> SileroVad:
        """A VAD for another stream on the same loaded model, with its own state."""
        return SileroVad(model=self.model)

    def reset(self) -> None:
        self._states = self.model.initial_states()
        self._context = np.zeros(self.context_samples, dtype=np.float32)

    def speech_probability(self, pcm: bytes) -> float:
        if len(pcm) != self.frame_samples * 2:
            raise ValueError(
                f"Silero VAD needs frames of {self.frame_samples} samples ({self.frame_samples * 2} bytes), "
                f"got {len(pcm)} bytes: re-chunk with convers.audio.Rechunker"
            )
        samples = pcm16_to_float32(pcm)
        window = np.concatenate([self._context, samples])[np.newaxis, :]
        probability, self._states = self.model.run(window, self._states, self.sample_rate)
        self._context = samples[-self.context_samples :]
        return probability
