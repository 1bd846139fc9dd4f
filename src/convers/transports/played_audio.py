"""PlayedAudio: what a remote client's speaker is playing now, rebuilt from the audio sent to it and
its `played` reports, as the reference for echo cancellation done on the server.

The playhead moves with the client's own microphone clock: each microphone frame that arrives
advances it by that frame's duration while a turn plays. A `played` report puts it back where the
client says it is when the two differ by more than `resync_ms` (the canceller tracks small drift
itself, but every jump costs it a moment of re-alignment). Pause, flush and the end of the audio
sent stop it; the next turn starts at its first report.
"""

from __future__ import annotations

from convers.audio import StreamResampler
from convers.contracts.audio import AudioFrame

# Reports come every ~100 ms from the page; network jitter moves them by tens of ms. A larger
# difference is a real jump (a stall, an underrun, a resume the page did later than we think).
RESYNC_MS = 60


class PlayedAudio:
    """The agent audio a remote client plays, sample by sample, at `rate`."""

    def __init__(self, rate: int = 16000, resync_ms: int = RESYNC_MS) -> None:
        self.rate = rate
        self.resync_samples = rate * resync_ms // 1000
        self._sent: dict[int, bytearray] = {}
        self._resamplers: dict[int, StreamResampler] = {}
        self._turn: int | None = None
        self._position = 0
        self._paused: set[int] = set()
        self._flushed_through = 0

    @property
    def playing_turn(self) -> int | None:
        return self._turn

    def sent(self, turn: int, frame: AudioFrame) -> None:
        """Audio of `turn` sent to the client."""
        if turn <= self._flushed_through:
            return
        resampler = self._resamplers.get(turn)
        if resampler is None or resampler.in_rate != frame.sample_rate:
            resampler = self._resamplers[turn] = StreamResampler(frame.sample_rate, self.rate)
        self._sent.setdefault(turn, bytearray()).extend(resampler.push(frame).pcm)

    def report(self, turn: int, ms: int) -> None:
        """The client has played `ms` of `turn`."""
        if turn <= self._flushed_through or turn not in self._sent:
            return
        if self._turn is not None and turn < self._turn:
            return  # a late report of a turn the client has finished
        position = ms * self.rate // 1000
        if turn != self._turn:
            self._turn = turn
            self._position = position
            # Older turns are over on the client: their audio is no longer needed.
            for old in [t for t in self._sent if t < turn]:
                self._forget(old)
        elif abs(position - self._position) > self.resync_samples:
            self._position = position

    def paused(self, turn: int) -> None:
        self._paused.add(turn)

    def resumed(self, turn: int) -> None:
        self._paused.discard(turn)

    def flushed(self, turn: int) -> None:
        """Every turn up to `turn` stopped on the client."""
        self._flushed_through = max(self._flushed_through, turn)
        for old in [t for t in self._sent if t <= turn]:
            self._forget(old)
        if self._turn is not None and self._turn <= turn:
            self._turn = None

    def next(self, samples: int) -> AudioFrame:
        """The next `samples` the client's speaker plays (silence where it plays nothing)."""
        out = bytearray(samples * 2)
        turn = self._turn
        if turn is not None and turn not in self._paused:
            audio = self._sent.get(turn, bytearray())
            piece = audio[self._position * 2 : (self._position + samples) * 2]
            out[: len(piece)] = piece
            self._position += len(piece) // 2  # at the end of what was sent, the client waits too
        return AudioFrame(bytes(out), self.rate)

    def _forget(self, turn: int) -> None:
        self._sent.pop(turn, None)
        self._resamplers.pop(turn, None)
        self._paused.discard(turn)
