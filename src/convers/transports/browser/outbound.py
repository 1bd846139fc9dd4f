"""The per-connection send queue: the engine never waits on a slow client.

Audio is bounded by bytes and dropped (and counted) past the bound; control events are bounded by
count and by bytes (events echo client input, so a count alone let 2048 large ones pile up). A flush also removes the flushed turn's frames still waiting here, since the
client would only drop them on arrival.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass

# ~87 s of 24 kHz PCM16: a whole long reply fits on a slow link; beyond that the client is stuck.
MAX_QUEUED_AUDIO_BYTES = 4 * 1024 * 1024
# Control events are tiny; thousands unsent means the client stopped reading.
MAX_QUEUED_EVENTS = 2048
# Thousands of ordinary events are a few hundred KiB; a MiB unsent means the client stopped reading.
MAX_QUEUED_EVENT_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Outgoing:
    """One WebSocket message waiting to be sent; `turn` is set for audio."""

    data: bytes | str
    turn: int | None = None


class SendQueue:
    """Bounded FIFO of outgoing messages; `put_*` never block, `get` waits for the next one."""

    def __init__(
        self,
        max_audio_bytes: int = MAX_QUEUED_AUDIO_BYTES,
        max_events: int = MAX_QUEUED_EVENTS,
        max_event_bytes: int = MAX_QUEUED_EVENT_BYTES,
    ) -> None:
        self.max_audio_bytes = max_audio_bytes
        self.max_events = max_events
        self.max_event_bytes = max_event_bytes
        self._event_bytes = 0
        self._items: deque[Outgoing] = deque()
        self._audio_bytes = 0
        self._events = 0
        self._ready = asyncio.Event()
        self.dropped_audio_frames = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def audio_bytes(self) -> int:
        return self._audio_bytes

    @property
    def event_bytes(self) -> int:
        """Characters of queued control events (JSON text, mostly ASCII: about bytes)."""
        return self._event_bytes

    def put_audio(self, turn: int, data: bytes) -> bool:
        """Queues an audio frame; False (frame dropped) when the audio bound is reached."""
        if self._audio_bytes + len(data) > self.max_audio_bytes:
            self.dropped_audio_frames += 1
            return False
        self._items.append(Outgoing(data, turn))
        self._audio_bytes += len(data)
        self._ready.set()
        return True

    def put_event(self, text: str) -> bool:
        """Queues a control event; False when the client has stopped reading altogether."""
        if self._events >= self.max_events or self._event_bytes + len(text) > self.max_event_bytes:
            return False
        self._items.append(Outgoing(text))
        self._events += 1
        self._event_bytes += len(text)
        self._ready.set()
        return True

    def drop_turns_up_to(self, turn: int) -> int:
        """Removes queued audio of `turn` and older turns; returns how many frames went."""
        kept: deque[Outgoing] = deque()
        removed = 0
        for item in self._items:
            if item.turn is not None and item.turn <= turn:
                self._audio_bytes -= len(item.data)
                removed += 1
            else:
                kept.append(item)
        self._items = kept
        return removed

    async def get(self) -> Outgoing:
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        item = self._items.popleft()
        if item.turn is None:
            self._events -= 1
            self._event_bytes -= len(item.data)
        else:
            self._audio_bytes -= len(item.data)
        return item
