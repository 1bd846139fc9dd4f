"""CompanionMemory: the ConversationMemory a Session uses, built on the profile, the store and the embedder.

Nothing here may slow a reply down. Recall embeds the query in a worker thread with a deadline and
searches by words alone if the embedder is late; writes go on a queue that a background task drains
after the turn (memory/writer.py); digests, observation keys, name learning, embedding backfill, the
re-embedding of older vectors (memory/upgrade.py) and reflection all happen off that path. The
model calls among them (digests, observation keys) also wait until no reply is in progress and
no one speaks (idle_gate.py).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal, TypeVar

from convers.contracts.embedder import Embedder
from convers.contracts.llm import LanguageModel, can_summarise
from convers.contracts.memory import (
    MemoryHit,
    MemoryStore,
    MemoryStoreError,
    MemoryTurn,
    ObservationKeys,
    VectorUpkeep,
)
from convers.idle_gate import IdleGate
from convers.memory import greeting as greetings
from convers.memory.digest import make_digest, needs_digest
from convers.memory.names import find_name
from convers.memory.observations import make_observations, needs_observations
from convers.memory.options import MemoryOptions, memory_options
from convers.memory.profile import ProfileError, ProfileFile
from convers.memory.recent_vectors import RecentVectors
from convers.memory.reflection import Reflection
from convers.memory.upgrade import reembed_stored_turns
from convers.memory.vectors import embed_blocking
from convers.memory.writer import PendingTurn, StatusListener, TurnWriter, encodable

if TYPE_CHECKING:
    from convers.config import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

# Re-exported: a caller building a CompanionMemory needs its options and its status callback type.
__all__ = ["CompanionMemory", "MemoryOptions", "StatusListener", "companion_memory", "memory_options"]


class CompanionMemory:
    """Profile + recall + background writes, behind the ConversationMemory protocol.

    One per session; the store and the embedder are given (a server shares one of each among all
    its sessions), so this class never opens or builds them. `close_store=False` leaves the store
    open at `aclose` for the other sessions; its opener closes it. Any MemoryStore works; one that
    also offers VectorUpkeep gets its vectors attached after the commit and upgraded in the background.
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
        idle: IdleGate | None = None,
    ) -> None:
        self.store = store
        self.close_store = close_store
        self.profile = profile
        self.embedder = embedder if embedder is not None else store.embedder
        self.llm = llm
        self.options = options or MemoryOptions()
        self.reflection = reflection
        self._vectors = RecentVectors(self.embedder) if self.embedder is not None else None
        self._writer = TurnWriter(store, self._vectors, user_name=self._user_name_now,
                                  after_write=self._after_write, on_status=on_status,
                                  retry_s=self.options.write_retry_s)
        self.idle = idle
        # Model work after a stored user turn: ("digest" or "observations", the turn, its stored id).
        self._notes: asyncio.Queue[tuple[str, PendingTurn, str] | None] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._recent_ids: deque[tuple[str, int]] = deque()
        self._recent_chars = 0
        self._sessions: set[str] = set()
        self._asked_for_name = False
        self._last_backfill_try = -1e9
        self._profile_cache: tuple[float, str] | None = None
        self._closed = False
        self._backfill: asyncio.Task[None] | None = None

    # ----------------------------------------------------------------- background tasks

    def _start(self) -> None:
        if self._tasks or self._closed:
            return
        self._tasks = [
            asyncio.create_task(self._writer.run(), name="memory-writes"),
            asyncio.create_task(self._notes_loop(), name="memory-notes"),
        ]
        if self.embedder is not None and isinstance(self.store, VectorUpkeep):
            # Loads the model now, while the greeting plays, rather than during the first recall;
            # then re-embeds what an older version stored, in the background.
            self._tasks.append(asyncio.create_task(self._warm_up_then_upgrade(self.store), name="memory-warm-up"))

    async def settled(self) -> None:
        """Returns once the turns remembered so far are stored (with their vectors, where the embedder
        works) and the background work they started is done: the warm-up, the upgrade and the backfill."""
        await self._writer.settled()
        await asyncio.gather(*self._tasks[2:], *([self._backfill] if self._backfill else []), return_exceptions=True)

    async def _warm_up_then_upgrade(self, store: VectorUpkeep) -> None:
        assert self.embedder is not None
        try:
            await asyncio.to_thread(embed_blocking, self.embedder, ["hello"])
            # The vector index, the speakers' vectors and one search: the first question is as fast as the tenth.
            await asyncio.to_thread(store.warm_up)
        except Exception as error:  # noqa: BLE001 - recall degrades to words
            log.warning("memory warm-up failed: %s", error)
        # This memory's own new turns are committed first and get their vector a moment later:
        # let those settle, or they are counted (and embedded twice) as old ones.
        try:
            await asyncio.wait_for(self._writer.settled(), self.options.close_timeout_s)
        except TimeoutError:
            pass
        await reembed_stored_turns(store, batch=self.options.upgrade_batch, pause_min_s=self.options.upgrade_pause_min_s,
                                   stopped=lambda: self._closed)

    async def _after_write(self, item: PendingTurn, turn: MemoryTurn) -> None:
        """What follows a stored turn: name learning, digests, backfill."""
        if item.role == "user":
            await self._learn_name(item.text)
            writes_notes = self.llm is not None and can_summarise(self.llm)
            if writes_notes and needs_digest(item.text, self.options.digest_min_words):
                self._notes.put_nowait(("digest", item, turn.id))
            if (writes_notes and self.options.observation_keys and isinstance(self.store, ObservationKeys)
                    and needs_observations(item.text)):
                self._notes.put_nowait(("observations", item, turn.id))
        else:
            # If the agent asked for their name, the next user turn may answer with just the name.
            self._asked_for_name = "name" in item.text.lower() and "?" in item.text
        # Rows from earlier runs are re-embedded by the start-up upgrade loop; here only this
        # connection's own misses (a failed or late embedding) are filled in.
        lacking = getattr(self.store, "embed_failures", 0) or self._writer.unembedded
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
        self._writer.unembedded = max(0, self._writer.unembedded - filled)
        if filled:
            log.info("embedded %d turn(s) stored earlier without a vector", filled)
        if filled == self.options.backfill_batch:
            # More may be waiting: allow the next write to continue at once.
            self._last_backfill_try = -1e9

    async def backfill_all(self) -> int:
        """Embeds every stored turn that lacks a vector (for `convers memory` and tests)."""
        total = 0
        while filled := await asyncio.to_thread(self.store.backfill, self.options.backfill_batch):
            total += filled
        return total

    async def _notes_loop(self) -> None:
        while (job := await self._notes.get()) is not None:
            try:
                await self._write_note(*job)
            except Exception as error:  # noqa: BLE001 - the raw turn is already stored
                log.warning("%s not stored: %s", job[0], error)
            finally:
                self._notes.task_done()
        self._notes.task_done()

    async def _write_note(self, kind: str, item: PendingTurn, source_id: str) -> None:
        """One digest or one turn's observation keys: the model call when it is idle, then the write."""
        llm = self.llm
        assert llm is not None
        timeout_s = self.options.note_timeout_s
        if kind == "digest":
            summary = await self._when_idle(lambda: make_digest(llm, item.speaker, item.text, timeout_s))
            if summary:
                digest = MemoryTurn(uuid.uuid4().hex, item.session, item.time, item.speaker, "user", summary,
                                    kind="digest")
                await asyncio.to_thread(self.store.add, digest, source_id)
            return
        notes = await self._when_idle(lambda: make_observations(llm, item.speaker, item.text, timeout_s))
        if notes and isinstance(self.store, ObservationKeys):
            await asyncio.to_thread(self.store.add_observations, [source_id], notes)

    async def _when_idle(self, call: Callable[[], Awaitable[T]]) -> T:
        """`call()` once the idle gate lets it (a turn that starts meanwhile cancels and requeues it)."""
        return await call() if self.idle is None else await self.idle.run(call)

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
            self._writer.name_learned(mention.name)
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
                assert self._vectors is not None
                vector = await asyncio.wait_for(asyncio.shield(self._vectors.of(query)), self.options.embed_deadline_s)
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
        item = PendingTurn(session, role, encodable(speaker), encodable(text.strip()), datetime.now(UTC), stored=stored)
        # In the rolling buffer from now on, so the recall that follows never returns this very turn,
        # however the write and the recall interleave.
        self._note_recent(item.id, len(item.text))
        self._writer.put(item)
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
            self._writer.put(None)
            writer, notes, *others = self._tasks
            await writer  # stored turns are the one thing that must not be lost
            # Only now: the writer may have queued digests up to its last item.
            self._notes.put_nowait(None)
            try:
                await asyncio.wait_for(asyncio.gather(notes, *others), self.options.close_timeout_s)
            except TimeoutError:
                log.warning("gave up on unfinished digests at shutdown; the raw turns are stored")
            await self._reflect()
        # Their worker threads use the store: let them finish before the store closes.
        if self._backfill is not None:
            try:
                await asyncio.wait_for(asyncio.gather(self._backfill, return_exceptions=True),
                                       self.options.close_timeout_s)
            except TimeoutError:
                log.warning("closing memory while the backfill still runs; it goes on next time")
        await self._writer.close(self.options.close_timeout_s)
        # Done tasks and cached futures refer back to this object: dropped, the session's memory is
        # freed by reference counting, without waiting for a full garbage collection.
        self._tasks = []
        self._backfill = None
        if self._vectors is not None:
            self._vectors.clear()
        if self.close_store:
            await asyncio.to_thread(self.store.close)

    async def _reflect(self) -> None:
        if self.reflection is None:
            return
        for session in sorted(self._sessions):
            try:
                turns = await asyncio.to_thread(self.store.list, 400, 0, session=session, newest_first=False)
                name = await self.user_name()
                # Through the idle gate: other sessions on the same model may be talking. Rerunning
                # after a cancel rewrites the same journal file, so a cancel costs only time.
                reflect = functools.partial(self.reflection.after_session, session, turns, name)
                await asyncio.wait_for(self._when_idle(reflect), self.options.close_timeout_s)
            except Exception as error:  # noqa: BLE001 - reflection is optional
                log.warning("session reflection skipped: %r", error)


def companion_memory(
    settings: Settings,
    store: MemoryStore,
    embedder: Embedder | None,
    llm: LanguageModel | None = None,
    *,
    close_store: bool = False,
    on_status: StatusListener | None = None,
    idle: IdleGate | None = None,
) -> CompanionMemory:
    """A session's memory on an open `store` (and its `embedder`), with the profile and knobs of `settings`.

    The caller built the store and the embedder (app/wiring.py, through the registry) and closes
    the store unless `close_store`. `idle` is the process's IdleGate, which the sessions hold.
    """
    reflection = None
    if settings.memory.reflection and llm is not None and can_summarise(llm):
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
        idle=idle,
    )
