"""LinearEchoFilter: Speex's adaptive echo filter (libspeexdsp), used as a second witness of double talk.

WebRTC AEC3 is the canceller the person hears through; its suppressor hides what its linear filter
left, and its output alone cannot tell a person from a moment where it lets the agent's echo through
(it does, for a few tenths of a second, now and then). Speex's multidelay filter has no suppressor:
its output is the microphone minus its linear estimate of the echo, so when a person talks over the
agent that output keeps most of the microphone's energy, and when it is only echo it keeps 10-25 dB
less. Two filters that each removed little at the same moment are a person far more often than
either alone (`convers.double_talk`).

libspeexdsp is a C library from Debian (`libspeexdsp1`, installed by scripts/install.sh; on macOS
`brew install speexdsp`), called through ctypes: its echo API has not changed since 2008.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import Any

import numpy as np

INSTALL_HINT = "the double-talk witness needs libspeexdsp: apt install libspeexdsp1 (brew install speexdsp on macOS)"
_SET_SAMPLING_RATE = 24  # SPEEX_ECHO_SET_SAMPLING_RATE in speex/speex_echo.h


def load_speexdsp() -> Any:
    """The libspeexdsp library, or ImportError with how to install it."""
    # The usual names first: find_library runs ldconfig or a compiler, tens of milliseconds.
    for name in ("libspeexdsp.so.1", "libspeexdsp.1.dylib", "libspeexdsp.dylib", "find"):
        if name == "find":
            name = ctypes.util.find_library("speexdsp") or ""
            if not name:
                break
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        if hasattr(lib, "speex_echo_state_init"):
            lib.speex_echo_state_init.restype = ctypes.c_void_p
            lib.speex_echo_state_init.argtypes = [ctypes.c_int, ctypes.c_int]
            lib.speex_echo_cancellation.restype = None
            lib.speex_echo_cancellation.argtypes = [ctypes.c_void_p] * 4
            lib.speex_echo_ctl.restype = ctypes.c_int
            lib.speex_echo_ctl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
            lib.speex_echo_state_destroy.restype = None
            lib.speex_echo_state_destroy.argtypes = [ctypes.c_void_p]
            return lib
    raise ImportError(INSTALL_HINT)


class LinearEchoFilter:
    """Speex's echo filter on blocks of `frame_samples` PCM16: `residual(mic, played)` is the microphone minus its echo estimate."""

    def __init__(self, sample_rate: int, frame_samples: int, tail_s: float = 0.4) -> None:
        self._lib = load_speexdsp()
        self.sample_rate = sample_rate
        self.frame_samples = frame_samples
        # Long enough for the speaker's delay (up to 200 ms here) and most of a room's reverberation.
        self._state = self._lib.speex_echo_state_init(frame_samples, round(tail_s * sample_rate))
        if not self._state:
            raise RuntimeError("libspeexdsp could not make an echo filter")
        rate = ctypes.c_int(sample_rate)
        self._lib.speex_echo_ctl(self._state, _SET_SAMPLING_RATE, ctypes.byref(rate))
        self._out = np.zeros(frame_samples, dtype=np.int16)

    def residual(self, mic: bytes, played: bytes) -> bytes:
        """One microphone block and the block played at the same time; what the filter could not explain."""
        if len(mic) != 2 * self.frame_samples or len(played) != 2 * self.frame_samples:
            raise ValueError(f"the linear echo filter takes blocks of {self.frame_samples} samples")
        near = np.frombuffer(mic, dtype=np.int16).copy()
        far = np.frombuffer(played, dtype=np.int16).copy()
        self._lib.speex_echo_cancellation(self._state, near.ctypes.data, far.ctypes.data, self._out.ctypes.data)
        return self._out.tobytes()

    def close(self) -> None:
        if self._state:
            self._lib.speex_echo_state_destroy(self._state)
            self._state = None

    def __del__(self) -> None:
        self.close()
