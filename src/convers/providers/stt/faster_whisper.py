"""faster-whisper (CTranslate2) speech recognition from a model folder under the data directory."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field

from convers.audio import pcm16_to_float32, resample
from convers.config import ProviderOptions, provider_options
from convers.contracts.audio import AudioFrame
from convers.contracts.provider import (
    RANK_USER_MODEL,
    AutoChoice,
    Availability,
)
from convers.contracts.stt import Transcript
from convers.model_checks import (
    ModelFileError,
    ModelSource,
    auto_choice_from,
    first_usable,
    problems,
    verified_files,
    warn_passed_over,
)
from convers.packaged_models import WHISPER_TINY_EN
from convers.providers.stt.whisper_window import (
    DEFAULT_RULE,
    WindowRule,
    parse_prompt,
    parse_window,
    transcribe,
)

if TYPE_CHECKING:
    from convers.config import Settings

# The file that makes a folder a CTranslate2 Whisper model (config.json and tokenizer sit beside it).
MODEL_FILE = "model.bin"
INSTALL_HINT = "faster-whisper is not installed: pip install 'convers[whisper]'"


def whisper_dir(settings: Settings, name: str) -> Path:
    """Where `convers models pull stt` puts Whisper model `name`."""
    from convers.downloads import whisper_model_dir

    return Path(whisper_model_dir(settings, name))


def model_missing_message(name: str, folder: Path) -> str:
    return f"faster-whisper model {name} is not downloaded: run `convers models pull stt` (looked in {folder})"


def model_sources(settings: Settings) -> list[ModelSource]:
    """Where a Whisper model may come from, best first: a configured folder, a pulled model, the packaged tiny.en.

    Each file is checked before it is used: a pulled one against the SHA-256 `convers models pull`
    recorded, the packaged one against the SHA-256 convers ships for it.
    """
    from convers.downloads import pulled_checksums

    checks = verified_files(settings.data_path)
    stt = settings.stt
    sources: list[ModelSource] = []
    if stt.whisper_model_dir is not None:
        folder = stt.whisper_model_dir.expanduser()
        label = f"configured model at {folder}"
        if (folder / MODEL_FILE).is_file():
            sources.append(ModelSource(label, RANK_USER_MODEL, folder))
        else:
            problem = f"stt.whisper_model_dir {folder} holds no {MODEL_FILE}: point it at a CTranslate2 Whisper folder"
            sources.append(ModelSource(label, RANK_USER_MODEL, problem=problem, broken=True))
    pulled = whisper_dir(settings, stt.whisper_model)
    label = f"model {stt.whisper_model} at {pulled}"
    if (pulled / MODEL_FILE).is_file():
        try:
            files = [pulled / name for name in (MODEL_FILE, "config.json", "tokenizer.json")]
            checks.check(pulled_checksums(settings, files), fix="run `convers models pull stt --force`")
            sources.append(ModelSource(label, RANK_USER_MODEL, pulled))
        except ModelFileError as error:
            sources.append(ModelSource(label, RANK_USER_MODEL, problem=str(error), broken=True))
    else:
        sources.append(ModelSource(label, RANK_USER_MODEL, problem=model_missing_message(stt.whisper_model, pulled)))
    sources.append(WHISPER_TINY_EN.source(checks))
    return sources


class FasterWhisperStt:
    """Transcribes with faster-whisper, int8 on CPU. The model loads once, on first use, off the loop.

    Options (settings.stt.options): `beam_size` (default 1: greedy is much faster on two cores and
    barely worse on short turns), `compute_type` (default int8), `device` (default cpu), `window`
    ("auto", the default: a short utterance is encoded on a window of its own length plus padding,
    with a measured floor, instead of 30 s; "full": always faster-whisper's 30 s path; or a floor in
    seconds), `prompt` ("none", the default; a text of names and words the user says, given to Whisper
    as the previous text; or "fillers", measured and not the default). See providers/stt/whisper_window.py.
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
        window: WindowRule | None = DEFAULT_RULE,
        prompt: str | None = None,
    ) -> None:
        self.model_dir = model_dir
        self.model_name = model_name
        self.language = language or None
        self.threads = threads
        self.compute_type = compute_type
        self.device = device
        self.beam_size = beam_size
        self.window = window
        self.prompt = prompt
        self._model: Any = None
        self._lock = threading.Lock()

    class Options(ProviderOptions):
        """stt.options for faster-whisper."""

        compute_type: str = "int8"
        device: str = "cpu"
        beam_size: int = Field(default=1, ge=1)
        # "auto" (the measured rule), "full" (30 s), or seconds (providers/stt/whisper_window.py).
        window: str | float = "auto"
        # "none", "fillers", or one's own words as Whisper's initial prompt.
        prompt: str = "none"

    @classmethod
    def from_settings(cls, settings: Settings) -> FasterWhisperStt:
        stt = settings.stt
        options = provider_options(cls.Options, settings, "stt", "faster-whisper")
        sources = model_sources(settings)
        source = first_usable(sources)
        if source is None or source.path is None:
            raise FileNotFoundError(f"no faster-whisper model can be loaded: {problems(sources)}")
        warn_passed_over(sources, source, "faster-whisper")
        return cls(
            source.path,
            source.label,
            language=stt.language,
            threads=stt.threads,
            compute_type=options.compute_type,
            device=options.device,
            beam_size=options.beam_size,
            window=parse_window(options.window),
            prompt=parse_prompt(options.prompt),
        )

    @classmethod
    def availability(cls, settings: Settings) -> Availability:
        choice = cls.auto_choice(settings)
        return Availability(choice.usable, choice.detail)

    @classmethod
    def auto_choice(cls, settings: Settings) -> AutoChoice:
        """A model the user pulled or configured ranks above the packaged tiny.en."""
        import importlib.util

        if importlib.util.find_spec("faster_whisper") is None:
            return AutoChoice(RANK_USER_MODEL, False, INSTALL_HINT)
        return auto_choice_from(model_sources(settings), RANK_USER_MODEL)

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
            heard = transcribe(model, samples, self.window, language=self.language, beam_size=self.beam_size,
                               prompt=self.prompt)
        return Transcript(text=heard.text, decode_s=time.perf_counter() - started, language=heard.language)
