"""faster-whisper (CTranslate2) speech recognition from a model folder under the data directory."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from convers.audio import pcm16_to_float32, resample
from convers.contracts.audio import AudioFrame
from convers.contracts.provider import Availability
from convers.contracts.stt import Transcript

if TYPE_CHECKING:
    from convers.config import Settings

# The file that makes a folder a CTranslate2 Whisper model (config.json and tokenizer sit beside it).
MODEL_FILE = "model.bin"


def whisper_dir(settings: Settings, name: str) -> Path:
    """Where `convers models pull stt` puts Whisper model `name`."""
    try:
        from convers.downloads import whisper_model_dir
    except ImportError:  # the download module is optional for reading: fall back to its layout
        return settings.data_path / "models" / "whisper" / name
    return Path(whisper_model_dir(settings, name))


def model_missing_message(name: str, folder: Path) -> str:
    return f"faster-whisper model {name} is not downloaded: run `convers models pull stt` (looked in {folder})"


class FasterWhisperStt:
    """Transcribes with faster-whisper, int8 on CPU. The model loads once, on first use, off the loop.

    Options (settings.stt.options): `beam_size` (default 1: greedy is much faster on two cores and
    barely worse on short turns), `compute_type` (default int8), `device` (default cpu).
    """

    name = "faster-whisper"
    sample_rate = 16000

    def __init__(
        self,
        model_dir: Path,
        model_name: str,
        *,
        language: str | None = "en",
        threads: int = 1,
        compute_type: str = "int8",
        device: str = "cpu",
        beam_size: int = 1,
    ) -> None:
        self.model_dir = model_dir
        self.model_name = model_name
        self.language = language or None
        self.threads = threads
        self.compute_type = compute_type
        self.device = device
        self.beam_size = beam_size
        self._model: Any = None
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> FasterWhisperStt:
        stt = settings.stt
        folder = whisper_dir(settings, stt.whisper_model)
        if not (folder / MODEL_FILE).is_file():
            raise FileNotFoundError(model_missing_message(stt.whisper_model, folder))
        return cls(
            folder,
            stt.whisper_model,
            language=stt.language,
            threads=stt.threads,
            compute_type=str(stt.options.get("compute_type", "int8")),
            device=str(stt.options.get("device", "cpu")),
            beam_size=int(stt.options.get("beam_size", 1)),
        )

    @classmethod
    def availability(cls, settings: Settings) -> Availability:
        import importlib.util

        if importlib.util.find_spec("faster_whisper") is None:
            return Availability(False, "faster-whisper is not installed: pip install 'convers[whisper]'")
        name = settings.stt.whisper_model
        folder = whisper_dir(settings, name)
        if not (folder / MODEL_FILE).is_file():
            return Availability(False, model_missing_message(name, folder))
        return Availability(True, f"model {name} at {folder}")

    def load(self) -> Any:
        """Loads the model if it is not loaded yet (blocking: call from a worker thread)."""
        with self._lock:
            if self._model is None:
                from faster_whisper import WhisperModel

                self._model = WhisperModel(
                    str(self.model_dir),
                    device=self.device,
                    compute_type=self.compute_type,
                    cpu_threads=self.threads,
                    num_workers=1,
                    local_files_only=True,
                )
            return self._model

    async def warm_up(self) -> None:
        """Loads the model now so the first turn does not pay for it."""
        await asyncio.to_thread(self.load)

    async def transcribe(self, audio: AudioFrame) -> Transcript:
        audio = resample(audio, self.sample_rate)
        return await asyncio.to_thread(self._decode, audio)

    def _decode(self, audio: AudioFrame) -> Transcript:
        model = self.load()
        started = time.perf_counter()
        samples = pcm16_to_float32(audio.pcm)
        with self._lock:  # one decode at a time: the model is not meant to be shared across threads
            segments, info = model.transcribe(
                samples,
                language=self.language,
                beam_size=self.beam_size,
                vad_filter=False,  # our own VAD already cut the utterance
                condition_on_previous_text=False,
                without_timestamps=True,
            )
            # The segments are a lazy generator: decoding happens while it is consumed.
            text = " ".join(segment.text.strip() for segment in segments).strip()
        return Transcript(text=text, decode_s=time.perf_counter() - started, language=info.language)
