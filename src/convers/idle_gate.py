"""IdleGate: background model work (digests, observation keys) runs only while no one is talking.

On two cores the language model that writes a digest is the model that has to answer the person:
a digest generated while a reply is read and spoken takes a core from it. Sessions hold the gate
while a person speaks and while a reply is generated or played; background jobs go through `run`,
which starts a job only once nothing has held the gate for `settle_s`, and cancels a job that is
still running when a turn begins and starts it again at the next quiet moment (a model stream
stops when its consumer is cancelled, so the cancel is cheap and nothing is lost).

One gate per process and language model: a server's sessions share it, since they share the model.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")

# How long after the last hold is released the model counts as idle: the gap between one reply
# ending and the person starting to speak again, or between an utterance ending and its reply
# starting (transcription, recall), is usually shorter.
SETTLE_S = 2.0


class IdleGate:
    """Holds from the reply path (who is busy) and a wait for idle (what background model work awaits).

    Holds are named (`hold("s1/reply")`), so holding or releasing twice is harmless and a session
    can release what it held when it closes. `clock` is injectable for tests.
    """

    def __init__(self, settle_s: float = SETTLE_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.settle_s = settle_s
        self._clock = clock
        self._holders: set[str] = set()
        # Far in the past: a new gate is idle at once.
        self._released_at = -1e12
        # Set (and replaced) at every change, so waiters look again.
        self._changed = asyncio.Event()

    @property
    def busy(self) -> bool:
        """Whether anything holds the gate now."""
        return bool(self._holders)

    def hold(self, holder: str) -> None:
        """`holder` (a session's speech or reply) is busy until `release(holder)`."""
        if holder not in self._holders:
            self._holders.add(holder)
            self._notify()

    def release(self, holder: str) -> None:
        if holder in self._holders:
            self._holders.discard(holder)
            if not self._holders:
                self._released_at = self._clock()
            self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def quiet_for(self) -> float:
        """Seconds still to wait before the gate is idle (0: idle now); infinite while held."""
        if self._holders:
            return float("inf")
        return max(0.0, self._released_at + self.settle_s - self._clock())

    async def idle(self) -> None:
        """Returns once nothing has held the gate for `settle_s`."""
        while (remaining := self.quiet_for()) > 0:
            changed = self._changed
            try:
                await asyncio.wait_for(changed.wait(), None if remaining == float("inf") else remaining)
            except TimeoutError:
                pass

    async def _held(self) -> None:
        """Returns as soon as something holds the gate."""
        while not self._holders:
            await self._changed.wait()

    async def run(self, job: Callable[[], Awaitable[T]]) -> T:
        """`job()` once the gate is idle; if a hold comes while it runs, it is cancelled and run again
        at the next idle moment. Its result, or its exception."""
        while True:
            await self.idle()
            work = asyncio.ensure_future(job())
            interrupted = asyncio.ensure_future(self._held())
            try:
                await asyncio.wait({work, interrupted}, return_when=asyncio.FIRST_COMPLETED)
            except asyncio.CancelledError:
                work.cancel()
                raise
            finally:
                interrupted.cancel()
            if work.done():
                return work.result()
            work.cancel()
            await asyncio.gather(work, return_exceptions=True)
            log.debug("background model work paused for a reply; it runs again when the model is idle")
