"""CompanionMemory re-embeds an older store in the background after warming up, with progress in the log."""

from __future__ import annotations

import logging
from pathlib import Path

from convers.memory.conversation import CompanionMemory, MemoryOptions
from convers.memory.profile import ProfileFile
from convers.memory.store import SqliteMemoryStore
from tests.memory_doubles import WordHashEmbedder
from tests.test_store_upgrade_and_ranking import _version_one_database


async def test_an_older_store_is_re_embedded_in_the_background_and_recall_works_meanwhile(tmp_path: Path,
                                                                                          caplog) -> None:
    embedder = WordHashEmbedder()
    _version_one_database(tmp_path / "memory.db", embedder)
    store = SqliteMemoryStore(tmp_path / "memory.db", embedder=embedder)
    memory = CompanionMemory(store, ProfileFile(tmp_path / "profile.json"), embedder=embedder,
                             options=MemoryOptions(recall_floor=0.0, upgrade_batch=2, upgrade_pause_min_s=0.0))
    caplog.set_level(logging.INFO, logger="convers.memory.upgrade")
    hits = await memory.recall("Where does Ana live?")  # starts the background tasks; answers from old vectors
    assert hits and hits[0].id == "old1"
    await memory.settled()  # warm-up, then the upgrade
    assert store.pending_vectors() == 0 and store.stats().stale == 0
    assert "re-embedded 3 of 3 turns" in caplog.text
    hits = await memory.recall("Where does Ana live?")
    assert hits[0].id == "old1"
    await memory.aclose()


async def test_a_current_store_has_nothing_to_upgrade(tmp_path: Path, caplog) -> None:
    embedder = WordHashEmbedder()
    store = SqliteMemoryStore(tmp_path / "memory.db", embedder=embedder)
    memory = CompanionMemory(store, ProfileFile(tmp_path / "profile.json"), embedder=embedder)
    caplog.set_level(logging.INFO, logger="convers.memory.upgrade")
    memory.remember("s", "user", "Sam", "hello there")
    await memory.recall("hello")
    await memory.settled()
    assert "re-embedding" not in caplog.text
    await memory.aclose()
