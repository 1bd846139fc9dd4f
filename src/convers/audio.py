"""Audio helpers on AudioFrame: PCM16 <-> float32, resampling, levels, re-chunking, pre-roll, WAV files."""

from __future__ import annotations

import io
import math
import wave
from collections import deque
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import soxr

from convers.contracts.audio import AudioFrame

# dBFS reported for digital silence, instead of minus infinity (keeps JSON and comparisons simple).
SILENCE_DBFS = -120.0
_INT16_SCALE = 32768.0


def pcm16_to_float32(pcm: bytes) -> np.ndarray:
    """PCM16 LE bytes as float32 samples in [-1, 1)."""
    if len(pcm) % 2:
        raise ValueError(f"PCM16 data must have an even number of bytes, got {len(pcm)}")
    return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / _INT16_SCALE


def float32_to_pcm16(samples: np.ndarray) -> bytes:
    """Float samples (clipped to [-1, 1]) as PCM16 LE bytes."""
    scaled = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0) * 32767.0
    return np.round(scaled).astype("<i2").tobytes()


def frame_from_float(samples: np.ndarray, sample_rate: int) -> AudioFrame:
    return AudioFrame(float32_to_pcm16(samples), sample_rate)


def silence(duration_s: float, sample_rate: int) -> AudioFrame:
    """Digital silence of `duration_s` seconds."""
    return AudioFrame(b"\x00\x00" * round(duration_s * sample_rate), sample_rate)


def concat(frames: Iterable[AudioFrame], sample_rate: int | None = None) -> AudioFrame:
    """Frames joined end to end; all must share one rate (`sample_rate` names it when there may be none)."""
    parts: list[bytes] = []
    rate = sample_rate
    for frame in frames:
        if rate is None:
            rate = frame.sample_rate
        elif frame.sample_rate != rate:
            raise ValueError(f"cannot join audio at {frame.sample_rate} Hz to audio at {rate} Hz: resample first")
        parts.append(frame.pcm)
    if rate is None:
        raise ValueError("concat of no frames needs sample_rate")
    return AudioFrame(b"".join(parts), rate)


def resample(frame: AudioFrame, rate: int) -> AudioFrame:
    """The frame at `rate` Hz (soxr, high quality). One-shot: for a stream of chunks use StreamResampler."""
    if frame.sample_rate == rate or not frame.pcm:
        return frame if frame.sample_rate == rate else AudioFrame(b"", rate)
    samples = np.frombuffer(frame.pcm, dtype="<i2")
    out = soxr.resample(samples, frame.sample_rate, rate, quality="HQ")
    return AudioFrame(np.asarray(out, dtype="<i2").tobytes(), rate)


class StreamResampler:
    """Resamples a stream chunk by chunk without clicks at chunk edges (soxr keeps the filter state)."""

    def __init__(self, in_rate: int, out_rate: int) -> None:
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._stream = None if in_rate == out_rate else soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16")

    def push(self, frame: AudioFrame, last: bool = False) -> AudioFrame:
        if frame.sample_rate != self.in_rate:
            raise ValueError(f"StreamResampler expects {self.in_rate} Hz, got {frame.sample_rate} Hz")
        if self._stream is None:
            return frame
        samples = np.frombuffer(frame.pcm, dtype="<i2")
        out = self._stream.resample_chunk(samples, last=last)
        return AudioFrame(np.asarray(out, dtype="<i2").tobytes(), self.out_rate)


def mean_square(pcm: bytes) -> float:
    """The energy of PCM16 audio, on a full scale of 1 (0 for no samples)."""
    if not pcm:
        return 0.0
    samples = pcm16_to_float32(pcm).astype(np.float64)
    return float(np.mean(samples * samples))


def rms(frame: AudioFrame) -> float:
    """Root mean square level, 0..1 of full scale."""
    return math.sqrt(mean_square(frame.pcm))


def dbfs(frame: AudioFrame) -> float:
    """Level in dB relative to full scale (a full-scale square wave is 0 dBFS)."""
    level = rms(frame)
    return SILENCE_DBFS if level <= 0.0 else max(SILENCE_DBFS, 20.0 * math.log10(level))


