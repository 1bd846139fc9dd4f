"""PocketSphinx speech recognition with its bundled en-us model: offline, small, rough."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from convers.audio import resample
from convers.contracts.audio import AudioFrame
from convers.contracts.provider import Availability
from convers.contracts.stt import Transcript

if TYPE_CHECKING:
    from convers.config import Settings


class PocketSphinxStt:
    """Decodes a whole utterance at once with PocketSphinx 5 (the fallback when Whisper is absent).

    Options (settings.stt.options) are passed to `pocketsphinx.Decoder` as keyword arguments
    (for example `hmm`, `lm`, `dict` for another language model).
    """

    name = "pocketsphinx"
    sample_rate = 16000

    def __init__(self, decoder_options: dict[str, Any] | None = None) -> None:
        self.decoder_options = dict(decoder_options or {})
        self._decoder: Any = None
        # A decoder holds one utterance at a time; the lock also guards the lazy load.
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> PocketSphinxStt:
        return cls(settings.stt.options)

    @classmethod
    def availability(cls, settings: Settings) -> Availability:
        try:
            from pocketsphinx import get_model_path
        except ImportError:
            return Availability(False, "pocketsphinx is not installed: pip install pocketsphinx")
        model = Path(get_model_path("en-us"))
        # The bundled folder holds the acoustic model (en-us/), the language model and the dictionary.
        if not (model / "en-us").is_dir() or not (model / "en-us.lm.bin").is_file():
            return Availability(False, f"pocketsphinx en-us model missing at {model}: reinstall pocketsphinx")
        return Availability(True, f"bundled en-us model at {model}")

    def _load(self) -> Any:
        if self._decoder is None:
            from pocketsphinx import Decoder

            options = {"logfn": "/dev/null", **self.decoder_options}
            self._decoder = Decoder(**options)
        return self._decoder

    async def warm_up(self) -> None:
        def load() -> None:
            with self._lock:
                self._load()

        await asyncio.to_thread(load)

    async def transcribe(self, audio: AudioFrame) -> Transcript:
        audio = resample(audio, self.sample_rate)
        return await asyncio.to_thread(self._decode, audio)

    def _decode(self, audio: AudioFrame) -> Transcript:
        with self._lock:
            decoder = self._load()
            started = time.perf_counter()
            decoder.start_utt()
            # Fed in pieces: one whole-utterance process_raw holds the GIL for the entire decode
            # (1.4 s event-loop stall for 2.5 s of speech on 2 cores, measured with
            # `convers bench latency`); pieces let the loop run between them (0.2-0.4 s left,
            # in end_utt).
            step = self.sample_rate // 10 * 2
            for start in range(0, len(audio.pcm), step):
                decoder.process_raw(audio.pcm[start : start + step], no_search=False, full_utt=False)
            decoder.end_utt()
            hypothesis = decoder.hyp()
            text = hypothesis.hypstr if hypothesis is not None else ""
        return Transcript(text=text.strip(), decode_s=time.perf_counter() - started, language="en")
