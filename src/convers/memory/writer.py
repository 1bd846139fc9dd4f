"""TurnWriter: a memory's turns stored in order on their own thread, held back (not lost) while the store fails.

A turn is committed before anything slow happens to it: its vector is attached when the embedder
delivers it, so the commit (which the client's echo waits for) never waits on a cold or busy
embedder. A full disk or a database locked by another process is usually temporary: the turns
wait in memory, in order, and go in with the next write or after `write_retry_s`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

import numpy as np

from convers.contracts.memory import MemoryStatus, MemoryStore, MemoryTurn, VectorUpkeep
from convers.memory.recent_vectors import RecentVectors

log = logging.getLogger(__name__)

# A lone UTF-16 surrogate cannot be encoded as UTF-8 (SQLite, the embedder, the LLM request all refuse it).
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
# Errors about the turn itself, not the disk or the lock: trying again can never store it.
_UNSTORABLE = (UnicodeError, ValueError, TypeError)
T = TypeVar("T")

# Told when storing turns fails and when it works again: the session's page shows it.
StatusListener = Callable[[MemoryStatus], Awaitable[None]]


@dataclass(frozen=True)
class PendingTurn:
    """A turn the conversation asked to remember, not yet committed."""

    session: str
    role: Literal["user", "assistant"]
    speaker: str
    text: str
    time: datetime
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    # True once the row is committed, False once a write of it failed: what the echo waits for.
    stored: asyncio.Future[bool] | None = field(default=None, compare=False, repr=False)


# What the write loop gets when held-back turns are due for another try and no new turn came.
_RETRY = PendingTurn("", "user", "", "", datetime.min.replace(tzinfo=UTC))


def encodable(text: str) -> str:
    """`text` with lone surrogates replaced by U+FFFD, so it can be written as UTF-8."""
    return _LONE_SURROGATE.sub("\ufffd", text)


class TurnWriter:
    """The write queue of one CompanionMemory: `put` a turn, `run` drains the queue until `None` comes.

    `user_name` names the user's turns when the session does not know the name (it is looked up
    once, on the write thread, and then kept; `name_learned` updates it). `after_write` runs for
    each committed turn (name learning, digests, backfill); its failure never un-stores the turn.
    """

    def __init__(
        self,
        store: MemoryStore,
        vectors: RecentVectors | None,
        *,
        user_name: Callable[[], str | None],
        after_write: Callable[[PendingTurn, MemoryTurn], Awaitable[None]],
        on_status: StatusListener | None,
        retry_s: float,
    ) -> None:
        self.store = store
        self.vectors = vectors
        self.user_name = user_name
        self.after_write = after_write
        self.on_status = on_status
        self.retry_s = retry_s
        # Turns stored without a vector because the embedder failed them; the backfill fills them in.
        self.unembedded = 0
        self._queue: asyncio.Queue[PendingTurn | None] = asyncio.Queue()
        # Turns whose write failed, oldest first; retried before every later write.
        self._unsaved: deque[PendingTurn] = deque()
        self._last_error = ""
        self._attaching: set[asyncio.Task[None]] = set()
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="memory-writes")
        self._name: str | None = None
        self._name_known = False

    def put(self, item: PendingTurn | None) -> None:
        """Queues a turn; `None` ends `run` after one last try for the turns held back."""
        self._queue.put_nowait(item)

    def name_learned(self, name: str) -> None:
        self._name, self._name_known = name, True

    async def settled(self) -> None:
        """Returns once every queued turn was tried and every vector on its way is attached (or failed)."""
        await self._queue.join()
        await asyncio.gather(*list(self._attaching), return_exceptions=True)

    async def in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """Runs a blocking store call on the writes' own thread. In the shared pool, a burst of turns
        queued its embeddings (one per turn's recall) ahead of every commit: 24 typed turns, 3 s, and
        not one committed."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    async def run(self) -> None:
        while (item := await self._next()) is not None:
            try:
                await self._store_in_order(item)
            finally:
                if item is not _RETRY:
                    self._queue.task_done()
        # Shutdown: one last try for turns a full disk or a locked database held back.
        await self._store_in_order(None)
        self._queue.task_done()
        if self._unsaved:
            log.error("%d turn(s) could not be stored and are lost with this process: %s",
                      len(self._unsaved), self._last_error)

    async def close(self, timeout_s: float) -> None:
        """Waits (up to `timeout_s`) for vectors still being attached, then stops the write thread."""
        try:
            await asyncio.wait_for(asyncio.gather(*self._attaching, return_exceptions=True), timeout_s)
        except TimeoutError:
            log.warning("closing memory without the vectors still being computed; the backfill fills them in")
        self._attaching.clear()
        # The callbacks are the memory's bound methods: dropped, the memory is freed by reference
        # counting, without waiting for a full garbage collection.
        self.on_status = None
        self.user_name = _no_name
        self.after_write = _nothing_more
        self._thread.shutdown(wait=False)

    async def _next(self) -> PendingTurn | None:
        """The next queued turn; while turns are held back, `_RETRY` after retry_s without one."""
        if not self._unsaved:
            return await self._queue.get()
        try:
            return await asyncio.wait_for(self._queue.get(), self.retry_s)
        except TimeoutError:
            return _RETRY

    async def _store_in_order(self, item: PendingTurn | None) -> None:
        """Stores held-back turns first, then `item`; on failure everything stays queued, in order."""
        if item is not None and item is not _RETRY:
            self._unsaved.append(item)
        held_back = bool(self._last_error)
        while self._unsaved:
            head = self._unsaved[0]
            try:
                turn = await self._write(head)
            except _UNSTORABLE as error:
                # Kept at the head, it would block every later turn of the session forever.
                log.error("a turn can never be stored and was dropped (%s): %.64r", error, head.text)
                self._unsaved.popleft()
                _resolve(head.stored, False)
                continue
            except Exception as error:  # noqa: BLE001 - memory must never take the conversation down
                if str(error) != self._last_error:
                    log.error("could not store a turn (kept, will retry with the next one): %s", error)
                    await self._tell(MemoryStatus(
                        "degraded", f"{error}; {len(self._unsaved)} turn(s) are kept and stored once it works again"))
                self._last_error = str(error)
                # Not committed now: their echoes say so at once instead of waiting for a retry.
                for waiting in self._unsaved:
                    _resolve(waiting.stored, False)
                return
            self._unsaved.popleft()
            _resolve(head.stored, True)
            try:
                await self.after_write(head, turn)
            except Exception as error:  # noqa: BLE001 - the turn is stored; extras are optional
                log.warning("stored a turn, but its follow-up work failed: %s", error)
        if held_back:
            self._last_error = ""
            log.info("memory stores turns again; the held-back turns are stored")
            await self._tell(MemoryStatus("on", "memory works again: the turns held back are stored"))

    async def _tell(self, status: MemoryStatus) -> None:
        if self.on_status is None:
            return
        try:
            await self.on_status(status)
        except Exception as error:  # noqa: BLE001 - a notice that cannot be sent is only logged
            log.warning("memory status not delivered: %s", error)

    async def _write(self, item: PendingTurn) -> MemoryTurn:
        """The durable part: the turn in the store (raises if the store cannot take it)."""
        speaker = item.speaker
        if item.role == "user" and speaker.lower() in ("", "user"):
            # The session does not know the user's name; the word index should (questions name people).
            speaker = await self._name_for_writes() or speaker
        turn = MemoryTurn(item.id, item.session, item.time, speaker, item.role, item.text)
        store = self.store
        if self.vectors is None or self.vectors.embedder is not store.embedder:
            await self.in_thread(store.add, turn)  # the store embeds (or stores NULL) itself
            return turn
        vector = self.vectors.of(item.text)
        if vector.done() and vector.exception() is None:
            await self.in_thread(functools.partial(store.add, turn, vector=vector.result()))
            return turn
        if not isinstance(store, VectorUpkeep):
            # It cannot attach a vector later: the turn waits for its vector. If the embedder fails,
            # the store gets none and embeds the turn itself (or keeps it for its backfill).
            try:
                value: np.ndarray | None = await vector
            except Exception as error:  # noqa: BLE001 - the turn is stored all the same
                log.info("turn stored without the conversation's vector (%s)", error)
                value = None
            await self.in_thread(functools.partial(store.add, turn, vector=value))
            return turn
        # Committed now, its vector attached when the embedder delivers it (see the module's docstring).
        await self.in_thread(functools.partial(store.add_many, [turn], embed=False))
        task = asyncio.create_task(self._attach_vector(store, turn.id, vector), name="memory-vector")
        self._attaching.add(task)
        task.add_done_callback(self._attaching.discard)
        return turn

    async def _attach_vector(self, store: VectorUpkeep, turn_id: str, vector: asyncio.Future[np.ndarray]) -> None:
        try:
            await self.in_thread(store.attach_vector, turn_id, await vector)
        except Exception as error:  # noqa: BLE001 - the turn is stored; the backfill embeds it later
            log.info("turn stored without a vector for now (%s); the backfill fills it in", error)
            self.unembedded += 1

    async def _name_for_writes(self) -> str | None:
        """The user's name, looked up once and then kept: the lookup reads the profile and 500 turns,
        on a busy machine slower than the commit itself."""
        if not self._name_known:
            self._name = await self.in_thread(self.user_name)
            self._name_known = True
        return self._name


def _no_name() -> str | None:
    return None


async def _nothing_more(item: PendingTurn, turn: MemoryTurn) -> None:
    return None


def _resolve(stored: asyncio.Future[bool] | None, committed: bool) -> None:
    if stored is not None and not stored.done():
        stored.set_result(committed)
