"""CompanionMemory: the ConversationMemory a Session uses, built on the profile, the store and the embedder.

Nothing here may slow a reply down. Recall embeds the query in a worker thread with a deadline and
searches by words alone if the embedder is late; writes go on a queue that a background task drains
after the turn; digests, name learning, embedding backfill and reflection all happen off that path.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Literal

import numpy as np

from convers.config import MemorySettings
from convers.contracts.embedder import Embedder
from convers.contracts.llm import LanguageModel
from convers.contracts.memory import MemoryHit, MemoryStatus, MemoryStore, MemoryStoreError, MemoryTurn
from convers.memory import greeting as greetings
from convers.memory.digest import make_digest, needs_digest
from convers.memory.names import find_name
from convers.memory.profile import ProfileError, ProfileFile
from convers.memory.reflection import Reflection
from convers.memory.vectors import embed_blocking

if TYPE_CHECKING:
    from convers.config import Settings

log = logging.getLogger(__name__)

# A lone UTF-16 surrogate cannot be encoded as UTF-8 (SQLite, the embedder, the LLM request all refuse it).
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
# Errors about the turn itself, not the disk or the lock: trying again can never store it.
_UNSTORABLE = (UnicodeError, ValueError, TypeError)


_SETTINGS_DEFAULTS = MemorySettings()


@dataclass(frozen=True)
class MemoryOptions:
    """Knobs for CompanionMemory; every time is in seconds."""

    # Defaults are the settings' own (documented and measured in config.MemorySettings).
    recall_k: int = _SETTINGS_DEFAULTS.recall_k
    recall_floor: float = _SETTINGS_DEFAULTS.recall_floor
    digest_min_words: int = _SETTINGS_DEFAULTS.digest_min_words
    # Characters of this session already in the rolling buffer: recall skips those turns.
    rolling_chars: int = _SETTINGS_DEFAULTS.rolling_chars
    # Longest wait for the query's vector; after it recall uses words only. MiniLM needs ~10 ms
    # for a sentence once loaded, so this only bites when the embedder is cold, busy or remote.
    embed_deadline_s: float = 0.15
    # How long after a failed embedding to try the backfill again.
    backfill_retry_s: float = 30.0
    # How long turns a failing store held back wait for the next try when no new turn comes first.
    write_retry_s: float = 30.0
    backfill_batch: int = 32
    greeting_llm_timeout_s: float = 4.0
    # aclose waits this long for queued digests and reflection before giving up on them.
    close_timeout_s: float = 60.0
    reflection: bool = _SETTINGS_DEFAULTS.reflection


@dataclass(frozen=True)
class _Write:
    session: str
    role: Literal["user", "assistant"]
    speaker: str
    text: str
    time: datetime
    id: str = field(default_factory=lambda: uuid.uuid4().hex)


# What the write loop gets when held-back turns are due for another try and no new turn came.
_RETRY = _Write("", "user", "", "", datetime.min.replace(tzinfo=timezone.utc))


# Told when storing turns fails and when it works again: the session's page shows it.
StatusListener = Callable[[MemoryStatus], Awaitable[None]]


class CompanionMemory:
    """Profile + recall + background writes, behind the ConversationMemory protocol.

    One per session; the store and the embedder are given (a server shares one of each among all
    its sessions), so this class never opens or builds them. `close_store=False` leaves the store
    open at `aclose` for the other sessions; its opener closes it.
    """

    def __init__(
        self,
        store: MemoryStore,
        profile: ProfileFile,
        *,
        embedder: Embedder | None = None,
        llm: LanguageModel | None = None,
        options: MemoryOptions | None = None,
        reflection: Reflection | None = None,
        close_store: bool = True,
        on_status: StatusListener | None = None,
    ) -> None:
        self.store = store
        self.close_store = close_store
        self.on_status = on_status
        self.profile = profile
        self.embedder = embedder if embedder is not None else store.embedder
        self.llm = llm
        self.options = options or MemoryOptions()
        self.reflection = reflection
        self._queue: asyncio.Queue[_Write | None] = asyncio.Queue()
        self._digests: asyncio.Queue[tuple[_Write, str] | None] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._recent_ids: deque[tuple[str, int]] = deque()
        self._recent_chars = 0
        self._sessions: set[str] = set()
        self._asked_for_name = False
        self._last_backfill_try = -1e9
        # Whether the store may hold turns without a vector (from an earlier run, or a failed embedding).
        self._may_lack_vectors = True
        self._last_vector_ok = False
        self._profile_cache: tuple[float, str] | None = None
        self._closed = False
        # Turns whose write failed, oldest first; retried before every later write.
        self._unsaved: deque[_Write] = deque()
        self._last_write_error = ""
        # Embeddings of the latest texts, shared by recall and the write of the same user turn:
        # both want the vector of what the user just said, and computing it twice at once doubled
        # recall's time on 2 cores (`convers bench latency`).
        self._vectors: OrderedDict[str, asyncio.Future[np.ndarray]] = OrderedDict()

    # ----------------------------------------------------------------- background tasks

    def _start(self) -> None:
        if self._tasks or self._closed:
            return
        self._tasks = [
            asyncio.create_task(self._write_loop(), name="memory-writes"),
            asyncio.create_task(self._digest_loop(), name="memory-digests"),
        ]
        if self.embedder is not None:
            # Loads the model now, while the greeting plays, rather than during the first recall.
            self._tasks.append(asyncio.create_task(self._warm_up(), name="memory-warm-up"))

    async def _warm_up(self) -> None:
        assert self.embedder is not None
        try:
            await asyncio.to_thread(embed_blocking, self.embedder, ["hello"])
        except Exception as error:  # noqa: BLE001 - recall degrades to words
            log.warning("embedder warm-up failed: %s", error)

    async def _write_loop(self) -> None:
        while (item := await self._next_write()) is not None:
            try:
                await self._store_in_order(item)
            finally:
                if item is not _RETRY:
                    self._queue.task_done()
        # Shutdown: one last try for turns a full disk or a locked database held back.
        await self._store_in_order(None)
        self._queue.task_done()
        if self._unsaved:
            log.error(
                "%d turn(s) could not be stored and are lost with this process: %s",
                len(self._unsaved), self._last_write_error,
            )

    async def _next_write(self) -> _Write | None:
        """The next queued turn; while turns are held back, `_RETRY` after write_retry_s without one."""
        if not self._unsaved:
            return await self._queue.get()
        try:
            return await asyncio.wait_for(self._queue.get(), self.options.write_retry_s)
        except (TimeoutError, asyncio.TimeoutError):
            return _RETRY

    async def _store_in_order(self, item: _Write | None) -> None:
        """Stores held-back turns first, then `item`; on failure everything stays queued, in order.

        A full disk or a database locked by another process is usually temporary: the turns wait
        in memory and go in with the next write, instead of being dropped.
        """
        if item is not None and item is not _RETRY:
            self._unsaved.append(item)
        held_back = bool(self._last_write_error)
        while self._unsaved:
            head = self._unsaved[0]
            try:
                turn = await self._write(head)
            except _UNSTORABLE as error:
                # Kept at the head, it would block every later turn of the session forever.
                log.error("a turn can never be stored and was dropped (%s): %.64r", error, head.text)
                self._unsaved.popleft()
                continue
            except Exception as error:  # noqa: BLE001 - memory must never take the conversation down
                if str(error) != self._last_write_error:
                    log.error("could not store a turn (kept, will retry with the next one): %s", error)
                    await self._tell(MemoryStatus(
                        "degraded",
                        f"{error}; {len(self._unsaved)} turn(s) are kept and stored once it works again",
                    ))
                self._last_write_error = str(error)
                return
            self._unsaved.popleft()
            try:
                await self._after_write(head, turn)
            except Exception as error:  # noqa: BLE001 - the turn is stored; extras are optional
                log.warning("stored a turn, but its follow-up work failed: %s", error)
        if held_back:
            self._last_write_error = ""
            log.info("memory stores turns again; the held-back turns are stored")
            await self._tell(MemoryStatus("on", "memory works again: the turns held back are stored"))

    async def _tell(self, status: MemoryStatus) -> None:
        if self.on_status is None:
            return
        try:
            await self.on_status(status)
        except Exception as error:  # noqa: BLE001 - a notice that cannot be sent is only logged
            log.warning("memory status not delivered: %s", error)

    async def _write(self, item: _Write) -> MemoryTurn:
        """The durable part: the turn in the store (raises if the store cannot take it)."""
        speaker = item.speaker
        if item.role == "user" and speaker.lower() in ("", "user"):
            # The session does not know the user's name; the word index should (questions name people).
            speaker = await self.user_name() or speaker
        turn = MemoryTurn(item.id, item.session, item.time, speaker, item.role, item.text)
        vector = None
        if self.embedder is not None and self.embedder is self.store.embedder:
            try:
                vector = await self._vector_of(item.text)
            except Exception:  # noqa: BLE001 - the store embeds (or stores NULL) itself
                vector = None
        self._last_vector_ok = vector is not None
        if vector is None:
            self._may_lack_vectors = True
        await asyncio.to_thread(self.store.add, turn, None, vector)
        return turn

    def _vector_of(self, text: str) -> asyncio.Future[np.ndarray]:
        """The unit vector of `text`, computed once in a worker thread for whoever asks first."""
        assert self.embedder is not None
        future = self._vectors.get(text)
        if future is None or (future.done() and future.exception() is not None):
            future = asyncio.ensure_future(self._embed_one(text))
            self._vectors[text] = future
            while len(self._vectors) > 16:
                self._vectors.popitem(last=False)
        return future

    async def _embed_one(self, text: str) -> np.ndarray:
        assert self.embedder is not None
        vectors = await asyncio.to_thread(embed_blocking, self.embedder, [text])
        return vectors[0]

    async def _after_write(self, item: _Write, turn: MemoryTurn) -> None:
        """What follows a stored turn: name learning, digests, backfill."""
        if item.role == "user":
            await self._learn_name(item.text)
            if self.llm is not None and needs_digest(item.text, self.options.digest_min_words):
                self._digests.put_nowait((item, turn.id))
        else:
            # If the agent asked for their name, the next user turn may answer with just the name.
            self._asked_for_name = "name" in item.text.lower() and "?" in item.text
        if self._may_lack_vectors and self.embedder is not None:
            await self._maybe_backfill()

    async def _maybe_backfill(self) -> None:
        now = time.monotonic()
        if now - self._last_backfill_try < self.options.backfill_retry_s:
            return
        self._last_backfill_try = now
        filled = await asyncio.to_thread(self.store.backfill, self.options.backfill_batch)
        if filled:
            log.info("embedded %d turn(s) stored earlier without a vector", filled)
        if filled == self.options.backfill_batch:
            # More may be waiting: allow the next write to continue at once.
            self._last_backfill_try = -1e9
        elif self._last_vector_ok:
            # Less than a batch while the embedder works: none are left (until a vector fails again).
            self._may_lack_vectors = False

    async def backfill_all(self) -> int:
        """Embeds every stored turn that lacks a vector (for `convers memory` and tests)."""
        total = 0
        while filled := await asyncio.to_thread(self.store.backfill, self.options.backfill_batch):
            total += filled
        return total

    async def _digest_loop(self) -> None:
        while (job := await self._digests.get()) is not None:
            item, source_id = job
            try:
                assert self.llm is not None
                summary = await make_digest(self.llm, item.speaker, item.text)
                if summary:
                    digest = MemoryTurn(uuid.uuid4().hex, item.session, item.time, item.speaker, "user", summary,
                                        kind="digest")
                    await asyncio.to_thread(self.store.add, digest, source_id)
            except Exception as error:  # noqa: BLE001 - the raw turn is already stored
                log.warning("digest not stored: %s", error)
            finally:
                self._digests.task_done()
        self._digests.task_done()

    def _note_recent(self, turn_id: str, chars: int) -> None:
        self._recent_ids.append((turn_id, chars))
        self._recent_chars += chars
        while len(self._recent_ids) > 1 and self._recent_chars > self.options.rolling_chars:
            self._recent_chars -= self._recent_ids.popleft()[1]

    async def _learn_name(self, text: str) -> None:
        mention = find_name(text, asked_for_name=self._asked_for_name)
        self._asked_for_name = False
        if mention is None:
            return
        try:
            current = await asyncio.to_thread(self.profile.load)
            # A guess ("I'm Sam") only fills an empty name; "my name is" / "call me" may correct it.
            if current.name == mention.name or (current.name and not mention.certain):
                return
            await asyncio.to_thread(self.profile.update, "name", mention.name)
            self._profile_cache = None
            log.info("learned the user's name: %s", mention.name)
        except ProfileError as error:
            log.warning("name %s not saved: %s", mention.name, error)

    # ----------------------------------------------------------------- ConversationMemory

    def profile_text(self) -> str:
        try:
            mtime = self.profile.path.stat().st_mtime if self.profile.path.exists() else 0.0
            if self._profile_cache is None or self._profile_cache[0] != mtime:
                self._profile_cache = (mtime, self.profile.load().render())
            text = self._profile_cache[1]
        except (ProfileError, OSError) as error:
            log.warning("profile left out of the prompt: %s", error)
            text = ""
        if self.reflection is not None:
            memo = self.reflection.memo()
            if memo:
                text = f"{text}\n\nYour own notes on this relationship:\n{memo}".strip()
        return text

    async def recall(self, query: str) -> list[MemoryHit]:
        self._start()
        if not query.strip() or self.options.recall_k == 0:
            return []
        vector = None
        if self.embedder is not None:
            try:
                # Shielded: past the deadline recall goes on by words, and the write still gets the vector.
                vector = await asyncio.wait_for(asyncio.shield(self._vector_of(query)), self.options.embed_deadline_s)
            except (TimeoutError, asyncio.TimeoutError):
                log.info("embedder slower than %.0f ms: recall by words only", self.options.embed_deadline_s * 1000)
            except Exception as error:  # noqa: BLE001 - words only
                log.warning("recall by words only: %s", error)
        exclude = [turn_id for turn_id, _ in self._recent_ids]
        try:
            return await asyncio.to_thread(
                self.store.search,
                query,
                self.options.recall_k,
                vector=vector,
                mode="fused" if vector is not None else "lexical",
                floor=self.options.recall_floor,
                exclude=exclude,
            )
        except MemoryStoreError as error:
            log.warning("recall skipped: %s", error)
            return []

    def remember(self, session: str, role: Literal["user", "assistant"], speaker: str, text: str) -> None:
        if self._closed or not text.strip():
            return
        self._start()
        self._sessions.add(session)
        item = _Write(session, role, _encodable(speaker), _encodable(text.strip()), datetime.now(timezone.utc))
        # In the rolling buffer from now on, so the recall that follows never returns this very turn,
        # however the write and the recall interleave.
        self._note_recent(item.id, len(item.text))
        self._queue.put_nowait(item)

    async def greeting(self, agent_name: str) -> str:
        self._start()
        name = await self.user_name()
        previous = await asyncio.to_thread(self.store.list, 1, 0, kind="turn")
        if name is None:
            self._asked_for_name = True
            return greetings.returning_without_name(agent_name) if previous else greetings.first_visit(agent_name)
        last_time = await asyncio.to_thread(self._last_session_user_turns)
        return await greetings.compose_welcome(
            agent_name, name, last_time, self.llm, timeout_s=self.options.greeting_llm_timeout_s
        )

    async def user_name(self) -> str | None:
        """From the profile, else from something they said in an earlier conversation."""
        try:
            profile = await asyncio.to_thread(self.profile.load)
            if profile.name:
                return profile.name
        except ProfileError as error:
            log.warning("profile unreadable: %s", error)
        recent_user_turns = await asyncio.to_thread(self.store.list, 500, 0, kind="turn", role="user")
        return greetings.name_from_turns(recent_user_turns)

    def _last_session_user_turns(self) -> list[MemoryTurn]:
        latest = self.store.list(1, 0, kind="turn")
        if not latest:
            return []
        session = latest[0].session
        return list(reversed(self.store.list(20, 0, session=session, role="user", kind="turn")))

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._tasks:
            self._queue.put_nowait(None)
            writer, digester, *others = self._tasks
            await writer  # stored turns are the one thing that must not be lost
            # Only now: the writer may have queued digests up to its last item.
            self._digests.put_nowait(None)
            try:
                await asyncio.wait_for(asyncio.gather(digester, *others), self.options.close_timeout_s)
            except (TimeoutError, asyncio.TimeoutError):
                log.warning("gave up on unfinished digests at shutdown; the raw turns are stored")
            await self._reflect()
        # Done tasks and cached futures refer back to this object: dropped, the session's memory is
        # freed by reference counting, without waiting for a full garbage collection.
        self._tasks = []
        self._vectors.clear()
        self.on_status = None
        if self.close_store:
            await asyncio.to_thread(self.store.close)

    async def _reflect(self) -> None:
        if self.reflection is None:
            return
        for session in sorted(self._sessions):
            try:
                turns = await asyncio.to_thread(self.store.list, 400, 0, session=session, newest_first=False)
                name = await self.user_name()
                await asyncio.wait_for(
                    self.reflection.after_session(session, turns, name), self.options.close_timeout_s
                )
            except Exception as error:  # noqa: BLE001 - reflection is optional
                log.warning("session reflection skipped: %r", error)


def _encodable(text: str) -> str:
    """`text` with lone surrogates replaced by U+FFFD, so it can be written as UTF-8."""
    return _LONE_SURROGATE.sub("\ufffd", text)


def memory_options(settings: MemorySettings) -> MemoryOptions:
    """The knobs of CompanionMemory that settings hold."""
    return MemoryOptions(
        recall_k=settings.recall_k,
        recall_floor=settings.recall_floor,
        digest_min_words=settings.digest_min_words,
        rolling_chars=settings.rolling_chars,
        reflection=settings.reflection,
    )


def companion_memory(
    settings: Settings,
    store: MemoryStore,
    embedder: Embedder | None,
    llm: LanguageModel | None = None,
    *,
    close_store: bool = False,
    on_status: StatusListener | None = None,
) -> CompanionMemory:
    """A session's memory on an open `store` (and its `embedder`), with the profile and knobs of `settings`.

    The caller built the store and the embedder (cli/wiring.py, through the registry) and closes
    the store unless `close_store`.
    """
    reflection = None
    if settings.memory.reflection and llm is not None:
        reflection = Reflection(llm, settings.data_path, settings.agent.name)
    return CompanionMemory(
        store,
        ProfileFile.in_data_dir(settings.data_path),
        embedder=embedder,
        llm=llm,
        options=memory_options(settings.memory),
        reflection=reflection,
        close_store=close_store,
        on_status=on_status,
    )
