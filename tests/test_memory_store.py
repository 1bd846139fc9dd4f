"""SqliteMemoryStore: write-time vectors, backfill, fused search, floor, top-k, export/import, errors."""

from __future__ import annotations

import io
import json
import sqlite3
import threading
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pytest

from convers.contracts.memory import MemoryStore, MemoryStoreError, MemoryTurn
from convers.memory.store import MIGRATIONS, SqliteMemoryStore, query_terms
from convers.memory.turn_text import when_words
from tests.memory_doubles import FlakyEmbedder, WordHashEmbedder

T0 = datetime(2025, 3, 3, 9, 30, tzinfo=UTC)


def turn(i: int, text: str, role: str = "user", session: str = "s1", speaker: str = "Sam") -> MemoryTurn:
    return MemoryTurn(f"t{i}", session, T0 + timedelta(minutes=i), speaker, role, text)  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path):
    with SqliteMemoryStore(tmp_path / "memory.db", embedder=WordHashEmbedder()) as s:
        yield s


def test_is_a_memory_store_with_wal_and_current_schema(store: SqliteMemoryStore) -> None:
    assert isinstance(store, MemoryStore)
    mode = store._conn.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    assert store.schema_version() == len(MIGRATIONS)


def test_embedding_is_computed_at_write_time_and_unit_length(store: SqliteMemoryStore) -> None:
    store.add(turn(1, "My sister Ana lives in Lisbon"))
    blob = store._conn.execute("SELECT embedding FROM turns WHERE id = 't1'").fetchone()[0]
    vector = np.frombuffer(blob, dtype=np.float32)
    assert vector.shape == (256,)
    assert abs(float(np.linalg.norm(vector)) - 1.0) < 1e-5
    assert store.stats().unembedded == 0


def test_embedder_down_stores_null_then_backfill_fills_it(tmp_path) -> None:
    flaky = FlakyEmbedder(down=True)
    with SqliteMemoryStore(tmp_path / "m.db", embedder=flaky) as store:
        store.add(turn(1, "The dog is called Biscuit"))
        store.add(turn(2, "I had pasta for dinner"))
        assert store.count() == 2  # the turns are stored although no vector could be made
        assert store.stats().unembedded == 2
        assert store.embed_failures == 2
        assert store.backfill() == 0  # still down: nothing filled, nothing lost
        # Word search works meanwhile.
        assert store.search("Biscuit", 3, floor=0.0)[0].id == "t1"
        flaky.down = False
        assert store.backfill() == 2
        assert store.stats().unembedded == 0
        hits = store.search("what is my dog called", 1, mode="vector", floor=0.0)
        assert hits[0].id == "t1"


def test_search_applies_floor_and_top_k(store: SqliteMemoryStore) -> None:
    texts = ["my dog Biscuit chews shoes", "Biscuit the dog sleeps all day", "the dog barked at the mailman",
             "quantum chromodynamics lecture notes"]
    for i, text in enumerate(texts):
        store.add(turn(i, text))
    assert len(store.search("dog", 2, floor=0.0)) == 2
    everything = store.search("Biscuit dog", 10, floor=0.0, fusion="blend")
    assert [h.id for h in everything] == ["t0", "t1", "t2", "t3"]
    scores = [h.score for h in everything]
    assert scores == sorted(scores, reverse=True)
    floored = store.search("Biscuit dog", 10, floor=0.3)
    assert {h.id for h in floored} == {"t0", "t1"}  # both mention Biscuit; t2 only "dog", t3 nothing
    assert all(h.score >= 0.3 for h in floored)
    assert store.search("Biscuit dog", 0) == []


def test_fusion_ranks_a_turn_found_by_both_rankings_first(tmp_path) -> None:
    store = SqliteMemoryStore(tmp_path / "m.db", embedder=WordHashEmbedder())
    # t1 shares the rare word (lexical) and most words (vector); the others match one ranking only.
    store.add(turn(1, "we planned the Tallinn trip for June"))
    store.add(turn(2, "planned planned trip trip for for June June"))
    store.add(turn(3, "Tallinn"))
    store.add(turn(4, "nothing related at all here"))
    for fusion in ("rrf", "blend"):
        hits = store.search("planning the Tallinn trip", 3, floor=0.0, fusion=fusion)  # type: ignore[arg-type]
        assert hits[0].id == "t1", fusion
    lexical = store.search("Tallinn", 5, mode="lexical", floor=0.0)
    assert [h.id for h in lexical][:2] == ["t3", "t1"]
    store.close()


