"""SqliteMemoryStore: upgrade of older databases, foreign vectors, bad queries, and what ranks first."""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from convers.contracts.memory import MemoryTurn
from convers.memory.ranking import RankingWeights
from convers.memory.schema import open_database
from convers.memory.speakers import SpeakerVectors
from convers.memory.store import MIGRATIONS, SqliteMemoryStore
from tests.memory_doubles import WordHashEmbedder

T0 = datetime(2026, 3, 2, 19, 0, tzinfo=UTC)


def turn(i: int, text: str, speaker: str = "Sam", role: str = "user", session: str = "s1",
         at: datetime | None = None) -> MemoryTurn:
    return MemoryTurn(f"t{i}", session, at or T0 + timedelta(minutes=i), speaker, role, text)  # type: ignore[arg-type]


class OtherEmbedder(WordHashEmbedder):
    """Same width as WordHashEmbedder, another model: its cosines are not comparable."""

    name = "other-model"


def _version_one_database(path: Path, embedder: WordHashEmbedder) -> None:
    """A memory.db as the previous release wrote it: schema 1, bare-text vectors, UTC dates."""
    conn = sqlite3.connect(path)
    for statement in MIGRATIONS[0]:
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    texts = ["My sister Ana moved to Lisbon", "The dog chewed my shoes", "I made lentil soup tonight"]
    vectors = embedder.embed_sync(texts)
    for i, (text, vector) in enumerate(zip(texts, vectors, strict=True), start=1):
        conn.execute(
            "INSERT INTO turns (id, session, time, speaker, role, text, embedding) VALUES (?, 's', ?, 'Sam', 'user', ?, ?)",
            (f"old{i}", (T0 + timedelta(hours=5)).isoformat(), text, np.asarray(vector, np.float32).tobytes()),
        )
        conn.execute("INSERT INTO turns_fts (rowid, text, speaker, when_words) VALUES (?, ?, 'Sam', 'monday')",
                     (i, text))
    conn.commit()
    conn.close()


def test_an_older_database_is_migrated_searchable_at_once_and_re_embedded_by_backfill(tmp_path: Path) -> None:
    path = tmp_path / "memory.db"
    embedder = WordHashEmbedder()
    _version_one_database(path, embedder)
    with SqliteMemoryStore(path, embedder=embedder, zone=ZoneInfo("America/New_York")) as store:
        assert store.schema_version() == len(MIGRATIONS)
        assert store.stats().stale == 3 and store.pending_vectors() == 3
        # Before re-embedding: the old vectors and words still answer.
        assert store.search("Where does Ana live?", 1, floor=0.0)[0].id == "old1"
        assert store.backfill(2) == 2  # in batches, as the background job does
        assert store.pending_vectors() == 1
        assert store.backfill(2) == 1
        assert store.backfill(2) == 0
        assert store.stats().stale == 0 and store.pending_vectors() == 0
        row = store._conn.execute("SELECT when_words FROM turns_words WHERE rowid = 1").fetchone()[0]
        # 3 March 2026 at 00:00 UTC is Monday 2 March evening in New York: rewritten in the local zone.
        assert row.startswith("monday 2 march 2026 evening")
        assert store.search("Where does Ana live?", 1, floor=0.0)[0].id == "old1"
        assert store.embedders() == {"word-hash/256": 3}


def test_vectors_of_another_embedder_are_not_compared_and_get_re_embedded(tmp_path: Path) -> None:
    path = tmp_path / "memory.db"
    with SqliteMemoryStore(path, embedder=WordHashEmbedder()) as store:
        store.add_many([turn(1, "My sister Ana moved to Lisbon"), turn(2, "The dog chewed my shoes")])
    with SqliteMemoryStore(path, embedder=OtherEmbedder()) as store:
        assert store.pending_vectors() == 2 and store.stats().stale == 2
        assert store.search("Ana Lisbon", 1, floor=0.0)[0].id == "t1"  # by words meanwhile
        store.warm_up()
        assert store.vectors_in_memory == 0  # no foreign vector in the index
        assert store.backfill() == 2
        assert store.vectors_in_memory == 2
        assert store.embedders() == {"other-model/256": 2}


def test_a_query_of_another_width_searches_by_words(tmp_path: Path) -> None:
    with SqliteMemoryStore(tmp_path / "m.db", embedder=WordHashEmbedder(256)) as store:
        store.add(turn(1, "Biscuit the beagle"))
        hits = store.search("Biscuit", 1, vector=np.ones(128, dtype=np.float32), floor=0.0)
        assert [h.id for h in hits] == ["t1"]


@pytest.mark.parametrize("query", ["", "   ", "?!", "x" * 4000, "Что ел Сэм?", "東京", "\x00", "AND OR NOT \"(*"])
def test_bad_queries_give_results_or_nothing_never_an_exception(tmp_path: Path, query: str) -> None:
    with SqliteMemoryStore(tmp_path / "m.db", embedder=WordHashEmbedder()) as store:
        store.add_many([turn(1, "Мой кот Барсик спит весь день"), turn(2, "I made soup")])
        hits = store.search(query, 5)
        assert isinstance(hits, list)


