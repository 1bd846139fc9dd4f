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
from convers.contracts.provider import (
    RANK_USER_MODEL,
    AutoChoice,
    Availability,
)
from convers.model_checks import (
    ModelFileError,
    ModelSource,
    auto_choice_from,
    first_usable,
    problems,
    verified_files,
    warn_passed_over,
)
from convers.packaged_models import JOE_VOICE_FILE, PIPER_JOE
from convers.providers.onnx import cpu_session
from convers.providers.tts._threaded import iterate_in_thread

if TYPE_CHECKING:
    from convers.config import Settings

# Piper's length scale does not map to a speaking rate the same way for every voice, nor in
# proportion: each phoneme's length is rounded up to whole frames, so about a quarter of the time
# does not shrink as the scale does (measured with joe: scale 0.73 is 1.22 times as fast, not 1.37).
# So when a rate is asked for, the voice is timed once, when loaded, at two scales, and the scale
# for that rate is solved from the line through those two points (~2 s of synthesis).
# Sentences differ in pace by more than a quarter at one scale (joe, noise off: 175-258 words a
# minute over eight replies), so one sentence made a poor ruler: the earlier single sentence was among
# the fastest, and everyday replies came out up to a tenth slower than asked. The voice is timed on
# a short reply of three sentences of different kinds instead: a question, a long statement with a
# clause, and a short one with a number.
CALIBRATION_TEXT = (
    "Did you remember to call your sister about the weekend? "
    "It looks like rain this afternoon, so you might want to take an umbrella with you. "
    "Okay. Your alarm is set for seven thirty tomorrow morning."
)
CALIBRATION_SCALES = (1.0, 0.5)
# A scale outside this range garbles the voice; a rate that needs one gets the nearest that works.
MIN_LENGTH_SCALE = 0.4
MAX_LENGTH_SCALE = 3.0


class PiperVoiceMissing(FileNotFoundError):
    """No Piper voice can be loaded: none configured, pulled or packaged, or its files are wrong."""


INSTALL_HINT = "piper-tts is not installed: pip install 'convers[piper]'"


def _voice_pair(model: Path) -> tuple[Path, Path]:
    """The voice .onnx and its .onnx.json; raises PiperVoiceMissing naming the missing file."""
    config = model.with_name(model.name + ".json")
    if not model.is_file():
        raise PiperVoiceMissing(f"Piper voice {model} does not exist: download a voice or fix tts.piper_voice")
    if not config.is_file():
        raise PiperVoiceMissing(f"Piper voice config {config} is missing: it must sit beside {model.name}")
    return model, config


def _voice_config(model: Path, config: Path) -> dict[str, Any]:
    """The voice's .onnx.json, once it reads as a voice config; else PiperVoiceMissing naming it.

    Checked where a source is chosen too, so that a config that is not one (an HTML error page
    saved by a download) is passed over like a missing one instead of failing when Piper starts.
    """
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
        int(data["audio"]["sample_rate"])
    except FileNotFoundError:
        raise PiperVoiceMissing(f"Piper voice config {config} is missing: it must sit beside {model.name}") from None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise PiperVoiceMissing(
            f"Piper voice config {config} is not a voice config ({type(error).__name__}: {error}): "
            f"download the .onnx.json that belongs to {model.name}"
        ) from None
    return data


def voice_sources(settings: Settings) -> list[ModelSource]:
    """Where a Piper voice may come from, best first: tts.piper_voice, the pulled voice, the packaged joe voice.

    The path of a usable source is the .onnx (its .onnx.json beside it). Pulled and packaged files
    are checked against their recorded SHA-256 before they are used.
    """
    from convers.downloads import piper_voice_path, pulled_checksums

    checks = verified_files(settings.data_path)
    sources: list[ModelSource] = []
    configured = settings.tts.piper_voice is not None
    mine = piper_voice_path(settings)
    label = f"{'configured' if configured else 'pulled'} voice {mine}"
    try:
        model, config = _voice_pair(mine)
        checks.check(pulled_checksums(settings, [model, config]), fix="run `convers models pull tts --force`")
        _voice_config(model, config)
        sources.append(ModelSource(label, RANK_USER_MODEL, model))
    except (PiperVoiceMissing, ModelFileError) as error:
        broken = configured or mine.exists()
        problem = str(error) if broken else f"no voice pulled ({mine}): `convers models pull tts`"
        sources.append(ModelSource(label, RANK_USER_MODEL, problem=problem, broken=broken))
    sources.append(PIPER_JOE.source(checks, JOE_VOICE_FILE))
    return sources


