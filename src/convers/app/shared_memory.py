"""The memory of one process: a store and an embedder opened once, shared by every session, and its state.

A server used to open a new store (reloading every stored vector) and a new MiniLM per connection,
on the event loop: about 94 MB per reconnect, freed only by a full garbage collection. Now the
store and the embedder are built once, in a worker thread, and each session gets only its own
CompanionMemory view on them. When memory cannot be opened (a corrupt memory.db, a data directory
that cannot be written, a full disk) the conversation goes on without it, and `status` says why:
the page gets it as a `memory` notice, the memory API and `convers doctor` report it.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from convers import registry
from convers.contracts.events import NoticeMessage
from convers.contracts.memory import MemoryStatus, MemoryStore, MemoryStoreError
from convers.idle_gate import IdleGate

if TYPE_CHECKING:
    from convers.config import Settings
    from convers.contracts.embedder import Embedder
    from convers.contracts.llm import LanguageModel
    from convers.memory.conversation import CompanionMemory, StatusListener

log = logging.getLogger(__name__)

NOTICE_CODE = "memory"
RESTORED_CODE = "memory_restored"
NOT_OPENED = MemoryStatus("unavailable", "memory has not been opened yet")
# Less free space than this where the data directory lives and a turn's write (WAL frames of a few
# pages each, a checkpoint) is likely to fail with "database or disk is full".
MIN_FREE_BYTES = 4 * 1024 * 1024


def memory_notice(status: MemoryStatus) -> NoticeMessage:
    """The notice the page shows for `status` (`memory` while unavailable, `memory_restored` after)."""
    if status.usable:
        return NoticeMessage(RESTORED_CODE, f"Memory works again: {status.reason}")
    if status.state == "degraded":
        return NoticeMessage(NOTICE_CODE, f"Memory cannot store what is said now: {status.reason}")
    return NoticeMessage(
        NOTICE_CODE, f"Memory is off, nothing said now is remembered (the conversation goes on): {status.reason}"
    )


class SharedMemory:
    """The memory store and embedder of this process, opened once (blocking: call `open` off the loop).

    The store is the `memory.provider` of settings, built through the registry on the embedder of
    `embedder.provider`; both are shared by every session (the store is thread-safe by contract).
    `idle` is the process's IdleGate: sessions hold it (SessionParts.idle) and their memories'
    background model work waits on it, since they all share one language model.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store: MemoryStore | None = None
        self.embedder: Embedder | None = None
        self.status = NOT_OPENED if settings.memory.enabled else MemoryStatus("off", "memory.enabled = false")
        self._opened = False
        self._lock = threading.Lock()
        self.idle = IdleGate()

    def open(self) -> MemoryStatus:
        """Opens the embedder and the store once (later calls return the state); never raises."""
        with self._lock:
            if self._opened:
                return self.status
            self._opened = True
            if not self.settings.memory.enabled:
                return self.status
            self.embedder, without_vectors = _open_embedder(self.settings)
            try:
                self.store = registry.create("memory", self.settings.memory.provider, self.settings, embedder=self.embedder)
            except (MemoryStoreError, registry.ProviderUnavailableError, registry.UnknownProviderError, OSError) as error:
                if self.store is not None:
                    self.close()
                self.status = MemoryStatus("unavailable", _reason(error))
                log.warning("memory is off: %s", self.status.reason)
                return self.status
            where = getattr(self.store, "path", None) or self.settings.memory.provider
            full = disk_full(self.settings.data_path)
            if full:
                self.status = MemoryStatus("degraded", f"{full}; turns are kept in memory and stored once there is room")
                log.warning("memory: %s", self.status.reason)
            else:
                self.status = MemoryStatus("on", f"{where}" + (f"; {without_vectors}" if without_vectors else ""))
            return self.status

    async def aopen(self) -> MemoryStatus:
        """`open` in a worker thread: SQLite, loading vectors and the embedder never block the event loop."""
        if self._opened:
            return self.status
        return await asyncio.to_thread(self.open)

    def for_session(
        self, llm: LanguageModel | None, on_status: StatusListener | None = None, *, close_store: bool = False
    ) -> CompanionMemory | None:
        """A session's own memory on the shared store (None while memory is off or unavailable)."""
        if self.store is None:
            return None
        from convers.memory.conversation import companion_memory

        memory = companion_memory(self.settings, self.store, self.embedder, llm, close_store=close_store,
                                  on_status=on_status, idle=self.idle)
        if close_store:
            self.store = None  # the session's memory owns it now
        return memory

    def notices(self) -> list[NoticeMessage]:
        """What a new connection's page is told about memory (nothing while it works or is switched off)."""
        return [memory_notice(self.status)] if self.status.state in ("unavailable", "degraded") else []

    async def aclose(self) -> None:
        if self.store is not None:
            await asyncio.to_thread(self.close)

    def close(self) -> None:
        """Closes the shared store (blocking); after the last session ended."""
        store, self.store = self.store, None
        if store is not None:
            try:
                store.close()
            except Exception as error:  # noqa: BLE001 - closing at shutdown must not raise over the real error
                log.warning("closing the memory store failed: %s", error)


def disk_full(data_dir: Path) -> str:
    """Why the disk of `data_dir` cannot take a write now ('' when it can)."""
    try:
        free = shutil.disk_usage(data_dir).free
    except OSError:
        return ""  # not there yet: opening the store says what is wrong with it
    if free >= MIN_FREE_BYTES:
        return ""
    return f"the disk holding {data_dir} is full ({free // 1024} KiB free): free some space"


def memory_state(settings: Settings) -> MemoryStatus:
    """What a server starting now would find (for `convers doctor`): opens the store as it would, and closes it."""
    shared = SharedMemory(settings)
    status = shared.open()
    shared.close()
    return status


def _open_embedder(settings: Settings) -> tuple[Any, str]:
    """The embedder of settings, or None and why (recall then goes by words; writes backfill later)."""
    try:
        name = registry.provider_name("embedder", settings)
        return registry.create("embedder", name, settings), ""
    except Exception as error:  # noqa: BLE001 - recall still works by words; writes backfill later
        log.warning("embedder %s unavailable, recall uses words only: %s", settings.embedder.provider, error)
        return None, f"recall by words only: {error}"


def _reason(error: BaseException) -> str:
    """An open failure in words: store errors already name the file and the fix; OS errors get both."""
    if isinstance(error, OSError) and not isinstance(error, MemoryStoreError):
        where = f" {error.filename}" if error.filename else ""
        return (f"cannot open the memory files{where}: {error.strerror or error} "
                "(make the data directory writable, free disk space, or pass another --data-dir)")
    return str(error)