def test_speaker_names_and_dates_are_searchable(store: SqliteMemoryStore) -> None:
    store.add(turn(1, "I got the job!", speaker="Priya"))
    store.add(turn(2, "Lovely weather", speaker="Sam"))
    assert store.search("Priya", 1, mode="lexical", floor=0.0)[0].id == "t1"
    assert "monday" in when_words(T0, UTC) and "march" in when_words(T0, UTC)
    assert store.search("what happened on monday in march", 2, mode="lexical", floor=0.0)


def test_duplicates_and_digest_of_the_same_turn_appear_once(store: SqliteMemoryStore) -> None:
    store.add(turn(1, "Ana moved to Lisbon"))
    store.add(turn(2, "Ana  moved to lisbon"))
    store.add(MemoryTurn("d1", "s1", T0, "Sam", "user", "Sam said Ana moved to Lisbon", kind="digest"), source_id="t1")
    hits = store.search("Ana Lisbon", 5, floor=0.0)
    assert len(hits) == 1


def test_exclude_skips_turns_already_in_the_rolling_buffer(store: SqliteMemoryStore) -> None:
    store.add(turn(1, "Ana moved to Lisbon"))
    store.add(turn(2, "Ana loves Lisbon in spring"))
    hits = store.search("Ana Lisbon", 5, floor=0.0, exclude=["t2"])
    assert [h.id for h in hits] == ["t1"]


def test_forget_and_wipe(store: SqliteMemoryStore) -> None:
    store.add(turn(1, "secret plan about the surprise party"))
    store.add(MemoryTurn("d1", "s1", T0, "Sam", "user", "Sam plans a surprise party", kind="digest"), source_id="t1")
    store.add(turn(2, "ordinary remark about party music"))
    assert store.search("surprise party", 5, floor=0.0)
    assert store.forget("t1") is True
    assert store.forget("t1") is False
    assert {h.id for h in store.search("surprise party", 5, floor=0.0)} == {"t2"}
    assert store.get("d1") is None  # its digest went with it
    assert store.wipe() == 1
    assert store.count(kind=None) == 0
    assert store.search("party", 5, floor=0.0) == []


def test_export_import_round_trip_keeps_ids_and_times(tmp_path, store: SqliteMemoryStore) -> None:
    originals = [turn(1, "hello there"), turn(2, "hi Sam", role="assistant", speaker="Juniper"),
                 turn(3, "Ana moved to Lisbon", session="s2")]
    for t in originals:
        store.add(t)
    out = io.StringIO()
    assert store.export_jsonl(out) == 3
    lines = out.getvalue().splitlines()
    assert set(json.loads(lines[0])) == {"id", "session", "time", "speaker", "role", "text"}
    with SqliteMemoryStore(tmp_path / "other.db", embedder=WordHashEmbedder()) as other:
        assert other.import_jsonl(lines) == (3, 0)
        assert other.import_jsonl(lines) == (0, 3)  # ids already there are skipped
        assert list(other) == originals
        assert other.search("Lisbon", 1, floor=0.0)[0].id == "t3"


def test_import_rejects_a_bad_line_and_imports_nothing(store: SqliteMemoryStore) -> None:
    good = json.dumps({"id": "a", "session": "s", "time": "2025-01-01T10:00:00+00:00", "speaker": "Sam",
                       "role": "user", "text": "hi"})
    bad = json.dumps({"id": "b", "session": "s", "time": "yesterday", "speaker": "Sam", "role": "user", "text": "x"})
    with pytest.raises(ValueError, match="line 2: time"):
        store.import_jsonl([good, bad])
    assert store.count() == 0


def test_corrupt_database_is_a_clear_error_and_left_untouched(tmp_path) -> None:
    path = tmp_path / "memory.db"
    garbage = b"this is not sqlite at all\x00" * 200
    path.write_bytes(garbage)
    with pytest.raises(MemoryStoreError) as caught:
        SqliteMemoryStore(path)
    message = str(caught.value)
    assert str(path) in message and "damaged" in message and "mv " in message
    assert path.read_bytes() == garbage


