"""Two clocks: what was played, read on the microphone's clock, and how far the two clocks drift apart.

A microphone and a speaker on two devices (a USB microphone, a Bluetooth speaker, a page whose
capture and playback run on different hardware) each keep their own sample clock, tens of parts per
million apart. The agent's echo then reaches the microphone a little later (or sooner) every second:
at 100 ppm the echo path moves one sample every 0.6 s. WebRTC AEC3 follows that; Speex's linear
filter, the double-talk witness (`convers.double_talk`), does not: it keeps learning a path that has
already moved, and removed 17 / 9 / 3 dB of the agent's echo at 10 / 30 / 100 ppm instead of 45 dB
(simulated rooms, `convers bench echo --clock-drift`).

So the witness is given the played audio on the microphone's clock: `ClockReader` reads the played
stream at a position that advances `1 / (1 + drift)` samples for each microphone sample (a
windowed-sinc interpolation between samples), and `DriftEstimator` measures the drift that is left:
every second of the agent's speech, where in the played audio the microphone's last second is
(GCC-PHAT: the cross-spectrum of the two, whitened, whose peak is the echo's delay, read to a
fraction of a sample), and the slope of those delays over time. The witness corrects its reading
by that slope and measures again, so what is left shrinks towards nothing.
"""

from __future__ import annotations

import functools
import math
from collections import deque

import numpy as np

# The interpolation's length (samples), band edge (of the Nyquist frequency) and Kaiser window: its
# gain is the same at every fraction of a sample to 0.001 dB up to 6 kHz (at 16 kHz; -3.5 dB at
# 7 kHz), so reading between samples delays the audio and changes nothing else of it.
TAPS = 32
BAND = 0.9
BETA = 8.0


# The kernel is tabled at this many fractions of a sample (reading to 1/2048 of a sample: at 4 kHz a
# phase error of -70 dB); the Bessel function of the window took 4 ms a 10 ms block.
PHASES = 1024


def interpolation_weights(offsets: np.ndarray) -> np.ndarray:
    """The weights of the samples at `offsets` (samples, fractional) from the time read."""
    window = np.i0(BETA * np.sqrt(np.clip(1 - (offsets / (TAPS / 2)) ** 2, 0.0, None))) / np.i0(BETA)
    return BAND * np.sinc(BAND * offsets) * window


