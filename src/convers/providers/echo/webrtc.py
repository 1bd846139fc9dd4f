"""WebRTC's audio processing module (AEC3, noise suppression, gain control), prebuilt in the `livekit` wheel.

No compiler: the `livekit` package ships the module inside its native library (`liblivekit_ffi.so`)
and exposes it as `livekit.rtc.AudioProcessingModule`. Measured here on Piper speech through a
simulated room (`convers bench echo`): 25-50 dB of echo removed from the first second, about
0.1 ms of one core per 10 ms block.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Any

from convers.config import ProviderOptions, provider_options
from convers.contracts.provider import Availability
from convers.linear_echo import INSTALL_HINT as SPEEX_HINT
from convers.linear_echo import load_speexdsp

if TYPE_CHECKING:
    from convers.config import Settings

INSTALL_HINT = "the WebRTC echo canceller needs the livekit package: pip install 'convers[voice]'"
# WebRTC processes 10 ms blocks; 16 kHz is the rate the VAD and STT listen at.
SAMPLE_RATE = 16000
FRAME_SAMPLES = 160


class WebRtcEchoCanceller:
    """WebRTC AEC3 on 10 ms blocks at 16 kHz, with its own delay estimation."""

    name = "webrtc"
    sample_rate = SAMPLE_RATE
    frame_samples = FRAME_SAMPLES

    class Options(ProviderOptions):
        """`echo.options` for the WebRTC canceller."""

        # Off: it thins the person's voice while the agent talks. Measured with `convers bench echo
        # --noise -45` (3 minutes a level): onset to pause p50 107 -> 121 ms at echo -10 dB and
        # 171 -> 244 ms at 0 dB with it on, and one barge-in of 20 missed.
        noise_suppression: bool = False
        # Removes hum and rumble below ~80 Hz, which only confuses the echo estimate.
        high_pass_filter: bool = True
        # Off: no gain measured (`convers bench echo`, 3 minutes a level): onset to pause p50 231 -> 197 ms
        # at -5 dB but 234 -> 346 ms at 0 dB with it on; the VAD needs no fixed level.
        auto_gain_control: bool = False

    def __init__(self, options: WebRtcEchoCanceller.Options | None = None) -> None:
        try:
            from livekit import rtc
        except ImportError as error:
            raise ImportError(INSTALL_HINT) from error
        self.options = options or self.Options()
        self._rtc: Any = rtc
        self._apm = rtc.AudioProcessingModule(
            echo_cancellation=True,
            noise_suppression=self.options.noise_suppression,
            high_pass_filter=self.options.high_pass_filter,
            auto_gain_control=self.options.auto_gain_control,
        )
        # The canceller estimates the delay itself; 0 says "nothing known beyond what you measure".
        self._apm.set_stream_delay_ms(0)

    @classmethod
    def from_settings(cls, settings: Settings) -> WebRtcEchoCanceller:
        return cls(provider_options(cls.Options, settings, "echo", cls.name))

    @classmethod
    def availability(cls, settings: Settings) -> Availability:
        if importlib.util.find_spec("livekit") is None or importlib.util.find_spec("livekit.rtc") is None:
            return Availability(False, INSTALL_HINT)
        try:
            load_speexdsp()
            cue = "the double-talk cue with libspeexdsp"
        except ImportError:
            cue = "no double-talk cue (the VAD alone pauses the agent): " + SPEEX_HINT
        return Availability(True, f"WebRTC AEC3 from the livekit wheel; {cue}")

    def _frame(self, pcm: bytes) -> Any:
        if len(pcm) != 2 * FRAME_SAMPLES:
            raise ValueError(f"the WebRTC canceller takes blocks of {FRAME_SAMPLES} samples, got {len(pcm) // 2}")
        return self._rtc.AudioFrame(bytearray(pcm), SAMPLE_RATE, 1, FRAME_SAMPLES)

    def render(self, pcm: bytes) -> None:
        self._apm.process_reverse_stream(self._frame(pcm))

    def capture(self, pcm: bytes) -> bytes:
        frame = self._frame(pcm)
        # Set before every block, as the module asks when echo processing is on.
        self._apm.set_stream_delay_ms(0)
        self._apm.process_stream(frame)
        return bytes(frame.data.cast("B")) if isinstance(frame.data, memoryview) else bytes(frame.data)