def voice_files(settings: Settings) -> tuple[Path, Path]:
    """The voice .onnx and .onnx.json to load; raises PiperVoiceMissing saying what to do."""
    sources = voice_sources(settings)
    source = first_usable(sources)
    if source is None or source.path is None:
        raise PiperVoiceMissing(f"no Piper voice can be loaded: {problems(sources)}")
    warn_passed_over(sources, source, "Piper")
    return _voice_pair(source.path)


def length_scale_for(
    words_per_minute: float, words: int, scales: tuple[float, float], seconds: tuple[float, float]
) -> float:
    """The scale at which `words` take `words / words_per_minute` minutes, on the line through
    (scale, seconds) for two timed syntheses of those words; kept within what the voice can say."""
    slope = (seconds[0] - seconds[1]) / (scales[0] - scales[1])
    if slope <= 0:  # a voice whose time does not grow with the scale: keep its own
        return scales[0]
    wanted_s = words / words_per_minute * 60
    scale = scales[0] + (wanted_s - seconds[0]) / slope
    return min(MAX_LENGTH_SCALE, max(MIN_LENGTH_SCALE, scale))


class PiperTts:
    """Synthesises with a Piper voice, one audio chunk per sentence, in a worker thread.

    The onnxruntime session is built here (not by piper's loader) so it uses `tts.threads`.
    """

    name = "piper"

    def __init__(
        self, model_path: Path, config_path: Path, *, words_per_minute: int | None = None, threads: int = 1
    ) -> None:
        self.model_path = model_path
        self.config_path = config_path
        self.threads = threads
        config = _voice_config(model_path, config_path)
        self.sample_rate = int(config["audio"]["sample_rate"])
        self.words_per_minute = words_per_minute
        # The voice's own pace; with `words_per_minute` set, load() times the voice and sets the scale
        # that speaks it.
        self.length_scale = float(config.get("inference", {}).get("length_scale", 1.0))
        self._voice: Any = None
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> PiperTts:
        if importlib.util.find_spec("piper") is None:
            raise ModuleNotFoundError(INSTALL_HINT)
        model, config = voice_files(settings)
        return cls(model, config, words_per_minute=settings.tts.words_per_minute, threads=settings.tts.threads)

    @classmethod
    def availability(cls, settings: Settings) -> Availability:
        choice = cls.auto_choice(settings)
        return Availability(choice.usable, choice.detail)

    @classmethod
    def auto_choice(cls, settings: Settings) -> AutoChoice:
        """A voice the user configured or pulled ranks above the packaged one, which ranks above espeak-ng."""
        if importlib.util.find_spec("piper") is None:
            return AutoChoice(RANK_USER_MODEL, False, INSTALL_HINT)
        return auto_choice_from(voice_sources(settings), RANK_USER_MODEL)

    def load(self) -> Any:
        """The PiperVoice, loaded on first use (blocking)."""
        with self._lock:
            if self._voice is None:
                from piper import PiperVoice
                from piper.config import PiperConfig

                # No memory pattern: onnxruntime plans (and its arena keeps) the buffers of each input
                # length it has seen, and every sentence is a new length: RSS rose in 16-40 MB steps
                # across reconnects. Off, 30 reconnects grew 6-12 MB and synthesis is as fast (paired
                # first-chunk ratio 1.00; `python -m convers.bench.reconnects`, docs/benchmarks.md).
                session = cpu_session(self.model_path, self.threads, memory_pattern=False)
                config = PiperConfig.from_dict(json.loads(self.config_path.read_text(encoding="utf-8")))
                voice = PiperVoice(config=config, session=session)
                if self.words_per_minute is not None:
                    self.length_scale = self._timed_scale(voice, self.words_per_minute)
                self._voice = voice
            return self._voice

    def _timed_scale(self, voice: Any, words_per_minute: int) -> float:
        """The length scale at which `voice` speaks `words_per_minute`, from two timed syntheses."""
        from piper import SynthesisConfig

        seconds = []
        for scale in CALIBRATION_SCALES:
            # No sampled noise, so the timing is the same every load.
            config = SynthesisConfig(length_scale=scale, noise_scale=0.0, noise_w_scale=0.0)
            samples = sum(len(chunk.audio_int16_bytes) // 2 for chunk in voice.synthesize(CALIBRATION_TEXT, config))
            seconds.append(samples / self.sample_rate)
        return length_scale_for(
            words_per_minute, len(CALIBRATION_TEXT.split()), CALIBRATION_SCALES, (seconds[0], seconds[1])
        )

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
