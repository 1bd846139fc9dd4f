"""CompanionMemory: the ConversationMemory a Session uses, built on the profile, the store and the embedder.

Nothing here may slow a reply down. Recall embeds the query in a worker thread with a deadline and
searches by words alone if the embedder is late; writes go on a queue that a background task drains
after the turn; digests, name learning, embedding backfill and reflection all happen off that path.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, TypeVar

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
_UNKNOWN = object()
T = TypeVar("T")


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
    # Re-embedding stored turns after an upgrade (or an embedder change): this many per batch, then a
    # pause at least as long as the batch took, so it never takes more than half a core from a reply.
    upgrade_batch: int = 32
    upgrade_pause_min_s: float = 0.05
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
    # True once the row is committed, False once a write of it failed: what the echo waits for.
    stored: asyncio.Future[bool] | None = field(default=None, compare=False, repr=False)


# What the write loop gets when held-back turns are due for another try and no new turn came.
_RETRY = _Write("", "user", "", "", datetime.min.replace(tzinfo=UTC))


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
        # Turns stored without a vector because the embedder failed them; the backfill fills them in.
        self._unembedded = 0
        self._backfill: asyncio.Task[None] | None = None
        self._attaching: set[asyncio.Task[None]] = set()
        self._write_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="memory-writes")
        self._writer_name: str | None | object = _UNKNOWN
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
            # Loads the model now, while the greeting plays, rather than during the first recall;
            # then re-embeds what an older version stored, in the background.
            self._tasks.append(asyncio.create_task(self._warm_up_then_upgrade(), name="memory-warm-up"))

    async def _warm_up_then_upgrade(self) -> None:
        await self._warm_up()
        await self._upgrade()

    async def _warm_up(self) -> None:
        assert self.embedder is not None
        try:
            await asyncio.to_thread(embed_blocking, self.embedder, ["hello"])
            # The vector index, the speakers' vectors and one search: the first question is as fast as the tenth.
            await asyncio.to_thread(self.store.warm_up)
        except Exception as error:  # noqa: BLE001 - recall degrades to words
            log.warning("memory warm-up failed: %s", error)

    async def _upgrade(self) -> None:
        """Re-embeds stored turns whose vectors are of an older format or another embedder, paced."""
        # This memory's own new turns are committed first and get their vector a moment later
        # (`_attach_vector`): let those settle, or they are counted (and embedded twice) as old ones.
        try:
            await asyncio.wait_for(self._own_writes_settled(), self.options.close_timeout_s)
        except (TimeoutError, asyncio.TimeoutError):
            pass
        try:
            pending = await asyncio.to_thread(self.store.pending_vectors)
        except MemoryStoreError as error:
            log.warning("memory upgrade skipped: %s", error)
            return
        if not pending:
            return
        log.info("memory: re-embedding %d stored turns in the background (`convers memory status` shows progress)",
                 pending)
        done, reported = 0, 0
        while not self._closed:
            started = time.monotonic()
            try:
                filled = await asyncio.to_thread(self.store.backfill, self.options.upgrade_batch)
            except MemoryStoreError as error:
                log.warning("memory upgrade paused: %s", error)
                return
            if not filled:
                break
            done += filled
            if done - reported >= max(pending // 10, self.options.upgrade_batch):
                log.info("memory: re-embedded %d of %d turns", done, pending)
                reported = done
            await asyncio.sleep(max(self.options.upgrade_pause_min_s, time.monotonic() - started))
        log.info("memory: re-embedded %d of %d turns%s", done, pending, "" if done >= pending else " (stopped)")

    async def _own_writes_settled(self) -> None:
        await self._queue.join()
        await asyncio.gather(*list(self._attaching), return_exceptions=True)

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
                _resolve(head.stored, False)
                continue
            except Exception as error:  # noqa: BLE001 - memory must never take the conversation down
                if str(error) != self._last_write_error:
                    log.error("could not store a turn (kept, will retry with the next one): %s", error)
                    await self._tell(MemoryStatus(
                        "degraded",
                        f"{error}; {len(self._unsaved)} turn(s) are kept and stored once it works again",
                    ))
                self._last_write_error = str(error)
                # Not committed now: their echoes say so at once instead of waiting for a retry.
                for waiting in self._unsaved:
                    _resolve(waiting.stored, False)
                return
            self._unsaved.popleft()
            _resolve(head.stored, True)
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
            speaker = await self._name_for_writes() or speaker
        turn = MemoryTurn(item.id, item.session, item.time, speaker, item.role, item.text)
        if self.embedder is None or self.embedder is not self.store.embedder:
            await self._in_write_thread(self.store.add, turn)  # the store embeds (or stores NULL) itself
            return turn
        vector = self._vector_of(item.text)
        if vector.done() and vector.exception() is None:
            await self._in_write_thread(functools.partial(self.store.add, turn, vector=vector.result()))
            self._last_vector_ok = True
            return turn
        # Committed now, its vector attached when the embedder delivers it: the commit (which the
        # client's echo waits for) must not wait on a cold or busy embedder (each connection loads
        # its own model; under load an embedding took longer than the whole turn's commit).
        self._may_lack_vectors = True
        await self._in_write_thread(functools.partial(self.store.add_many, [turn], embed=False))
        task = asyncio.create_task(self._attach_vector(turn.id, vector), name="memory-vector")
        self._attaching.add(task)
        task.add_done_callback(self._attaching.discard)
        return turn

    async def _attach_vector(self, turn_id: str, vector: asyncio.Future[np.ndarray]) -> None:
        try:
            await self._in_write_thread(self.store.attach_vector, turn_id, await vector)
        except Exception as error:  # noqa: BLE001 - the turn is stored; the backfill embeds it later
            log.info("turn stored without a vector for now (%s); the backfill fills it in", error)
            self._unembedded += 1

    async def _in_write_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """Runs a blocking store call on the writes' own thread. In the shared pool, a burst of turns
        queued its embeddings (one per turn's recall) ahead of every commit: 24 typed turns, 3 s, and
        not one committed."""
        return await asyncio.get_running_loop().run_in_executor(self._write_thread, fn, *args)

    async def _name_for_writes(self) -> str | None:
        """The user's name, looked up once per memory and then kept (learning a name updates it):
        the lookup reads the profile and 500 turns, on a busy machine slower than the commit itself."""
        if self._writer_name is _UNKNOWN:
            self._writer_name = await self._in_write_thread(self._user_name_now)
        return self._writer_name  # type: ignore[return-value]

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
        # Rows from earlier runs are re-embedded by the start-up upgrade loop; here only this
        # connection's own misses (a failed or late embedding) are filled in.
        lacking = self.store.embed_failures or self._unembedded
        if lacking and self.embedder is not None and (self._backfill is None or self._backfill.done()):
            # Beside the writes, not in their queue: embedding waits for a model that may still be loading.
            self._backfill = asyncio.create_task(self._maybe_backfill(), name="memory-backfill")

    async def _maybe_backfill(self) -> None:
        now = time.monotonic()
        if now - self._last_backfill_try < self.options.backfill_retry_s:
            return
        self._last_backfill_try = now
        try:
            filled = await asyncio.to_thread(self.store.backfill, self.options.backfill_batch)
        except Exception as error:  # noqa: BLE001 - the turns are stored; their vectors can wait
            log.warning("embedding backfill failed: %s", error)
            return
        self._unembedded = max(0, self._unembedded - filled)
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
            self._writer_name = mention.name
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
            except TimeoutError:
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

    def remember(
        self, session: str, role: Literal["user", "assistant"], speaker: str, text: str
    ) -> asyncio.Future[bool]:
        stored: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        if self._closed or not text.strip():
            stored.set_result(False)
            return stored
        self._start()
        self._sessions.add(session)
        item = _Write(session, role, _encodable(speaker), _encodable(text.strip()), datetime.now(UTC), stored=stored)
        # In the rolling buffer from now on, so the recall that follows never returns this very turn,
        # however the write and the recall interleave.
        self._note_recent(item.id, len(item.text))
        self._queue.put_nowait(item)
        return stored

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
        return await asyncio.to_thread(self._user_name_now)

    def _user_name_now(self) -> str | None:
        try:
            profile = self.profile.load()
            if profile.name:
                return profile.name
        except ProfileError as error:
            log.warning("profile unreadable: %s", error)
        return greetings.name_from_turns(self.store.list(500, 0, kind="turn", role="user"))

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
            except TimeoutError:
                log.warning("gave up on unfinished digests at shutdown; the raw turns are stored")
            await self._reflect()
        # Their worker threads use the store: let them finish before the store closes.
        pending = [*self._attaching, *([self._backfill] if self._backfill is not None else [])]
        try:
            await asyncio.wait_for(asyncio.gather(*pending, return_exceptions=True), self.options.close_timeout_s)
        except (TimeoutError, asyncio.TimeoutError):
            log.warning("closing memory without the vectors still being computed; the backfill fills them in")
        # Done tasks and cached futures refer back to this object: dropped, the session's memory is
        # freed by reference counting, without waiting for a full garbage collection.
        self._tasks = []
        self._attaching.clear()
        self._backfill = None
        self._vectors.clear()
        self.on_status = None
        if self.close_store:
            await asyncio.to_thread(self.store.close)
        self._write_thread.shutdown(wait=False)

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


def _resolve(stored: asyncio.Future[bool] | None, committed: bool) -> None:
    if stored is not None and not stored.done():
        stored.set_result(committed)


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