@functools.cache
def _kernel_table() -> np.ndarray:
    """`interpolation_weights` of the TAPS samples around a time `phase / PHASES` past a sample, for
    every phase from 0 to PHASES (rows); made once (4 ms) and shared, read-only, by every reader."""
    fractions = np.arange(PHASES + 1)[:, None] / PHASES
    table = interpolation_weights(fractions - np.arange(-TAPS // 2 + 1, TAPS // 2 + 1))
    table.setflags(write=False)
    return table


class ClockReader:
    """A stream read on another clock: each sample read lies `step` samples of the stream after the
    one before, starting `lag` samples before the stream's first. Reading where nothing was fed
    gives silence. `history` samples before the read position are kept for a step back (`skip`)."""

    def __init__(self, lag: float = 0.0, history: int = 0) -> None:
        self.position = -float(lag)  # of the next sample read, in samples of the stream
        self.history = history
        self._kernel = _kernel_table()
        self._buffer = np.zeros(0)
        self._start = 0  # the stream index of _buffer[0]

    @property
    def fed(self) -> int:
        """How many samples of the stream have been fed."""
        return self._start + len(self._buffer)

    def ahead(self) -> float:
        """How many fed samples lie at or past the read position."""
        return self.fed - self.position

    def feed(self, samples: np.ndarray) -> None:
        self._buffer = np.concatenate([self._buffer, np.asarray(samples, dtype=np.float64)])

    def skip(self, samples: float) -> None:
        """Moves the read position on (or, within `history`, back) without reading."""
        self.position += samples
        self._forget()

    def read(self, count: int, step: float = 1.0) -> np.ndarray:
        """The next `count` samples on the reader's clock."""
        start = self.position
        self.position += count * step
        if step == 1.0 and start == math.floor(start):
            # The same clock, on a whole sample: the stream itself, its whole band.
            first = int(start) - self._start
            out = np.zeros(count)
            lo, hi = max(0, first), min(len(self._buffer), first + count)
            if hi > lo:
                out[lo - first : hi - first] = self._buffer[lo:hi]
        else:
            at = start + np.arange(count) * step - self._start
            base = np.floor(at).astype(int)
            taps = base[:, None] + np.arange(-TAPS // 2 + 1, TAPS // 2 + 1)
            padded = np.concatenate([np.zeros(1), self._buffer, np.zeros(1)])  # outside: silence
            values = padded[np.clip(taps + 1, 0, len(padded) - 1)]
            phases = np.rint((at - base) * PHASES).astype(int)
            out = np.einsum("ij,ij->i", values, self._kernel[phases])
        self._forget()
        return out

    def _forget(self) -> None:
        """Drops what no later read can reach."""
        keep = max(0, int(math.floor(self.position)) - TAPS - self.history - self._start)
        if keep:
            self._buffer = self._buffer[keep:]
            self._start += keep


class DriftEstimator:
    """How fast the echo's delay moves against a reference, from pairs of microphone and reference
    samples fed in step: GCC-PHAT delays of `window_s` windows (while the reference is audible), and
    the slope of those delays over at least `min_span_s` (Theil-Sen: the median of the slopes between
    every two, so that a window where a person spoke over the echo does not bend it)."""

    def __init__(self, rate: int, window_s: float = 1.0, max_delay_s: float = 0.4, min_span_s: float = 12.0,
                 min_points: int = 10, keep_points: int = 40) -> None:
        self.rate = rate
        self.window = round(window_s * rate)
        self.max_delay = round(max_delay_s * rate)
        self.min_span = min_span_s * rate
        self.min_points = min_points
        # Long enough that the delays looked at (0 to max_delay) do not wrap around: a window's
        # samples meet the reference's only up to its end.
        self._size = 1 << math.ceil(math.log2(self.window + self.max_delay))
        # Whitened, every frequency bin counts the same: the bins where speech has little energy (and
        # the reading's interpolation none, above 0.9 of the Nyquist frequency) only add noise.
        bins = np.fft.rfftfreq(self._size, 1 / rate)
        self._band = ((bins >= BAND_HZ[0]) & (bins <= BAND_HZ[1])).astype(np.float64)
        self._mic: deque[np.ndarray] = deque()
        self._reference: deque[np.ndarray] = deque()
        self._held = 0  # samples in the deques
        self._since_window = 0
        self._count = 0  # samples fed since the start
        # (sample index of a window's end, the echo's delay there in samples)
        self.delays: deque[tuple[int, float]] = deque(maxlen=keep_points)
        self._last_peak: int | None = None

    def clear(self) -> None:
        """Forgets the delays measured (the reference moved: a realignment, or a new reading of it)."""
        self.delays.clear()

    def skip(self, samples: int) -> None:
        """`samples` of the microphone went by unmeasured (the agent silent): the delays' time goes on
        with them, and the next window starts after them. (Counting only the samples measured, with
        the person's turns left out, read 100 ppm as 120-140 in the benchmark's rooms.)"""
        self._count += samples
        self._mic.clear()
        self._reference.clear()
        self._held = self._since_window = 0

    def add(self, mic: np.ndarray, reference: np.ndarray) -> bool:
        """The next samples of the microphone and of the reference as paired, the same number of each;
        True when they completed a window whose delay was measured."""
        self._mic.append(mic)
        self._reference.append(reference)
        self._held += len(mic)
        self._count += len(mic)
        self._since_window += len(mic)
        while self._held - len(self._mic[0]) >= self.window + self.max_delay:
            self._held -= len(self._mic.popleft())
            self._reference.popleft()
        if self._since_window >= self.window and self._held >= self.window + self.max_delay:
            self._since_window = 0
            delay = self._delay(np.concatenate(self._mic)[-self.window:],
                                np.concatenate(self._reference)[-(self.window + self.max_delay):])
            if delay is not None:
                self.delays.append((self._count, delay))
                return True
        return False

    def _delay(self, mic: np.ndarray, reference: np.ndarray) -> float | None:
        """Where in `reference` (max_delay samples longer, ending with `mic`) the echo in `mic` lies:
        its delay in samples, or None when the reference is near silent or no clear peak stands out."""
        if float(np.mean(reference[-self.window:] ** 2)) < 1e-7 or float(np.mean(mic ** 2)) < 1e-9:
            return None
        spectrum = np.fft.rfft(reference, self._size) * np.conj(np.fft.rfft(mic, self._size))
        correlation = np.fft.irfft(self._band * spectrum / (np.abs(spectrum) + 1e-12), self._size)[: self.max_delay + 1]
        # correlation[k] peaks where reference[i + k] lines up with mic[i]: the delay is max_delay - k.
        peak = int(np.argmax(correlation))
        if correlation[peak] < 6 * float(np.std(correlation)):
            return None
        if self._last_peak is not None:
            # The path followed so far, while it stands out (half the strongest): a room's paths take
            # turns at being the strongest, and a jump between two of them would read as drift.
            lo, hi = max(0, self._last_peak - TRACK_SAMPLES), min(self.max_delay, self._last_peak + TRACK_SAMPLES)
            near = lo + int(np.argmax(correlation[lo : hi + 1]))
            if correlation[near] >= 0.5 * correlation[peak]:
                peak = near
        self._last_peak = peak
        if not 0 < peak < self.max_delay:
            return None
        a, b, c = correlation[peak - 1], correlation[peak], correlation[peak + 1]
        bend = a - 2 * b + c
        fraction = 0.5 * (a - c) / bend if bend < 0 else 0.0
        return self.max_delay - (peak + fraction)

    def drift(self) -> float | None:
        """The slope of the delays measured (samples of delay per sample of time: 1e-4 is 100 ppm), or
        None until `min_points` of them over `min_span_s`, and most of those, lie on one line.

        A room has more than one path: a strong reflection can outdo the direct one in a window, and
        a delay then jumps by milliseconds and back (in simulated rooms, -0.6 to +7 ms). Fitted on
        six of them over 8 s, a first estimate came out at -960 ppm for 100. So the delays within
        `INLIER_SAMPLES` of a first fit are fitted again, when `INLIER_SHARE` of them are."""
        if len(self.delays) < self.min_points or self.delays[-1][0] - self.delays[0][0] < self.min_span:
            return None
        points = np.asarray(self.delays)
        slope, intercept = _theil_sen(points[:, 0], points[:, 1])
        inliers = points[np.abs(points[:, 1] - (intercept + slope * points[:, 0])) <= INLIER_SAMPLES]
        if len(inliers) < max(self.min_points, INLIER_SHARE * len(points)) or inliers[-1, 0] - inliers[0, 0] < self.min_span:
            return None
        slope, _ = _theil_sen(inliers[:, 0], inliers[:, 1])
        return slope


# A delay within this many samples of the line through the others is on it (at 16 kHz; a good
# window reads the direct path to a tenth of a sample), and this share of them must be. Chosen on
# 32 simulated rooms of their own (20-200 ms, RT60 0.15-0.5 s, echo -10 dB; 0, 30, 100 and -100
# ppm; not the benchmark's rooms): with 0.6 the drift was found in 28 of them (a room whose
# reflections took more than 40 % of the windows never gave one), with 0.4 in all 32, 13-88 s into
# the agent's speech (p50 14.5 s), within 0.2 ppm (p50) and 2.9 ppm at most of the truth. With the
# search near the path and the band added since (three runs, the voice synthesised anew each):
# 31-32 of 32, p50 14 s, within 0.5 ppm (p50) and 7-15 ppm at most; the next measurement, on the
# corrected reading, takes the rest away.
INLIER_SAMPLES = 4.0
INLIER_SHARE = 0.4
# The frequencies (Hz) whose phases say where the echo is.
BAND_HZ = (100.0, 6000.0)
# How far (samples) from the path followed so far a window looks for it first: at 100 ppm the echo
# moves 1.6 samples a second.
TRACK_SAMPLES = 24


def _theil_sen(at: np.ndarray, value: np.ndarray) -> tuple[float, float]:
    """The median of the slopes between every two points, and the median intercept under it."""
    i, j = np.triu_indices(len(at), k=1)
    apart = at[j] - at[i]
    slope = float(np.median((value[j] - value[i])[apart > 0] / apart[apart > 0]))
    return slope, float(np.median(value - slope * at))