class Rechunker:
    """Turns frames of any length into frames of exactly `frame_samples` (what a VAD model wants).

    The remainder waits for the next push; `reset` drops it (new stream).
    """

    def __init__(self, frame_samples: int, sample_rate: int) -> None:
        if frame_samples <= 0:
            raise ValueError(f"frame_samples must be positive, got {frame_samples}")
        self.frame_samples = frame_samples
        self.sample_rate = sample_rate
        self._pending = bytearray()

    @property
    def pending_samples(self) -> int:
        return len(self._pending) // 2

    @property
    def pending(self) -> bytes:
        """The remainder waiting for a whole frame."""
        return bytes(self._pending)

    def push(self, frame: AudioFrame) -> list[AudioFrame]:
        if frame.sample_rate != self.sample_rate:
            raise ValueError(
                f"Rechunker expects {self.sample_rate} Hz, got {frame.sample_rate} Hz: resample before re-chunking"
            )
        self._pending.extend(frame.pcm)
        size = self.frame_samples * 2
        count = len(self._pending) // size
        out = [AudioFrame(bytes(self._pending[i * size : (i + 1) * size]), self.sample_rate) for i in range(count)]
        del self._pending[: count * size]
        return out

    def reset(self) -> None:
        self._pending.clear()


class PcmRing:
    """The most recent `max_samples` of PCM16 audio: the pre-roll kept from before speech onset."""

    def __init__(self, max_samples: int) -> None:
        self.max_samples = max(0, max_samples)
        self._chunks: deque[bytes] = deque()
        self._bytes = 0

    @property
    def samples(self) -> int:
        return self._bytes // 2

    def append(self, pcm: bytes) -> None:
        if self.max_samples == 0 or not pcm:
            return
        self._chunks.append(pcm)
        self._bytes += len(pcm)
        limit = self.max_samples * 2
        # Drop whole chunks while the rest still covers the limit, then trim the oldest one.
        while self._bytes - len(self._chunks[0]) >= limit:
            self._bytes -= len(self._chunks.popleft())
        excess = self._bytes - limit
        if excess > 0:
            self._chunks[0] = self._chunks[0][excess:]
            self._bytes -= excess

    def contents(self) -> bytes:
        return b"".join(self._chunks)

    def clear(self) -> None:
        self._chunks.clear()
        self._bytes = 0


def _to_mono_pcm16(raw: bytes, width: int, channels: int) -> np.ndarray:
    if width == 1:  # 8-bit WAV is unsigned
        samples = (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        samples = np.frombuffer(raw, dtype="<i2").astype(np.float32) / _INT16_SCALE
    elif width == 3:
        bytes3 = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3)
        as_int = (bytes3[:, 0].astype(np.int32) | (bytes3[:, 1].astype(np.int32) << 8) | (bytes3[:, 2].astype(np.int32) << 16))
        as_int = np.where(as_int >= 1 << 23, as_int - (1 << 24), as_int)
        samples = as_int.astype(np.float32) / float(1 << 23)
    elif width == 4:
        samples = np.frombuffer(raw, dtype="<i4").astype(np.float32) / float(1 << 31)
    else:
        raise ValueError(f"unsupported WAV sample width {width} bytes")
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1)
    return samples


def read_wav(source: Path | str | bytes) -> AudioFrame:
    """A PCM WAV file (path or bytes) as a mono PCM16 frame at the file's rate; channels are averaged."""
    handle = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")  # noqa: SIM115
    with handle, wave.open(handle, "rb") as reader:
        width = reader.getsampwidth()
        channels = reader.getnchannels()
        rate = reader.getframerate()
        raw = reader.readframes(reader.getnframes())
    if width == 2 and channels == 1:
        return AudioFrame(raw, rate)
    return frame_from_float(_to_mono_pcm16(raw, width, channels), rate)


def wav_bytes(frame: AudioFrame) -> bytes:
    """The frame as a complete mono PCM16 WAV file in memory."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(frame.sample_rate)
        writer.writeframes(frame.pcm)
    return buffer.getvalue()


def write_wav(path: Path | str, frame: AudioFrame) -> None:
    """Writes the frame as a mono PCM16 WAV file."""
    Path(path).write_bytes(wav_bytes(frame))
