"""The memory layer works with any MemoryStore, and `memory.provider` picks it through the registry."""

from __future__ import annotations

from pathlib import Path

import pytest

from convers import registry
from convers.app import wiring
from convers.config import load_settings
from convers.contracts.memory import ConversationMemory, MemoryStore
from convers.memory.store import SqliteMemoryStore
from tests.memory_doubles import ListMemoryStore


@pytest.fixture
def list_store_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """ListMemoryStore installed as the third-party memory provider `listy` (one entry-point line)."""
    dist = tmp_path / "listy_memory-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: listy-memory\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[convers.memory]\nlisty = tests.memory_doubles:ListMemoryStore\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield


def test_both_stores_meet_the_protocol(tmp_path: Path) -> None:
    assert isinstance(ListMemoryStore(), MemoryStore)
    with SqliteMemoryStore(tmp_path / "memory.db") as store:
        assert isinstance(store, MemoryStore)


async def test_memory_provider_is_honoured_and_the_conversation_memory_runs_on_it(
    tmp_path: Path, list_store_installed: None
) -> None:
    assert "listy" in registry.installed("memory")
    settings = load_settings(environ={}, cli={"data_dir": str(tmp_path / "data"), "memory.provider": "listy",
                                              "embedder.provider": "no-such-embedder", "memory.recall_floor": 0.0})
    sessions = wiring.ServerSessions(settings)  # what `convers serve` (and talk, chat) open
    status = await sessions.memory.aopen()
    store = sessions.memory.store
    assert isinstance(store, ListMemoryStore) and status.state == "on"
    assert not (tmp_path / "data" / "memory.db").exists()  # no SQLite behind its back

    first = sessions.memory.for_session(None)
    assert isinstance(first, ConversationMemory)
    assert await first.greeting("Juniper")  # a first visit: an introduction
    first.remember("s1", "user", "Sam", "My name is Sam and my dog is called Biscuit")
    first.remember("s1", "assistant", "Juniper", "Biscuit is a lovely name")
    await first.aclose()
    assert [t.text for t in store.list(10, newest_first=False)] == [
        "My name is Sam and my dog is called Biscuit", "Biscuit is a lovely name"]
    assert not store.closed  # the shared store stays open for the next session

    second = sessions.memory.for_session(None)
    assert second is not None
    hits = await second.recall("what is my dog called? Biscuit?")
    assert hits and hits[0].text.startswith("My name is Sam")
    assert store.searches[-1] == "lexical"  # no embedder: words only, never a store-side embedding
    assert "Sam" in await second.greeting("Juniper")  # welcomed back by the name learned from the store
    await second.aclose()
    await sessions.aclose()
    assert store.closed


async def test_a_store_without_vector_upkeep_gets_every_turn_with_its_vector(tmp_path: Path) -> None:
    """A MemoryStore that cannot attach a vector later is handed each turn whole, vector and all."""
    from convers.contracts.memory import VectorUpkeep
    from convers.memory.conversation import CompanionMemory, MemoryOptions
    from convers.memory.profile import ProfileFile
    from tests.memory_doubles import WordHashEmbedder

    embedder = WordHashEmbedder()
    store = ListMemoryStore(embedder)
    assert not isinstance(store, VectorUpkeep)
    with SqliteMemoryStore(tmp_path / "memory.db") as sqlite_store:
        assert isinstance(sqlite_store, VectorUpkeep)
    memory = CompanionMemory(store, ProfileFile(tmp_path / "profile.json"), embedder=embedder,
                             options=MemoryOptions(recall_floor=0.0), close_store=False)
    memory.remember("s1", "user", "Sam", "Biscuit chewed my shoes")
    memory.remember("s1", "assistant", "Juniper", "Oh no, poor shoes")
    await memory.settled()
    assert [t.text for t in store.list(10, newest_first=False)] == ["Biscuit chewed my shoes", "Oh no, poor shoes"]
    assert all(v is not None and v.shape == (embedder.dimension,) for v in store.vectors.values())
    await memory.aclose()
    assert not store.closed
