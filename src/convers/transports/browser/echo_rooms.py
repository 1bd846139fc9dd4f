"""EchoRooms: the learned echo cancellers of pages that went away, kept a while for their return.

A page whose echo the server cancels (hello `"aec": false`) names its tab with an opaque
`echo_room` id. When its connection ends, its canceller waits here under that id; a later hello
with the same id takes it out again, so a phone whose Wi-Fi blipped does not spend the first
seconds of agent speech after every reconnection learning the room anew (while it learns, speech
over the agent cuts the reply only after 2.5 s). Taking removes: two live connections never feed
one canceller.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from convers.echo_cancelling import EchoCancelling

# How long a canceller waits for its page: a reconnection within minutes is most likely the same
# phone in the same room and position, whose echo path the canceller still models; much later the
# person may have moved, and learning again costs only one reply's first seconds.
KEEP_S = 600.0
# At most this many wait at once (the oldest goes first): each holds a native canceller of a few
# megabytes, and a server has a handful of pages, so a client cycling ids cannot grow memory.
MAX_ROOMS = 8


@dataclass
class _Kept:
    echo: EchoCancelling
    until: float


class EchoRooms:
    """Learned `EchoCancelling`s of ended connections by their page's `echo_room` id, for `keep_s`, at most `max_rooms`.

    Used from the event loop only (the browser transport's hello and end), so it takes no lock.
    """

    def __init__(
        self, keep_s: float = KEEP_S, max_rooms: int = MAX_ROOMS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.keep_s = keep_s
        self.max_rooms = max_rooms
        self._clock = clock
        self._kept: OrderedDict[str, _Kept] = OrderedDict()

    def __len__(self) -> int:
        self._expire()
        return len(self._kept)

    def take(self, room: str) -> EchoCancelling | None:
        """The canceller kept for `room`, removed from here; None when there is none or it expired."""
        self._expire()
        kept = self._kept.pop(room, None)
        return kept.echo if kept is not None else None

    def keep(self, room: str, echo: EchoCancelling) -> None:
        """Keeps `echo`, whose connection ended, for `room`'s next hello: without the old stream's
        audio (`resume_stream`); a failed canceller is not kept. Replaces what `room` had."""
        if echo.failed:
            return
        echo.resume_stream()
        self._kept.pop(room, None)
        self._kept[room] = _Kept(echo, self._clock() + self.keep_s)
        while len(self._kept) > self.max_rooms:
            self._kept.popitem(last=False)
        self._expire()

    def _expire(self) -> None:
        now = self._clock()
        # Kept in the order they were kept, each for the same time: the expired ones come first.
        while self._kept and next(iter(self._kept.values())).until <= now:
            self._kept.popitem(last=False)
