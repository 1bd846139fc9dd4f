"""Audio as it travels between providers: PCM16 little-endian mono bytes that know their rate."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AudioFormat:
    """What a provider produces or consumes; providers declare it instead of assuming 16 kHz."""

    sample_rate: int
    channels: int = 1
    sample_width_bytes: int = 2


@dataclass(frozen=True)
class AudioFrame:
    """A run of PCM16 LE mono samples at `sample_rate` Hz."""

    pcm: bytes
    sample_rate: int

    @property
    def samples(self) -> int:
        return len(self.pcm) // 2

    @property
    def duration_s(self) -> float:
        return self.samples / self.sample_rate
