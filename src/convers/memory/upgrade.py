"""Re-embedding a store's older vectors in the background, paced so a reply never waits for it."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from convers.contracts.memory import MemoryStoreError, VectorUpkeep

log = logging.getLogger(__name__)


async def reembed_stored_turns(store: VectorUpkeep, *, batch: int, pause_min_s: float,
                               stopped: Callable[[], bool]) -> int:
    """Re-embeds every stored turn whose vector is of an older format or another embedder; how many.

    Batches of `batch` turns, each followed by a pause at least as long as the batch took, so it
    never takes more than half a core from a reply. Progress is logged every tenth;
    `convers memory status` shows what is left. A failing store pauses it until the next start.
    """
    try:
        pending = await asyncio.to_thread(store.pending_vectors)
    except MemoryStoreError as error:
        log.warning("memory upgrade skipped: %s", error)
        return 0
    if not pending:
        return 0
    log.info("memory: re-embedding %d stored turns in the background (`convers memory status` shows progress)",
             pending)
    done, reported = 0, 0
    while not stopped():
        started = time.monotonic()
        try:
            filled = await asyncio.to_thread(store.backfill, batch)
        except MemoryStoreError as error:
            log.warning("memory upgrade paused: %s", error)
            return done
        if not filled:
            break
        done += filled
        if done - reported >= max(pending // 10, batch):
            log.info("memory: re-embedded %d of %d turns", done, pending)
            reported = done
        await asyncio.sleep(max(pause_min_s, time.monotonic() - started))
    log.info("memory: re-embedded %d of %d turns%s", done, pending, "" if done >= pending else " (stopped)")
    return done
