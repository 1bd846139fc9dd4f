"""Plain energy VAD: loudness over an adaptive noise floor, for when no model is at hand."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from convers.audio import SILENCE_DBFS, dbfs
from convers.config import ProviderOptions, provider_options
from convers.contracts.audio import AudioFrame
from convers.contracts.provider import Availability

if TYPE_CHECKING:
    from convers.config import Settings


class EnergyVad:
    """Scores a frame by how far its level (dBFS) stands above a running noise floor.

    The first frame sets the floor; after that it falls fast (a quieter frame is better evidence of
    the noise level) and rises slowly, so a long utterance does not become "noise" before it ends.
    Speech in the very first frame of a stream is therefore missed until a quieter frame comes. The score is a logistic curve of
    the margin: 0.5 at `margin_db` above the floor, near 1 a few dB beyond.
    Options: `margin_db` (default 12), `slope_db` (default 2), `frame_ms` (default 20).
    """

    name = "energy"
    # The floor never drops below this: in digital silence every tiny sound would count as speech.
    min_floor_dbfs = -65.0
    # Per-frame approach of the floor towards a louder level (about 4 s at 20 ms frames).
    rise_rate = 0.005
    # Per-frame approach towards a quieter level.
    fall_rate = 0.3

    def __init__(self, sample_rate: int = 16000, frame_ms: int = 20, margin_db: float = 12.0, slope_db: float = 2.0) -> None:
        if slope_db <= 0:
            raise ValueError(f"energy VAD slope_db must be positive, got {slope_db!r}")
        self.sample_rate = sample_rate
        self.frame_samples = sample_rate * frame_ms // 1000
        self.margin_db = margin_db
        self.slope_db = slope_db
        self.floor_dbfs = self.min_floor_dbfs
        self._fresh = True

    class Options(ProviderOptions):
        """vad.options for the energy VAD."""

        frame_ms: int = 20
        margin_db: float = 12.0
        slope_db: float = 2.0

    @classmethod
    def from_settings(cls, settings: Settings) -> EnergyVad:
        options = provider_options(cls.Options, settings, "vad", "energy")
        return cls(frame_ms=options.frame_ms, margin_db=options.margin_db, slope_db=options.slope_db)

    @classmethod
    def availability(cls, settings: Settings) -> Availability:
        return Availability(True, "built in (no model)")

    def reset(self) -> None:
        self.floor_dbfs = self.min_floor_dbfs
        self._fresh = True

    def speech_probability(self, pcm: bytes) -> float:
        if len(pcm) != self.frame_samples * 2:
            raise ValueError(
                f"energy VAD needs frames of {self.frame_samples} samples, got {len(pcm) // 2}: "
                "re-chunk with convers.audio.Rechunker"
            )
        level = dbfs(AudioFrame(pcm, self.sample_rate))
        if self._fresh:
            self._fresh = False
            self.floor_dbfs = max(self.min_floor_dbfs, level)
        margin = level - self.floor_dbfs
        score = 1.0 / (1.0 + math.exp(-(margin - self.margin_db) / self.slope_db))
        if level > SILENCE_DBFS:
            rate = self.fall_rate if level < self.floor_dbfs else self.rise_rate
            self.floor_dbfs = max(self.min_floor_dbfs, self.floor_dbfs + rate * (level - self.floor_dbfs))
        return score
