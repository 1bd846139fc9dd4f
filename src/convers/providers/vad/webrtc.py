"""WebRTC VAD (webrtcvad): tiny and fast, a yes/no per 10, 20 or 30 ms frame."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from convers.config import ProviderOptions, provider_options
from convers.contracts.provider import Availability

if TYPE_CHECKING:
    from convers.config import Settings

SUPPORTED_RATES = (8000, 16000, 32000, 48000)
SUPPORTED_FRAME_MS = (10, 20, 30)


class WebRtcVad:
    """Wraps webrtcvad. Its answer is binary, so the probability is 1.0 or 0.0.

    Options (settings.vad.options): `aggressiveness` 0-3 (3 rejects the most non-speech, default 2),
    `frame_ms` 10/20/30 (default 20), `sample_rate` (default 16000).
    """

    name = "webrtc"

    def __init__(self, aggressiveness: int = 2, frame_ms: int = 20, sample_rate: int = 16000) -> None:
        import webrtcvad

        if aggressiveness not in range(4):
            raise ValueError(f"webrtc VAD aggressiveness must be 0, 1, 2 or 3, got {aggressiveness!r}")
        if frame_ms not in SUPPORTED_FRAME_MS:
            raise ValueError(f"webrtc VAD frame_ms must be one of {SUPPORTED_FRAME_MS}, got {frame_ms!r}")
        if sample_rate not in SUPPORTED_RATES:
            raise ValueError(f"webrtc VAD sample_rate must be one of {SUPPORTED_RATES}, got {sample_rate!r}")
        self.aggressiveness = aggressiveness
        self.sample_rate = sample_rate
        self.frame_samples = sample_rate * frame_ms // 1000
        self._vad = webrtcvad.Vad(aggressiveness)

    class Options(ProviderOptions):
        """vad.options for WebRTC's VAD."""

        aggressiveness: int = Field(default=2, ge=0, le=3)
        frame_ms: int = 20
        sample_rate: int = 16000

    @classmethod
    def from_settings(cls, settings: Settings) -> WebRtcVad:
        options = provider_options(cls.Options, settings, "vad", "webrtc")
        return cls(aggressiveness=options.aggressiveness, frame_ms=options.frame_ms, sample_rate=options.sample_rate)

    @classmethod
    def availability(cls, settings: Settings) -> Availability:
        try:
            import webrtcvad  # noqa: F401
        except ImportError:
            return Availability(False, "webrtcvad is not installed: pip install webrtcvad-wheels")
        return Availability(True, "webrtcvad installed")

    def reset(self) -> None:
        return None  # webrtcvad keeps no state we can observe between frames

    def speech_probability(self, pcm: bytes) -> float:
        if len(pcm) != self.frame_samples * 2:
            raise ValueError(
                f"webrtc VAD needs frames of {self.frame_samples} samples, got {len(pcm) // 2}: "
                "re-chunk with convers.audio.Rechunker"
            )
        return 1.0 if self._vad.is_speech(pcm, self.sample_rate) else 0.0
