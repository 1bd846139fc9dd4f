"""Tells the client when the language model keeps it waiting, so a slow model is not a silent page.

A reply waits on the model twice: for the first token (a long prompt on a small machine can take
seconds) and between tokens (a busy or hung server). Past `after_s` without a token the client gets
a `status` event with code `llm_slow` and how long it has waited, again every `after_s` until a
token comes or the reply ends; the page shows it instead of a plain "thinking".
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from convers.contracts.events import StatusMessage

Send = Callable[[dict[str, Any]], Coroutine[Any, Any, None]]


class SlowModelWatch:
    """A timer restarted by every token; when it runs out, a `status` event goes to the client."""

    def __init__(self, send: Send, turn: int, after_s: float) -> None:
        self.send = send
        self.turn = turn
        self.after_s = after_s
        self.notices = 0
        self._loop = asyncio.get_running_loop()
        self._since = self._loop.time()
        self._timer: asyncio.TimerHandle | None = None
        self._sending: set[asyncio.Task[None]] = set()

    def restart(self) -> None:
        """A token came (or the wait for the first one begins): the wait counts from now."""
        self.stop()
        self._since = self._loop.time()
        self._timer = self._loop.call_later(self.after_s, self._notify)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _notify(self) -> None:
        waited_s = self._loop.time() - self._since
        self.notices += 1
        event = StatusMessage(
            "llm_slow", self.turn, round(waited_s * 1000), f"waiting for the language model: {waited_s:.0f} s without a word"
        )
        task = self._loop.create_task(self.send(event.to_wire()))
        self._sending.add(task)  # held until done: the loop keeps only weak references to tasks
        task.add_done_callback(self._sending.discard)
        self._timer = self._loop.call_later(self.after_s, self._notify)