def test_words_in_another_script_are_found(tmp_path: Path) -> None:
    with SqliteMemoryStore(tmp_path / "m.db", embedder=None) as store:
        store.add_many([turn(1, "Мой кот Барсик спит весь день"), turn(2, "I made soup")], embed=False)
        assert store.search("Где Барсик?", 1, floor=0.0)[0].id == "t1"


def test_a_time_expression_prefers_turns_from_that_day(tmp_path: Path) -> None:
    zone = ZoneInfo("Europe/Berlin")
    now = datetime(2026, 3, 20, 12, 0, tzinfo=zone)
    with SqliteMemoryStore(tmp_path / "m.db", embedder=WordHashEmbedder(), zone=zone) as store:
        dinners = [turn(i, f"I made {dish} for dinner tonight", session=f"s{i}", at=now - timedelta(days=days, hours=-7))
                   for i, (dish, days) in enumerate([("soup", 3), ("risotto", 14), ("curry", 21), ("stew", 1)])]
        store.add_many(dinners)
        assert store.search("What did I cook two weeks ago?", 1, floor=0.0, now=now)[0].text.startswith("I made risotto")
        assert store.search("What did I cook yesterday?", 1, floor=0.0, now=now)[0].text.startswith("I made stew")
        span = store.time_span("what did I cook yesterday", now)
        assert span is not None and span.start.tzinfo is zone


def test_the_local_zone_decides_the_day_a_turn_is_indexed_under(tmp_path: Path) -> None:
    # 01:30 UTC on Wednesday is Tuesday evening in New York.
    late = datetime(2026, 3, 4, 1, 30, tzinfo=UTC)
    with SqliteMemoryStore(tmp_path / "m.db", embedder=None, zone=ZoneInfo("America/New_York")) as store:
        store.add_many([turn(1, "We planted an apple tree", at=late)], embed=False)
        assert store.search("tuesday", 1, mode="lexical", floor=0.0)[0].id == "t1"
        assert store.search("wednesday", 1, mode="lexical", floor=0.0) == []


def test_a_question_naming_a_speaker_prefers_their_turns(tmp_path: Path) -> None:
    with SqliteMemoryStore(tmp_path / "m.db", embedder=WordHashEmbedder()) as store:
        store.add_many([
            turn(1, "We adopted a little beagle from the shelter", "Sam", "user"),
            turn(2, "We adopted a little beagle from the shelter too", "Maya", "assistant"),
        ])
        assert store.search("what did Maya adopt", 1, floor=0.0, mode="vector")[0].id == "t2"
        assert store.search("what did I adopt", 1, floor=0.0, mode="vector")[0].id == "t1"


def test_a_later_restatement_of_a_plan_ranks_above_the_older_one(tmp_path: Path) -> None:
    weights = RankingWeights(supersede_cosine=0.5, supersede_margin=1.0)
    with SqliteMemoryStore(tmp_path / "m.db", embedder=WordHashEmbedder(), weights=weights) as store:
        store.add_many([
            turn(1, "We booked a week in Rome for our July holiday", session="a"),
            turn(2, "Change of plan for our July holiday: Lisbon, not Rome", session="b",
                 at=T0 + timedelta(days=30)),
        ])
        ids = [h.id for h in store.search("Where are we going for the July holiday in Rome?", 2, floor=0.0)]
        assert ids == ["t2", "t1"]
        store.use_weights(replace(weights, supersede_cosine=0.0))  # off: the better word match (the old plan) would come first
        assert next(h.id for h in store.search("Where are we going for the July holiday in Rome?", 2, floor=0.0)) == "t1"


def test_a_question_turn_counts_less_than_the_answer(tmp_path: Path) -> None:
    with SqliteMemoryStore(tmp_path / "m.db", embedder=WordHashEmbedder()) as store:
        store.add_many([turn(1, "Did you adopt the beagle?", "Maya", "assistant"),
                        turn(2, "Yes we adopted the beagle")])
        assert store.search("adopt the beagle", 1, floor=0.0, mode="vector")[0].id == "t2"


def test_warm_up_loads_the_index_and_the_speakers(tmp_path: Path) -> None:
    embedder = WordHashEmbedder()
    with SqliteMemoryStore(tmp_path / "m.db", embedder=embedder) as store:
        store.add_many([turn(1, "hello there", "Maya", "assistant"), turn(2, "hi")])
    with SqliteMemoryStore(tmp_path / "m.db", embedder=embedder) as store:
        store.warm_up()
        assert store.vectors_in_memory == 2
        assert set(store.speakers.labels_embedded()) >= {"Maya (assistant)", "Sam (user)"}


