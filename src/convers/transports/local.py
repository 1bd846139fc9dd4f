"""This computer's microphone and speaker through sounddevice (PortAudio), for `convers talk`."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from convers.audio import StreamResampler, resample
from convers.contracts.audio import AudioFormat, AudioFrame
from convers.contracts.provider import Availability
from convers.contracts.transport import (
    InboundAudio,
    InboundEvent,
    InboundPlayed,
    InboundText,
)
from convers.echo_cancelling import EchoCancelling, canceller_factory
from convers.registry import ProviderUnavailableError
from convers.transports.echo_side import EchoSide

if TYPE_CHECKING:
    from convers.config import Settings

log = logging.getLogger(__name__)

# What the listen loop wants: VADs and STT run at 16 kHz; the microphone is resampled to it.
INPUT_RATE = 16000
# 20 ms microphone blocks: small enough for a fast barge-in, large enough to keep callbacks cheap.
BLOCK_S = 0.02
_END = object()


class LocalAudioError(ProviderUnavailableError):
    """PortAudio or a sound device is missing; the message says what to install or set."""


def import_sounddevice() -> Any:
    """The sounddevice module, or LocalAudioError saying how to get it working."""
    try:
        import sounddevice
    except ImportError as error:
        raise LocalAudioError("sounddevice is not installed: pip install 'convers[local-audio]'") from error
    except OSError as error:  # raised on import when the PortAudio shared library is missing
        raise LocalAudioError(
            f"PortAudio library missing ({error}): apt-get install libportaudio2 (or brew install portaudio)"
        ) from error
    return sounddevice


def find_device(sd: Any, kind: str, name: str | None) -> dict[str, Any]:
    """The device info for `kind` ('input' or 'output'): the named one, else the system default."""
    try:
        info = sd.query_devices(name, kind=kind) if name else sd.query_devices(kind=kind)
    except (ValueError, sd.PortAudioError) as error:
        what = "microphone" if kind == "input" else "speaker"
        wanted = f" named {name!r}" if name else ""
        setting = f"transport.{kind}_device"
        raise LocalAudioError(
            f"no {what}{wanted} found ({error}); list devices with `python -m sounddevice` and set {setting}, "
            "or use the browser page (`convers serve`)"
        ) from error
    return dict(info)


@dataclass
class _Queued:
    turn: int
    pcm: bytes
    position: int = 0


class PlaybackQueue:
    """The speaker's buffer: frames tagged with turn ids, drained by the audio callback thread.

    `flush(turn)` drops the turn and every older one at once, and frames that arrive for it later;
    `pause(turn)` makes the callback play silence while keeping the buffer. `on_played(turn, ms)`
    is called (from the audio thread) about every `report_every_ms` and when a turn drains.
    """

    def __init__(self, on_played: Callable[[int, int], None], sample_rate: int, report_every_ms: int = 100) -> None:
        self.sample_rate = sample_rate
        self.report_every_ms = report_every_ms
        self._on_played = on_played
        self._lock = threading.Lock()
        self._queue: deque[_Queued] = deque()
        self._paused: set[int] = set()
        self._flushed_through = 0
        self._played_samples: dict[int, int] = {}
        self._reported_ms: dict[int, int] = {}

    def push(self, turn: int, pcm: bytes) -> bool:
        """Queues audio of `turn`; False when the turn was already flushed (the frame is dropped)."""
        with self._lock:
            if turn <= self._flushed_through:
                return False
            self._queue.append(_Queued(turn, pcm))
            return True

    def flush(self, turn: int) -> None:
        with self._lock:
            self._flushed_through = max(self._flushed_through, turn)
            self._queue = deque(q for q in self._queue if q.turn > turn)
            reports = [(t, self._ms(t)) for t in self._played_samples if t <= turn and self._ms(t) != self._reported_ms.get(t)]
            for t, ms in reports:
                self._reported_ms[t] = ms
        for t, ms in reports:
            self._on_played(t, ms)

    def pause(self, turn: int) -> None:
        with self._lock:
            self._paused.add(turn)

    def resume(self, turn: int) -> None:
        with self._lock:
            self._paused.discard(turn)

    def played_ms(self, turn: int) -> int:
        with self._lock:
            return self._ms(turn)

    def _ms(self, turn: int) -> int:
        return round(self._played_samples.get(turn, 0) * 1000 / self.sample_rate)

    def fill(self, nbytes: int) -> bytes:
        """The next `nbytes` for the sound card: queued audio of the head turn, silence after it."""
        out = bytearray()
        reports: list[tuple[int, int]] = []
        with self._lock:
            turn = None
            while len(out) < nbytes and self._queue and self._queue[0].turn not in self._paused:
                head = self._queue[0]
                if turn is not None and head.turn != turn:
                    break  # one turn per block keeps played-ms accounting simple
                turn = head.turn
                piece = head.pcm[head.position : head.position + nbytes - len(out)]
                head.position += len(piece)
                out.extend(piece)
                self._played_samples[turn] = self._played_samples.get(turn, 0) + len(piece) // 2
                if head.position >= len(head.pcm):
                    self._queue.popleft()
            if turn is not None:
                ms = self._ms(turn)
                drained = not self._queue or self._queue[0].turn != turn
                if ms - self._reported_ms.get(turn, 0) >= self.report_every_ms or drained:
                    self._reported_ms[turn] = ms
                    reports.append((turn, ms))
        out.extend(b"\x00" * (nbytes - len(out)))
        for reported_turn, ms in reports:
            self._on_played(reported_turn, ms)
        return bytes(out)


class LocalAudioTransport(EchoSide):
    """Talks through this machine's default (or configured) microphone and speaker.

    Mic audio is resampled to 16 kHz; the speaker runs at the device's own rate, which is what
    `output_format` tells the session to synthesise for. It prints nothing: `convers talk` wraps it in
    a printer of the conversation (cli/talk.py `TranscriptPrinter`).
    With an echo canceller (`echo.enabled`, on by default), the microphone is cleaned of what the
    speaker played, block by block as the sound card plays it: a speakerphone needs no headset.
    """

    name = "local"

    def __init__(
        self,
        input_device: str | None = None,
        output_device: str | None = None,
        echo: EchoCancelling | None = None,
    ) -> None:
        self._sd = import_sounddevice()
        self._input_info = find_device(self._sd, "input", input_device)
        self._output_info = find_device(self._sd, "output", output_device)
        self.input_device = input_device
        self.output_device = output_device
        self._device_input_rate = int(self._input_info.get("default_samplerate") or INPUT_RATE)
        self.output_format = AudioFormat(sample_rate=int(self._output_info.get("default_samplerate") or 24000))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inbox: asyncio.Queue[object] = asyncio.Queue()
        self._playback = PlaybackQueue(self._played_from_audio_thread, self.output_format.sample_rate)
        self._streams: list[Any] = []
        self.echo = echo

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalAudioTransport:
        make_canceller = canceller_factory(settings)
        echo = EchoCancelling(make_canceller()) if make_canceller is not None else None
        return cls(settings.transport.input_device, settings.transport.output_device, echo=echo)

    @classmethod
    def availability(cls, settings: Settings) -> Availability:
        try:
            sd = import_sounddevice()
            mic = find_device(sd, "input", settings.transport.input_device)
            speaker = find_device(sd, "output", settings.transport.output_device)
        except LocalAudioError as error:
            return Availability(False, str(error))
        return Availability(True, f"microphone {mic.get('name')!r}, speaker {speaker.get('name')!r}")

    # ----------------------------------------------------------------- audio threads -> loop

    def _played_from_audio_thread(self, turn: int, ms: int) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._inbox.put_nowait, InboundPlayed(turn=turn, ms=ms))

    def _mic_callback(self, indata: Any, frames: int, time_info: Any, status: Any) -> None:
        if status:
            log.debug("microphone status: %s", status)
            if status.input_overflow and self.echo is not None:
                self.echo.device_glitched()  # samples lost: the echo moved
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._inbox.put_nowait, bytes(indata))

    def _speaker_callback(self, outdata: Any, frames: int, time_info: Any, status: Any) -> None:
        if status:
            log.debug("speaker status: %s", status)
            if status.output_underflow and self.echo is not None:
                self.echo.device_glitched()  # the device played what it was not handed: the echo moved
        pcm = self._playback.fill(len(outdata))
        outdata[:] = pcm
        if self.echo is not None:
            # Exactly what the speaker gets, silence included: the canceller's reference.
            self.echo.played(AudioFrame(pcm, self.output_format.sample_rate))

    def _open_streams(self) -> None:
        sd = self._sd
        try:
            microphone = sd.RawInputStream(
                samplerate=self._device_input_rate,
                blocksize=round(self._device_input_rate * BLOCK_S),
                channels=1,
                dtype="int16",
                device=self.input_device,
                callback=self._mic_callback,
            )
            speaker = sd.RawOutputStream(
                samplerate=self.output_format.sample_rate,
                blocksize=round(self.output_format.sample_rate * BLOCK_S),
                channels=1,
                dtype="int16",
                device=self.output_device,
                callback=self._speaker_callback,
            )
        except sd.PortAudioError as error:
            raise LocalAudioError(f"cannot open the sound devices: {error}") from error
        self._streams = [microphone, speaker]
        for stream in self._streams:
            stream.start()

    # ----------------------------------------------------------------- Transport

    async def inbound(self) -> AsyncIterator[InboundEvent]:
        self._loop = asyncio.get_running_loop()
        self._open_streams()
        to_vad_rate = StreamResampler(self._device_input_rate, INPUT_RATE)
        while True:
            item = await self._inbox.get()
            if item is _END:
                return
            if isinstance(item, bytes):
                frame = AudioFrame(item, self._device_input_rate)
                if self.echo is not None:
                    cleaned = self.echo.cleaned(frame)  # at the canceller's rate, 16 kHz, whole 10 ms blocks
                    if cleaned.pcm:
                        yield InboundAudio(cleaned)
                else:
                    yield InboundAudio(to_vad_rate.push(frame))
            else:
                yield item  # type: ignore[misc]

    def type_text(self, text: str) -> None:
        """Typed input alongside the voice (for a keyboard shortcut or a test)."""
        self._inbox.put_nowait(InboundText(text))

    async def send_audio(self, turn: int, seq: int, frame: AudioFrame) -> None:
        if frame.sample_rate != self.output_format.sample_rate:
            frame = resample(frame, self.output_format.sample_rate)
        self._playback.push(turn, frame.pcm)

    async def send_event(self, event: dict[str, Any]) -> None:
        """The session's events have no client here to go to (`convers talk` prints the conversation)."""

    async def flush(self, turn: int) -> None:
        self._playback.flush(turn)

    async def pause(self, turn: int) -> None:
        self._playback.pause(turn)

    async def resume(self, turn: int) -> None:
        self._playback.resume(turn)

    async def close(self) -> None:
        for stream in self._streams:
            try:
                stream.stop()
                stream.close()
            except Exception as error:  # noqa: BLE001 - closing must never raise out of session teardown
                log.debug("closing audio stream failed: %s", error)
        self._streams = []
        self._inbox.put_nowait(_END)
