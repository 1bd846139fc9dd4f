"""PocketSphinx speech recognition with its bundled en-us model: offline, small, rough."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from convers.audio import resample
from convers.contracts.audio import AudioFrame
from convers.contracts.provider import RANK_FALLBACK, AutoChoice, Availability
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
        # Decoders for live streams, one per utterance in progress, reused (loading one takes ~0.3 s).
        self._spare: list[Any] = []
        self._spare_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> PocketSphinxStt:
        return cls(settings.stt.options)

    @classmethod
    def auto_choice(cls, settings: Settings) -> AutoChoice:
        """Always there and offline, but it gets half the words wrong: the last resort of `auto`."""
        available = cls.availability(settings)
        return AutoChoice(RANK_FALLBACK, available.usable, f"fallback: {available.detail}")

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

    def _new_decoder(self, **defaults: Any) -> Any:
        from pocketsphinx import Decoder

        return Decoder(**{"logfn": "/dev/null", **defaults, **self.decoder_options})

    def _load(self) -> Any:
        if self._decoder is None:
            self._decoder = self._new_decoder()
        return self._decoder

    def _borrow(self) -> Any:
        with self._spare_lock:
            if self._spare:
                return self._spare.pop()
        # Live decoders skip the second (flat-lexicon) search pass: it is what end_utt spends its
        # time on (350 -> 105 ms for a 3 s question on 2 cores), and it did not make espeak-ng
        # speech recognised any better in our checks. They also keep at most 20 word exits per
        # frame, which shrinks the lattice the final best-path search walks: 47 -> 35 ms for the
        # end of a turn, with the same words recognised (30 espeak-ng questions, 3 voices; 5 exits
        # was faster still but lost words). stt.options can change both.
        return self._new_decoder(fwdflat=False, maxwpf=20)

    def _give_back(self, decoder: Any) -> None:
        with self._spare_lock:
            self._spare.append(decoder)

    def open_stream(self) -> PocketSphinxStream:
        """A live stream: audio is decoded as it is fed, in a worker thread, in arrival order."""
        return PocketSphinxStream(self)

    async def warm_up(self) -> None:
        def load() -> None:
            with self._lock:
                self._load()

        await asyncio.to_thread(load)
        # One spare decoder so the first live utterance does not wait for a load.
        await asyncio.to_thread(lambda: self._give_back(self._borrow()))

    async def transcribe(self, audio: AudioFrame) -> Transcript:
        audio = resample(audio, self.sample_rate)
        return await asyncio.to_thread(self._decode, audio)

    def _decode(self, audio: AudioFrame) -> Transcript:
        with self._lock:
            decoder = self._load()
            started = time.perf_counter()
            decoder.start_utt()
            # The whole utterance in one call with full_utt=True: the decoder then normalises the
            # cepstrum over the utterance, which recognises espeak-ng speech markedly better than
            # feeding pieces (tests/test_tts.py). The call holds the GIL for the whole decode, so
            # sessions use the live stream (open_stream) instead, which decodes during speech.
            decoder.process_raw(audio.pcm, no_search=False, full_utt=True)
            decoder.end_utt()
            hypothesis = decoder.hyp()
            text = hypothesis.hypstr if hypothesis is not None else ""
        return Transcript(text=text.strip(), decode_s=time.perf_counter() - started, language="en")


_FINISH = object()


class PocketSphinxStream:
    """One utterance decoded incrementally; `finish` leaves only `end_utt` to wait for."""

    # Pieces of 30 ms: process_raw holds the GIL while it runs (about half the piece's duration on
    # 2 cores), and the event loop, with VAD and barge-in, only runs between pieces. 100 ms pieces
    # delayed barge-in flushes by ~70 ms (`convers bench latency`).
    PIECE_BYTES = PocketSphinxStt.sample_rate * 3 // 100 * 2

    def __init__(self, stt: PocketSphinxStt) -> None:
        self.stt = stt
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._worker = asyncio.create_task(self._decode())
        self._decode_s = 0.0

    def feed(self, audio: AudioFrame) -> None:
        if audio.sample_rate != self.stt.sample_rate:
            audio = resample(audio, self.stt.sample_rate)
        self._queue.put_nowait(audio.pcm)

    async def finish(self) -> Transcript:
        self._queue.put_nowait(_FINISH)
        return await self._worker

    async def cancel(self) -> None:
        self._worker.cancel()
        await asyncio.gather(self._worker, return_exceptions=True)

    async def _decode(self) -> Transcript:
        decoder = await asyncio.to_thread(self.stt._borrow)
        healthy = False
        try:
            await asyncio.to_thread(decoder.start_utt)
            while True:
                item = await self._queue.get()
                if item is _FINISH:
                    break
                assert isinstance(item, bytes)
                for start in range(0, len(item), self.PIECE_BYTES):
                    await asyncio.to_thread(self._process, decoder, item[start : start + self.PIECE_BYTES])
            started = time.perf_counter()
            text = await asyncio.to_thread(self._end, decoder)
            self._decode_s += time.perf_counter() - started
            healthy = True
            # decode_s: decoder time after the last audio arrived, the part the user waits for.
            return Transcript(text=text, decode_s=self._decode_s, language="en")
        finally:
            if healthy:
                self.stt._give_back(decoder)
            else:
                # Cancelled mid-utterance: end it in the background so the decoder can be reused.
                asyncio.get_running_loop().run_in_executor(None, self._recycle, decoder)

    @staticmethod
    def _process(decoder: Any, pcm: bytes) -> None:
        decoder.process_raw(pcm, no_search=False, full_utt=False)

    @staticmethod
    def _end(decoder: Any) -> str:
        decoder.end_utt()
        hypothesis = decoder.hyp()
        return hypothesis.hypstr.strip() if hypothesis is not None else ""

    def _recycle(self, decoder: Any) -> None:
        try:
            decoder.end_utt()
        except Exception:  # noqa: BLE001 - a decoder that cannot end its utterance is not reused
            return
        self.stt._give_back(decoder)