def test_common_words_are_left_out_of_the_word_query_but_the_rarest_stays(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import convers.memory.search as search_module

    monkeypatch.setattr(search_module, "COMMON_TERM_ROWS", 3)
    monkeypatch.setattr(search_module, "COMMON_TERM_SHARE", 0.0)
    path = tmp_path / "m.db"
    search = search_module.TurnSearch(path, SpeakerVectors(None), RankingWeights())
    with SqliteMemoryStore(path, embedder=None) as store:
        dinners = [turn(i, f"We had dinner with friends number {i}") for i in range(8)]
        store.add_many([*dinners, turn(8, "The risotto at dinner was superb"),
                        turn(9, "My friends loved the risotto")], embed=False)
        conn = open_database(path, busy_timeout_s=5.0)
        # "dinner" is in 9 of 10 rows, "friends" in 9, "risotto" in 2.
        assert search.without_common(conn, ["dinner", "risotto", "friends"]) == ["risotto"]
        assert search.without_common(conn, ["dinner", "friends"]) in (["dinner"], ["friends"])
        assert search.without_common(conn, ["dinner"]) == ["dinner"]  # a lone word is never dropped
        hits = store.search("risotto dinner", 2, floor=0.0)
        assert {h.id for h in hits} == {"t8", "t9"}
        # Counts are taken again once the store has grown by more than a tenth.
        store.add_many([turn(10 + i, f"risotto again {i}") for i in range(5)], embed=False)
        # Now "risotto" is in 7 rows (common too) but still rarer than "dinner" (9): it is the one kept.
        assert search.without_common(conn, ["dinner", "risotto"]) == ["risotto"]
        assert search.term_rows["risotto"] == 7
        conn.close()


def vector_workers() -> list[threading.Thread]:
    """The threads that run the matrix pass of large stores beside the word pass."""
    return [t for t in threading.enumerate() if t.name.startswith("memory-vectors")]


def test_the_parallel_vector_pass_finds_what_the_serial_one_does(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import convers.memory.search as search_module

    texts = ["My sister Ana moved to Lisbon", "The dog chewed my shoes", "I made lentil soup tonight",
             "Ana loves the sea in Lisbon", "We walked the dog by the river"]
    with SqliteMemoryStore(tmp_path / "m.db", embedder=WordHashEmbedder()) as store:
        store.add_many([turn(i, t) for i, t in enumerate(texts)])
        queries = ["where does Ana live", "what did the dog do", "what did I cook yesterday"]
        vectors = {q: store.embed_query(q) for q in queries}

        def found(query: str, **given: Any) -> list[tuple[str, float]]:
            return [(h.id, h.score) for h in store.search(query, 3, floor=0.0, now=T0 + timedelta(days=1), **given)]

        monkeypatch.setattr(search_module, "PARALLEL_MIN_VECTORS", 10**9)
        serial = [found(q, vector=vectors[q]) for q in queries]
        assert not vector_workers()
        monkeypatch.setattr(search_module, "PARALLEL_MIN_VECTORS", 1)
        parallel = [found(q, vector=vectors[q]) for q in queries]
        assert vector_workers()
        assert parallel == serial and all(serial)
        # Without a vector the store embeds the question itself: the same hits.
        monkeypatch.setattr(search_module, "PARALLEL_MIN_VECTORS", 10**9)
        assert [found(q) for q in queries] == serial
    assert not vector_workers()  # close() stops the worker


def test_searches_from_many_threads_at_once_all_finish(tmp_path: Path) -> None:
    """One store is shared by every session of a server: questions embedded beside the word search
    must not wait on each other's worker (a search that queued its embedding while another held the
    store's lock once deadlocked both)."""
    texts = ["My sister Ana moved to Lisbon", "The dog chewed my shoes", "I made lentil soup tonight",
             "Ana loves the sea in Lisbon", "We walked the dog by the river"]
    with SqliteMemoryStore(tmp_path / "m.db", embedder=WordHashEmbedder()) as store:
        store.add_many([turn(i, t) for i, t in enumerate(texts)])
        expected = [h.id for h in store.search("where does Ana live", 2, floor=0.0)]
        found: list[list[str]] = []
        errors: list[BaseException] = []

        def ask() -> None:
            try:
                for _ in range(25):
                    found.append([h.id for h in store.search("where does Ana live", 2, floor=0.0)])
            except BaseException as error:  # noqa: BLE001 - reported below
                errors.append(error)

        threads = [threading.Thread(target=ask, daemon=True) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert not any(t.is_alive() for t in threads), "searches from several threads never finished"
        assert not errors and len(found) == 100 and all(ids == expected for ids in found)


def test_each_ranking_hands_the_fusion_as_many_candidates_as_the_weights_say(tmp_path: Path) -> None:
    animals = ["fox", "owl", "seal", "crab", "gull", "eel"]
    turns = [turn(i, f"The lighthouse keeper met a {animal}") for i, animal in enumerate(animals)]
    with SqliteMemoryStore(tmp_path / "m.db", embedder=WordHashEmbedder(),
                           weights=RankingWeights(candidates=2)) as store:
        store.add_many(turns)
        assert len(store.search("lighthouse keeper", 6, mode="lexical", floor=0.0)) == 2
        assert len(store.search("lighthouse keeper", 6, mode="vector", floor=0.0)) == 2
        store.use_weights(RankingWeights(candidates=5))
        assert len(store.search("lighthouse keeper", 6, mode="lexical", floor=0.0)) == 5
