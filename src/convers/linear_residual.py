"""LinearResidual: the recent microphone three times over: as the echo canceller cleaned it, as a linear filter alone left it, and as heard.

While WebRTC AEC3 is still learning a room (a session's first seconds of agent speech), its
suppressor cannot tell the person from the echo it has not yet modelled, and it mutes both: a person
answering over the greeting comes out of it so thinned that Whisper writes a phrase of its own
("Thank you.") or nothing. Speex's linear filter (`convers.linear_echo`, the double-talk witness)
only subtracts its estimate of the echo, so the person's voice passes whole, with some echo left.
On simulated rooms (a person over a session's first reply, 25 rooms at each of -10, -5 and 0 dB
echo; not the rooms `convers bench echo` reports on) Whisper's word error rate on the person was
0.48 / 0.63 / 1.75 in AEC3's output, 0.19 / 0.26 / 0.36 in the linear filter's residual and
0.33 / 0.45 / 0.72 in the raw microphone.

So the VAD and the turn-taking keep listening to AEC3's output (its silences are silences), and an
utterance that began over the agent while the canceller learnt is transcribed from the residual
of the same stretch; if that reads as a person, the microphone's own audio of the stretch (the
agent's echo whole, where the residual holds it garbled) is read as well
(`engine/barge_in/arbiter.py`). The stretch is found by its bytes: the utterance's audio is a contiguous run of
the cleaned stream, whatever frames were dropped or resampled before the canceller.
"""

from __future__ import annotations

# Kept: the longest utterance (`turns.max_utterance_s`, 30 s) with its pre-roll, and a margin.
KEEP_S = 35.0


class LinearResidual:
    """The last `KEEP_S` of cleaned audio, of the linear residual and of the microphone, block for block (PCM16, one rate)."""

    def __init__(self, sample_rate: int, keep_s: float = KEEP_S) -> None:
        self._limit = round(keep_s * sample_rate) * 2
        self._cleaned = bytearray()
        self._residual = bytearray()
        self._microphone = bytearray()

    def add(self, cleaned: bytes, residual: bytes, microphone: bytes) -> None:
        """One block of the canceller's output, the linear filter's residual of the same microphone block, and that block."""
        if not len(cleaned) == len(residual) == len(microphone):
            raise ValueError(f"a cleaned block of {len(cleaned)} bytes against a residual of {len(residual)}"
                             f" and a microphone block of {len(microphone)}")
        self._cleaned += cleaned
        self._residual += residual
        self._microphone += microphone
        # Trimmed in large steps: a deletion moves the whole buffer.
        if len(self._cleaned) > 2 * self._limit:
            for kept in (self._cleaned, self._residual, self._microphone):
                del kept[: -self._limit]

    def clear(self) -> None:
        """Forgets the stream kept so far (a new connection: its audio is not this one's)."""
        self._cleaned.clear()
        self._residual.clear()
        self._microphone.clear()

    def of(self, cleaned: bytes, since: bytes | None = None) -> bytes | None:
        """The residual of the latest stretch whose cleaned audio is `cleaned`, from the start of the
        earlier stretch `since` when given; None when a stretch is not kept (too old, or not from this
        stream) or is digital silence (which would match any silent stretch)."""
        span = self._span(cleaned, since)
        return bytes(self._residual[span[0] : span[1]]) if span is not None else None

    def microphone_of(self, cleaned: bytes, since: bytes | None = None) -> bytes | None:
        """The microphone's own audio of the same stretch as `of` finds (None where it finds none)."""
        span = self._span(cleaned, since)
        return bytes(self._microphone[span[0] : span[1]]) if span is not None else None

    def _span(self, cleaned: bytes, since: bytes | None) -> tuple[int, int] | None:
        found = self._find(cleaned, len(self._cleaned))
        if found is None:
            return None
        start, end = found, found + len(cleaned)
        if since is not None:
            earlier = self._find(since, end)
            if earlier is None:
                return None
            start = min(start, earlier)
        return start, end

    def _find(self, cleaned: bytes, end: int) -> int | None:
        """Where the latest copy of `cleaned` ending by `end` starts, on a sample boundary."""
        if not cleaned or len(cleaned) % 2 or not cleaned.strip(b"\0"):
            return None
        while True:
            at = self._cleaned.rfind(cleaned, 0, end)
            if at < 0:
                return None
            if at % 2 == 0:
                return at
            end = at + len(cleaned) - 1
