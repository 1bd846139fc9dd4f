"""Sharpens the VAD's moments of speech onset and end with the loudness of the audio around them.

Silero scores 32 ms frames with context, so it calls a soft onset ("wait", "hold") one to three
frames late and keeps calling speech for a frame or two after the voice has stopped (measured with
`convers bench latency`: 40-110 ms at onset, ~45 ms at the end). Both delays land on what the user
feels: the barge-in minimum is counted from the onset, the end-of-turn silence from the end. The
VAD stays the judge of *whether* there is speech; the loudness only says *where*, inside a bounded
window next to the VAD's moment, it started or stopped. (A frame that is half silence is called
speech from its start, so an onset may also move forward to the first loud hop of that frame.)

"Loud" means above the noise floor heard before the onset (a low percentile of the pre-roll's
levels) by `margin_db`, and never below `min_level_dbfs`. A noisy room or agent echo raises the
floor, so the window then moves less, never more: the worst case is the VAD's own moment, and a
shift is at most `max_shift_s`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Loudness is judged per 8 ms hop: fine enough to place an edge well inside one 32 ms VAD frame,
# long enough to hold a couple of pitch periods of a low voice.
HOP_S = 0.008


def hop_levels_dbfs(pcm: bytes | bytearray, sample_rate: int) -> np.ndarray:
    """Level of each whole 8 ms hop of PCM16 `pcm`, in dBFS (digital silence is -inf)."""
    hop = max(1, round(HOP_S * sample_rate))
    samples = np.frombuffer(pcm, dtype="<i2")
    count = len(samples) // hop
    if count == 0:
        return np.zeros(0, dtype=np.float64)
    windows = samples[: count * hop].reshape(count, hop).astype(np.float64) / 32768.0
    power = np.mean(windows * windows, axis=1)
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(power)


@dataclass(frozen=True)
class SpeechEdges:
    """Places a VAD onset where the voice got loud (earlier, or later inside the VAD's first speech
    frame), and moves a VAD end earlier to where it went quiet.

    Offsets are in bytes of PCM16 at `sample_rate`, counted in the buffer the caller passes.
    """

    sample_rate: int
    max_shift_s: float
    margin_db: float = 9.0
    min_level_dbfs: float = -60.0
    # The floor is this percentile of the pre-roll's hop levels: robust to a breath or a click in it.
    floor_percentile: float = 20.0

    @property
    def enabled(self) -> bool:
        return self.max_shift_s > 0

    @property
    def _hop_bytes(self) -> int:
        return max(1, round(HOP_S * self.sample_rate)) * 2

    @property
    def _max_hops(self) -> int:
        return int(self.max_shift_s / HOP_S + 1e-9)

    def threshold_dbfs(self, pcm: bytes | bytearray, vad_onset: int) -> float:
        """The level that counts as voice, from the audio before the window an onset may move into."""
        floor_end = max(0, vad_onset - self._max_hops * self._hop_bytes)
        levels = hop_levels_dbfs(pcm[:floor_end], self.sample_rate)
        levels = levels[np.isfinite(levels)]
        floor = float(np.percentile(levels, self.floor_percentile)) if len(levels) else -np.inf
        return max(floor + self.margin_db, self.min_level_dbfs)

    def onset(self, pcm: bytes | bytearray, vad_onset: int, threshold_dbfs: float) -> int:
        """Where the voice that the VAD heard from `vad_onset` on got loud.

        `pcm` ends with the VAD's first speech frame. If that frame starts loud, the onset moves
        back over the hops before it that are all loud; if it starts quiet and gets loud within
        the frame, the onset is the first loud hop (the VAD scores whole frames, so a frame that
        is half silence is called speech from its start). If no hop of the frame is loud,
        loudness cannot tell (a soft voice, a loud room) and the VAD's onset stays.
        """
        if not self.enabled:
            return vad_onset
        hop = self._hop_bytes
        frame_levels = hop_levels_dbfs(pcm[vad_onset:], self.sample_rate)
        loud = np.flatnonzero(frame_levels >= threshold_dbfs)
        if len(loud) == 0:
            return vad_onset
        if loud[0] > 0:
            return vad_onset + int(loud[0]) * hop
        onset = vad_onset
        for _ in range(self._max_hops):
            start = onset - hop
            if start < 0:
                break
            level = hop_levels_dbfs(pcm[start:onset], self.sample_rate)
            if len(level) == 0 or level[0] < threshold_dbfs:
                break
            onset = start
        return onset

    def last_loud_end(self, frame_pcm: bytes, threshold_dbfs: float) -> int | None:
        """Byte offset in `frame_pcm` where its last loud hop ends; None when no hop is loud."""
        levels = hop_levels_dbfs(frame_pcm, self.sample_rate)
        loud = np.flatnonzero(levels >= threshold_dbfs)
        return None if len(loud) == 0 else int(loud[-1] + 1) * self._hop_bytes

    def end(self, pcm: bytes | bytearray, vad_end: int, threshold_dbfs: float, not_before: int = 0) -> int:
        """Where the voice stopped, for a VAD that called silence from `vad_end`: `vad_end` or earlier.

        Looks back over the hops right before `vad_end` (the frames the VAD still called speech out
        of habit) for the last loud one and ends there. If none within `max_shift_s` (and after
        `not_before`) is loud, loudness does not explain the VAD and its moment stands.
        """
        if not self.enabled:
            return vad_end
        hop = self._hop_bytes
        end = vad_end
        for _ in range(self._max_hops):
            start = end - hop
            if start < not_before:
                break
            level = hop_levels_dbfs(pcm[start:end], self.sample_rate)
            if len(level) == 0:
                break
            if level[0] >= threshold_dbfs:
                return end
            end = start
        return vad_end
