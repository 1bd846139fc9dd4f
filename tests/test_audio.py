"""Audio helpers: conversion, resampling, levels, re-chunking, pre-roll ring, WAV files."""

from __future__ import annotations

import io
import wave

import numpy as np
import pytest

from convers.audio import (
    SILENCE_DBFS,
    PcmRing,
    Rechunker,
    StreamResampler,
    concat,
    dbfs,
    float32_to_pcm16,
    frame_from_float,
    pcm16_to_float32,
    read_wav,
    resample,
    rms,
    silence,
    wav_bytes,
    write_wav,
)
from convers.contracts.audio import AudioFrame


def tone(frequency: float, duration_s: float, rate: int, amplitude: float = 0.5) -> AudioFrame:
    t = np.arange(round(duration_s * rate)) / rate
    return frame_from_float(amplitude * np.sin(2 * np.pi * frequency * t), rate)


def peak_frequency(frame: AudioFrame) -> float:
    samples = pcm16_to_float32(frame.pcm)
    spectrum = np.abs(np.fft.rfft(samples))
    return float(np.fft.rfftfreq(len(samples), 1 / frame.sample_rate)[np.argmax(spectrum)])


def test_pcm_float_round_trip_and_clipping() -> None:
    values = np.array([0.0, 0.5, -0.5, 0.999, -1.0], dtype=np.float32)
    back = pcm16_to_float32(float32_to_pcm16(values))
    assert np.allclose(back, values, atol=1 / 32767)
    clipped = np.frombuffer(float32_to_pcm16(np.array([2.0, -3.0])), dtype="<i2")
    assert clipped.tolist() == [32767, -32767]


def test_odd_byte_count_is_refused() -> None:
    with pytest.raises(ValueError, match="even number of bytes"):
        pcm16_to_float32(b"\x00\x00\x00")


@pytest.mark.parametrize(("source", "target"), [(48000, 16000), (22050, 16000), (16000, 24000), (8000, 16000)])
def test_resample_keeps_duration_and_pitch(source: int, target: int) -> None:
    original = tone(440.0, 0.5, source)
    converted = resample(original, target)
    assert converted.sample_rate == target
    assert converted.samples == pytest.approx(original.samples * target / source, abs=2)
    assert peak_frequency(converted) == pytest.approx(440.0, abs=3.0)


def test_resample_to_same_rate_is_identity_and_empty_stays_empty() -> None:
    frame = tone(300.0, 0.1, 16000)
    assert resample(frame, 16000) is frame
    assert resample(AudioFrame(b"", 48000), 16000) == AudioFrame(b"", 16000)


def test_stream_resampler_matches_length_over_many_chunks() -> None:
    original = tone(440.0, 1.0, 48000)
    stream = StreamResampler(48000, 16000)
    chunk = 480 * 2
    pieces = [
        stream.push(AudioFrame(original.pcm[i : i + chunk], 48000), last=i + chunk >= len(original.pcm))
        for i in range(0, len(original.pcm), chunk)
    ]
    joined = concat(pieces, sample_rate=16000)
    assert joined.samples == pytest.approx(16000, abs=2)
    assert peak_frequency(joined) == pytest.approx(440.0, abs=2.0)
    with pytest.raises(ValueError, match="48000 Hz"):
        stream.push(AudioFrame(b"\x00\x00", 16000))


def test_levels() -> None:
    assert rms(silence(0.1, 16000)) == 0.0
    assert dbfs(silence(0.1, 16000)) == SILENCE_DBFS
    # A sine at amplitude A has RMS A/sqrt(2): 0.5 -> about -9 dBFS.
    assert dbfs(tone(1000.0, 0.1, 16000, amplitude=0.5)) == pytest.approx(-9.03, abs=0.1)
    assert rms(tone(1000.0, 0.1, 16000, amplitude=1.0)) == pytest.approx(0.7071, abs=0.01)
    assert rms(AudioFrame(b"", 16000)) == 0.0


@pytest.mark.parametrize("split", [[1], [100, 412, 700], [511, 1, 512, 3], [2000]])
def test_rechunker_emits_exact_frames_in_order(split: list[int]) -> None:
    samples = np.arange(3000, dtype="<i2")
    chunker = Rechunker(512, 16000)
    out: list[AudioFrame] = []
    position = 0
    while position < len(samples):
        for size in split:
            piece = samples[position : position + size]
            position += len(piece)
            out.extend(chunker.push(AudioFrame(piece.tobytes(), 16000)))
    assert all(frame.samples == 512 for frame in out)
    assert len(out) == 3000 // 512
    joined = np.frombuffer(b"".join(f.pcm for f in out), dtype="<i2")
    assert joined.tolist() == samples[: len(out) * 512].tolist()
    assert chunker.pending_samples == 3000 - len(out) * 512
    chunker.reset()
    assert chunker.pending_samples == 0


def test_rechunker_refuses_another_rate() -> None:
    with pytest.raises(ValueError, match="resample"):
        Rechunker(512, 16000).push(AudioFrame(b"\x00\x00" * 10, 48000))


def test_ring_keeps_only_the_most_recent_samples() -> None:
    ring = PcmRing(5)
    for value in range(8):
        ring.append(np.array([value, value], dtype="<i2").tobytes())
    assert np.frombuffer(ring.contents(), dtype="<i2").tolist() == [5, 6, 6, 7, 7]
    assert ring.samples == 5
    ring.append(np.arange(10, 20, dtype="<i2").tobytes())
    assert np.frombuffer(ring.contents(), dtype="<i2").tolist() == [15, 16, 17, 18, 19]
    ring.clear()
    assert ring.contents() == b""
    empty = PcmRing(0)
    empty.append(b"\x01\x00")
    assert empty.contents() == b""


def test_wav_round_trip(tmp_path) -> None:
    frame = tone(500.0, 0.2, 22050)
    path = tmp_path / "tone.wav"
    write_wav(path, frame)
    assert read_wav(path) == frame
    assert read_wav(wav_bytes(frame)) == frame


def test_stereo_and_8_bit_wav_become_mono_pcm16() -> None:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(2)
        writer.setsampwidth(1)
        writer.setframerate(8000)
        # Left at +0.5, right at -0.5 (unsigned 8-bit around 128): the mono average is silence.
        writer.writeframes(bytes([192, 64]) * 100)
    frame = read_wav(buffer.getvalue())
    assert frame.sample_rate == 8000
    assert frame.samples == 100
    assert rms(frame) == 0.0


def test_concat_refuses_mixed_rates() -> None:
    assert concat([silence(0.01, 16000), silence(0.02, 16000)]).samples == 480
    with pytest.raises(ValueError, match="resample first"):
        concat([silence(0.01, 16000), silence(0.01, 8000)])
    with pytest.raises(ValueError, match="sample_rate"):
        concat([])