def test_damaged_pages_are_reported_not_repaired(tmp_path) -> None:
    path = tmp_path / "memory.db"
    with SqliteMemoryStore(path, embedder=WordHashEmbedder()) as store:
        store.add_many([turn(i, f"turn number {i} " + "x" * 300) for i in range(200)])
    data = bytearray(path.read_bytes())
    data[4096 * 3 : 4096 * 6] = b"\xff" * (4096 * 3)  # smash a few b-tree pages
    path.write_bytes(bytes(data))
    before = path.read_bytes()
    with pytest.raises(MemoryStoreError, match="damaged"):
        SqliteMemoryStore(path)
    assert path.read_bytes() == before


def test_newer_schema_is_refused(tmp_path) -> None:
    path = tmp_path / "memory.db"
    SqliteMemoryStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    conn.close()
    with pytest.raises(MemoryStoreError, match="upgrade convers"):
        SqliteMemoryStore(path)


def test_locked_database_is_a_clear_error(tmp_path) -> None:
    path = tmp_path / "memory.db"
    store = SqliteMemoryStore(path, busy_timeout_s=0.2)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(MemoryStoreError, match="locked by another process"):
            store.add(turn(1, "hello"))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    store.add(turn(1, "hello"))  # usable again once the lock is gone
    assert store.count() == 1
    store.close()


def test_opening_waits_for_a_lock_and_names_it_when_it_stays(tmp_path) -> None:
    # A new file another process is setting up (rollback journal, not yet WAL): reading it waits.
    path = tmp_path / "memory.db"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("CREATE TABLE other_setup (x)")
    try:
        with pytest.raises(MemoryStoreError, match="locked by another process while opening it"):
            SqliteMemoryStore(path, busy_timeout_s=0.2)
        # A lock released within the timeout is waited for, not reported.
        threading.Timer(0.2, lambda: holder.execute("ROLLBACK")).start()
        with SqliteMemoryStore(path, busy_timeout_s=5.0) as store:
            assert store.count() == 0
    finally:
        holder.close()


def test_a_second_store_sees_rows_and_deletes_from_the_first(tmp_path) -> None:
    path = tmp_path / "memory.db"
    a = SqliteMemoryStore(path, embedder=WordHashEmbedder())
    b = SqliteMemoryStore(path, embedder=WordHashEmbedder())
    a.add(turn(1, "Ana moved to Lisbon"))
    assert b.search("Ana Lisbon", 1, mode="vector", floor=0.0)[0].id == "t1"
    a.add(turn(2, "Bilal moved to Osaka"))
    assert b.search("Bilal Osaka", 1, mode="vector", floor=0.0)[0].id == "t2"
    a.forget("t2")
    assert [h.id for h in b.search("Bilal Osaka", 5, mode="vector", floor=0.0)] == ["t1"]
    a.close()
    b.close()


def test_vector_search_over_100k_rows(tmp_path) -> None:
    rng = np.random.default_rng(1)
    store = SqliteMemoryStore(tmp_path / "big.db")
    vectors = rng.standard_normal((100_000, 32)).astype(np.float32)
    turns = [MemoryTurn(f"r{i}", "s", T0, "Sam", "user", f"table row number {i}") for i in range(100_000)]
    for start in range(0, 100_000, 20_000):
        store.add_many(turns[start : start + 20_000], vectors=vectors[start : start + 20_000])
    hits = store.search("row", 3, vector=vectors[4242], mode="vector", floor=0.0)
    assert hits[0].id == "r4242" and hits[0].score == pytest.approx(1.0, abs=1e-4)
    store.close()


def test_query_terms_drop_stopwords() -> None:
    assert query_terms("What did I tell you about Ana's dog?") == ["ana", "dog"]


def test_a_changed_embedder_degrades_to_word_search_for_old_rows(tmp_path) -> None:
    path = tmp_path / "memory.db"
    with SqliteMemoryStore(path, embedder=WordHashEmbedder(dimension=256)) as old:
        old.add(turn(1, "Ana moved to Lisbon"))
    with SqliteMemoryStore(path, embedder=WordHashEmbedder(dimension=64)) as new:
        new.add(turn(2, "Bilal moved to Osaka"))  # stored with its 64-wide vector, no crash
        assert new.search("Ana Lisbon", 1, floor=0.0)[0].id == "t1"
        assert new.search("Bilal Osaka", 1, floor=0.0)[0].id == "t2"
        assert new.count() == 2
