"""Part vectors: a turn's sentences embedded beside it, lifting it in a search, kept in step with forget, wipe and upgrades."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from convers.contracts.memory import MemoryTurn
from convers.memory.part_index import PartIndex
from convers.memory.ranking import RankingWeights
from convers.memory.sentences import clauses, sentences
from convers.memory.store import MIGRATIONS, SqliteMemoryStore
from convers.memory.turn_parts import PART_KINDS, turn_parts
from convers.memory.vectors import VectorIndex, unit_rows
from tests.memory_doubles import FlakyEmbedder, WordHashEmbedder

T0 = datetime(2026, 3, 2, 19, 0, tzinfo=UTC)
BURIED = ("Long week at work, endless meetings and deadlines and reports. We adopted a beagle puppy! "
          "Anyway, what about your trip plans?")
CLOSE = "The neighbour adopted a puppy."  # nearer the question than BURIED as a whole, not than its sentence
QUESTION = "What kind of beagle puppy did we adopt?"
# Vectors only, nothing else lifting or lowering a turn: the tests look at the part vectors alone.
PLAIN = dict(centre_weight=0.0, topic_weight=0.0, entity_weight=0.0, per_session=0, similar_cosine=1.0)


def turn(i: int, text: str, speaker: str = "Sam", role: str = "user", session: str = "s1") -> MemoryTurn:
    return MemoryTurn(f"t{i}", session, T0 + timedelta(minutes=i), speaker, role, text)  # type: ignore[arg-type]


def part_rows(store: SqliteMemoryStore) -> list[tuple[str, str, str]]:
    """(turn id, kind, text) of every stored part."""
    return store._conn.execute("SELECT t.id, p.kind, p.text FROM turn_parts p JOIN turns t ON t.rowid = p.turn_rowid "
                               "ORDER BY p.id").fetchall()


@pytest.mark.parametrize(("text", "expected"), [
    ("One. Two! Three? Four", ["One.", "Two!", "Three?", "Four"]),
    ("She said \"wow.\" Then left.", ["She said \"wow.\"", "Then left."]),
    ("No split at 3.5 km or e.g.here", ["No split at 3.5 km or e.g.here"]),
    ("  spaced   out.   Again  ", ["spaced out.", "Again"]),
    ("", []),
])
def test_sentences_split_after_end_marks(text: str, expected: list[str]) -> None:
    assert sentences(text) == expected


def test_clauses_split_at_commas_semicolons_and_dashes() -> None:
    assert clauses("I made soup tonight, way too much garlic; never again - honestly") == [
        "I made soup tonight", "way too much garlic", "never again", "honestly"]


def test_a_turn_s_parts_are_its_sentences_worth_a_vector() -> None:
    parts = turn_parts(turn(1, BURIED), None, PART_KINDS)
    assert [p for p in parts if p[0] == "sentence"] == [
        ("sentence", "Long week at work, endless meetings and deadlines and reports."),
        ("sentence", "We adopted a beagle puppy!"),
        ("sentence", "Anyway, what about your trip plans?")]
    # One sentence: its own vector is the turn's. Short ones ("Oh wow!") say too little for one of their own.
    assert turn_parts(turn(2, "We adopted a beagle puppy from the shelter."), None, ("sentence",)) == []
    assert turn_parts(turn(3, "Oh wow! We adopted a beagle puppy."), None, ("sentence",)) == [
        ("sentence", "We adopted a beagle puppy.")]
    digest = MemoryTurn("d", "s1", T0, "Sam", "user", BURIED, "digest")
    assert turn_parts(digest, None, PART_KINDS) == []


def test_clause_and_context_parts() -> None:
    said = turn(2, "Yeah, since I was ten years old!", "Maya", "assistant")
    asked = turn(1, "Do you still play the cello?")
    assert turn_parts(said, asked, ("context",)) == [("context", "Do you still play the cello? Yeah, since I was "
                                                                 "ten years old!")]
    assert turn_parts(said, turn(1, "Do you still play the cello?", "Maya", "assistant"), ("context",)) == []
    assert turn_parts(turn(3, "I made lentil soup tonight, way too much garlic for me"), None, ("clause",)) == [
        ("clause", "I made lentil soup tonight"), ("clause", "way too much garlic for me")]


def test_a_sentence_buried_in_chatter_lifts_its_turn(tmp_path: Path) -> None:
    with SqliteMemoryStore(tmp_path / "m.db", embedder=WordHashEmbedder(),
                           weights=RankingWeights(sentence_weight=1.0, **PLAIN)) as store:  # type: ignore[arg-type]
        store.add_many([turn(1, BURIED), turn(2, CLOSE)])
        assert [kind for _, kind, _ in part_rows(store)] == ["sentence"] * 3
        assert store.search(QUESTION, 1, mode="vector", floor=0.0)[0].id == "t1"
        # Without the parts, the whole turn's vector is too diluted to win.
        store.use_weights(RankingWeights(sentence_weight=0.0, **PLAIN))  # type: ignore[arg-type]
        assert store.search(QUESTION, 1, mode="vector", floor=0.0)[0].id == "t2"


def test_a_turn_s_score_moves_by_the_weight_towards_its_nearest_part() -> None:
    turns, parts = VectorIndex(), PartIndex()
    turns.add([1, 2], unit_rows(np.eye(3)[:2]), [0.0, 0.0])
    parts.loaded_to_id = 0
    parts.add([10, 11], [1, 2], ["sentence", "clause"], unit_rows(np.array([[0.0, 0.6, 0.8], [0.0, 0.0, 1.0]])),
              [0.0, 0.0])
    query = np.array([0.0, 0.0, 1.0], dtype=np.float32)
    found = turns.query(query, 2, adjust=lambda scores, at: parts.lift(query, scores, at, {"sentence": 0.5}, None))
    # Turn 1's sentence (cosine 0.8) moves it half way from 0; turn 2's clause has no weight.
    assert found.nearest == [(1, pytest.approx(0.4)), (2, 0.0)]


def test_parts_go_with_forget_and_wipe(tmp_path: Path) -> None:
    with SqliteMemoryStore(tmp_path / "m.db", embedder=WordHashEmbedder()) as store:
        store.add_many([turn(1, BURIED), turn(2, "Lovely. We did too, a tabby kitten called Mochi!")])
        store.warm_up()
        assert {turn_id for turn_id, _, _ in part_rows(store)} == {"t1", "t2"}
        assert len(store._search.parts) == len(part_rows(store)) == 4
        assert store.forget("t1")
        assert {turn_id for turn_id, _, _ in part_rows(store)} == {"t2"}
        assert len(store._search.parts) == 1
        orphans = store._conn.execute("SELECT count(*) FROM turn_parts p LEFT JOIN turns t ON t.rowid = p.turn_rowid "
                                      "WHERE t.rowid IS NULL").fetchone()[0]
        assert orphans == 0
        assert store.wipe() == 1
        assert part_rows(store) == [] and len(store._search.parts) == 0


def test_a_vector_attached_later_brings_its_parts(tmp_path: Path) -> None:
    embedder = WordHashEmbedder()
    with SqliteMemoryStore(tmp_path / "m.db", embedder=embedder) as store:
        store.warm_up()
        store.add_many([turn(1, BURIED)], embed=False)  # what the conversation's writer commits first
        assert part_rows(store) == []
        assert store.attach_vector("t1", embedder.embed_sync([BURIED])[0])
        assert len(part_rows(store)) == 3 and len(store._search.parts) == 3
        assert store.pending_vectors() == 0


def test_parts_that_could_not_be_embedded_are_made_by_the_backfill(tmp_path: Path) -> None:
    embedder = FlakyEmbedder(down=False)
    with SqliteMemoryStore(tmp_path / "m.db", embedder=embedder) as store:
        vector = embedder.embed_sync([BURIED])[0]
        embedder.down = True  # the turn's vector is known (the recall made it), its parts cannot be embedded
        store.add(turn(1, BURIED), vector=vector)
        assert part_rows(store) == [] and store.pending_vectors() == 1
        embedder.down = False
        assert store.backfill() == 1
        assert len(part_rows(store)) == 3 and store.pending_vectors() == 0


def test_a_schema_4_store_gains_the_parts_table_and_its_turns_get_parts_in_the_background(tmp_path: Path) -> None:
    path = tmp_path / "memory.db"
    embedder = WordHashEmbedder()
    conn = sqlite3.connect(path)
    for migration in MIGRATIONS[:4]:
        for statement in migration:
            conn.execute(statement)
    conn.execute("PRAGMA user_version = 4")
    vector = embedder.embed_sync([BURIED])[0].astype(np.float32).tobytes()
    for rowid, (text, blob) in enumerate([(BURIED, vector), (CLOSE, embedder.embed_sync([CLOSE])[0].tobytes())], 1):
        conn.execute("INSERT INTO turns (id, session, time, speaker, role, text, embedding, embed_version, embedder) "
                     "VALUES (?, 's', ?, 'Sam', 'user', ?, ?, 2, 'word-hash/256')",
                     (f"old{rowid}", T0.isoformat(), text, blob))
        conn.execute("INSERT INTO turns_words (rowid, text, speaker, when_words, answers) VALUES (?, ?, 'Sam', '', '')",
                     (rowid, text))
    conn.commit()
    conn.close()
    weights = RankingWeights(sentence_weight=1.0, **PLAIN)  # type: ignore[arg-type]
    with SqliteMemoryStore(path, embedder=embedder, weights=weights) as store:
        assert store.schema_version() == len(MIGRATIONS) == 5
        assert part_rows(store) == [] and store.pending_vectors() == 2
        # Meanwhile found by its old vector (too diluted to come first).
        assert [h.id for h in store.search(QUESTION, 2, mode="vector", floor=0.0)] == ["old2", "old1"]
        assert store.backfill() == 2
        assert [turn_id for turn_id, _, _ in part_rows(store)] == ["old1"] * 3
        assert store.search(QUESTION, 1, mode="vector", floor=0.0)[0].id == "old1"
    with SqliteMemoryStore(path, embedder=embedder, weights=weights) as store:  # a restart loads them from the file
        assert store.search(QUESTION, 1, mode="vector", floor=0.0)[0].id == "old1"
        assert len(store._search.parts) == 3 and store.pending_vectors() == 0


async def test_a_conversation_s_turn_gets_its_parts_from_the_background_writer(tmp_path: Path) -> None:
    from convers.memory.conversation import CompanionMemory, MemoryOptions
    from convers.memory.profile import ProfileFile

    embedder = WordHashEmbedder()
    store = SqliteMemoryStore(tmp_path / "memory.db", embedder=embedder,
                              weights=RankingWeights(sentence_weight=1.0, **PLAIN))  # type: ignore[arg-type]
    memory = CompanionMemory(store, ProfileFile(tmp_path / "profile.json"), embedder=embedder,
                             options=MemoryOptions(recall_floor=0.0))
    memory.remember("s1", "user", "Sam", BURIED)
    memory.remember("s1", "user", "Sam", CLOSE)
    await memory.settled()
    assert [turn_id for turn_id, _, _ in part_rows(store)] == [store.list(2, newest_first=False)[0].id] * 3
    assert store.search(QUESTION, 1, mode="vector", floor=0.0)[0].text == BURIED
    await memory.aclose()
