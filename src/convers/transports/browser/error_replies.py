"""How many protocol errors one connection is answered with: a flood of bad messages gets a count.

Every bad message used to be answered with its own `error`. A client that sent 10,000 of them in a
quarter of a second filled the send queue with 10,000 answers and was closed 4408 "client stopped
reading" though it read all along. Now the first few are answered one by one (a client's bug is
easiest to find from its first messages), then at a steady rate, and what is held back in between is
reported as one `too_many_errors` with the count.
"""

from __future__ import annotations

from typing import Any

from convers.transports.browser.protocol import ProtocolError

# Answered one by one before the rate below applies.
ERROR_BURST = 20
# Error replies a second after the burst; the rest are counted into a `too_many_errors`.
ERRORS_PER_S = 5.0


class ErrorReplies:
    """A token bucket over one connection's error replies. Pure: the caller passes the time."""

    def __init__(self, burst: int = ERROR_BURST, per_s: float = ERRORS_PER_S) -> None:
        self.burst = burst
        self.per_s = per_s
        self._tokens = float(burst)
        self._at: float | None = None
        self.held_back = 0
        self._last_code = ""

    def offer(self, error: ProtocolError, now: float) -> list[dict[str, Any]]:
        """The events to send now for `error`: the error itself, a count of what was held back
        (which this one joins), or nothing (held back: `held_back` grows, `summary` reports it)."""
        self._refill(now)
        if self._tokens < 1:
            self.held_back += 1
            self._last_code = error.code
            return []
        self._tokens -= 1
        if self.held_back:
            self.held_back += 1
            self._last_code = error.code
            return [self._count_event()]
        return [error.event()]

    def summary(self, now: float) -> dict[str, Any] | None:
        """The `too_many_errors` for what is held back, once the rate allows it (else None)."""
        self._refill(now)
        if not self.held_back or self._tokens < 1:
            return None
        self._tokens -= 1
        return self._count_event()

    def wait_s(self) -> float:
        """Seconds until the next reply is allowed (0 when one is allowed now)."""
        return max(0.0, (1 - self._tokens) / self.per_s)

    def _refill(self, now: float) -> None:
        if self._at is not None:
            self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.per_s)
        self._at = now

    def _count_event(self) -> dict[str, Any]:
        count, self.held_back = self.held_back, 0
        return {
            "type": "error",
            "code": "too_many_errors",
            "count": count,
            "message": f"{count} more bad messages were dropped without an answer each (the last: "
            f"{self._last_code}); see docs/protocol.md for the message format",
        }
