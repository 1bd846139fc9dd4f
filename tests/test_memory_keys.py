"""Derived keys: names and topics written beside each turn, found by questions, shown, and forgotten with the turn."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from convers.cli import main
from convers.contracts.memory import MemoryTurn
from convers.memory.derived_keys import TopicVectors, entities, query_entities
from convers.memory.ranking import Candidate, RankingWeights, distinct
from convers.memory.store import MIGRATIONS, SqliteMemoryStore
from convers.memory.vectors import unit_rows
from tests.memory_doubles import WordHashEmbedder

T0 = datetime(2026, 3, 2, 19, 0, tzinfo=UTC)


def turn(i: int, text: str, speaker: str = "Sam", role: str = "user", session: str = "s1") -> MemoryTurn:
    return MemoryTurn(f"t{i}", session, T0 + timedelta(minutes=i), speaker, role, text)  # type: ignore[arg-type]


@pytest.mark.parametrize(("text", "expected"), [
    ("My sister Ilse packed up and relocated to Quito last weekend.", ["ilse", "quito"]),
    ("Just got back from Buenos Aires, I ate far too much.", ["buenos aires"]),
    ("Buenos Aires was freezing.", ["buenos aires", "aires"]),
    ("Hey Maya, got a minute?", ["hey maya", "maya"]),
    ("Prague was lovely.", []),  # one capitalised word opening a sentence may be any word
    ("I went there on Monday in May.", []),  # the pronoun and dates are not names
    ("We saw Pale Harbour's show. Then Ana's cat.", ["pale harbour", "ana"]),
])
def test_entities_are_capitalised_words_not_opening_a_sentence(text: str, expected: list[str]) -> None:
    assert entities(text) == expected


def test_query_entities_are_one_to_three_word_runs() -> None:
    assert query_entities(["sister", "buenos", "aires"]) == [
        "sister", "buenos", "aires", "sister buenos", "buenos aires", "sister buenos aires"]


def test_topics_of_turns_and_questions_follow_the_thresholds() -> None:
    topics = TopicVectors(names=["outdoors", "money"], matrix=np.eye(2, 3, dtype=np.float32))
    turns = unit_rows(np.array([[0.9, 0.1, 0.0], [0.1, 0.0, 1.0], [0.2, 0.9, 0.0]], dtype=np.float32))
    # Each turn keeps its nearest topic when it is close enough; the second is near neither.
    assert topics.of_turns(turns) == [["outdoors"], [], ["money"]]
    # A turn of a word or two carries no topic, however near its vector is.
    texts = ["We hiked up the ridge", "Talk soon!", "The bills came in today"]
    assert topics.of_turns(turns, texts) == [["outdoors"], [], ["money"]]
    assert topics.of_turns(turns[:1], ["Talk soon!"]) == [[]]
    assert topics.of_query(np.array([0.7, 0.5, 0.5], dtype=np.float32)) == ["outdoors", "money"]
    assert topics.of_query(np.array([0.1, 0.1, 1.0], dtype=np.float32)) == []
    assert TopicVectors().of_query(np.ones(3)) == []  # not embedded yet: no topics
    # A question's words naming a topic count even when its vector is far from every topic.
    assert topics.of_query(np.array([0.0, 0.0, 1.0], dtype=np.float32), ["weekend", "camping"]) == ["outdoors"]
    assert topics.of_query(np.array([0.0, 0.0, 1.0], dtype=np.float32), ["environmental"]) == []


def test_keys_are_written_with_the_turn_listed_with_it_and_forgotten_with_it(tmp_path: Path) -> None:
    with SqliteMemoryStore(tmp_path / "m.db", embedder=WordHashEmbedder()) as store:
        store.add_many([turn(1, "My sister Ilse moved to Quito"), turn(2, "Oh, Ilse loves the mountains", "Maya",
                                                                          "assistant")])
        keys = store.keys(kind="entity")
        assert {(k.key, k.turn_id) for k in keys} == {("ilse", "t1"), ("quito", "t1"), ("ilse", "t2")}
        assert store.keys(kind="topic")  # the embedder's topics: every turn has its nearest one or none
        assert {k.key for k in store.keys(turn_id="t1", kind="entity")} == {"ilse", "quito"}
        assert [k.turn_id for k in store.keys(containing="qui")] == ["t1"]
        assert store.keys(containing="%") == []  # LIKE wildcards are letters here
        assert store.forget("t1")
        assert all(k.turn_id == "t2" for k in store.keys())
        rows = store._conn.execute("SELECT count(*) FROM turn_keys k LEFT JOIN turns t ON t.rowid = k.turn_rowid "
                                   "WHERE t.rowid IS NULL").fetchone()[0]
        assert rows == 0  # nothing derived from the forgotten turn is left
        assert store.wipe() == 1
        assert store.keys() == [] and store.stats().keys == 0


def test_a_derived_key_can_be_forgotten_alone(tmp_path: Path) -> None:
    with SqliteMemoryStore(tmp_path / "m.db", embedder=None) as store:
        store.add_many([turn(1, "My sister Ilse moved to Quito"), turn(2, "Then Ilse called from Quito")], embed=False)
        assert store.forget_key("entity", "quito", "t1") == 1
        assert [k.turn_id for k in store.keys(kind="entity", containing="quito")] == ["t2"]
        assert store.forget_key("entity", "ilse") == 2
        assert store.count() == 2  # the turns stay
        assert store.forget_key("entity", "nobody") == 0


def test_a_question_naming_an_entity_brings_in_the_turns_holding_it(tmp_path: Path) -> None:
    weights = RankingWeights(entity_weight=1.0, topic_weight=0.0, per_session=0)
    with SqliteMemoryStore(tmp_path / "m.db", embedder=WordHashEmbedder(), weights=weights) as store:
        store.add_many([turn(1, "She is going to Quito"), turn(2, "Who is she going to marry, the sister?"),
                        turn(3, "My sister moved away, she is going to marry soon")])
        assert store.search("who is my sister in quito going to marry", 1, floor=0.0)[0].id == "t1"
        store.use_weights(RankingWeights(entity_weight=0.0, topic_weight=0.0, per_session=0))
        assert store.search("who is my sister in quito going to marry", 1, floor=0.0)[0].id != "t1"


def test_a_question_s_topic_brings_in_the_asked_person_s_turns_on_it(tmp_path: Path) -> None:
    embedder = WordHashEmbedder()
    question = "Would Maya enjoy a weekend away?"
    evidence = "I hauled my tent up to the ridge and slept above the clouds"
    chatter = "Maya would enjoy a quiet weekend, she said"
    weights = RankingWeights(topic_weight=1.0, entity_weight=0.0, per_session=0)
    with SqliteMemoryStore(tmp_path / "m.db", embedder=embedder, weights=weights) as store:
        q, e, c = embedder.embed_sync([question, evidence, chatter])
        # Two topics: one between the question and the evidence, one that is the chatter's own.
        store._search.topics = TopicVectors(names=["outdoors", "talk"], matrix=unit_rows(np.stack([q + e, c])))
        store.add_many([turn(1, evidence, "Maya", "assistant", "a"), turn(2, chatter, "Sam", "user", "b"),
                        turn(3, evidence + " too", "Sam", "user", "c")])
        assert {k.key for k in store.keys(kind="topic", turn_id="t1")} == {"outdoors"}
        ids = [h.id for h in store.search(question, 3, floor=0.0)]
        # Maya's turn on the topic first; Sam's identical one gets no lift (he was not asked about).
        assert ids[0] == "t1" and ids.index("t3") > ids.index("t1")
        store.use_weights(RankingWeights(topic_weight=0.0, entity_weight=0.0, per_session=0))
        assert store.search(question, 1, floor=0.0)[0].id == "t2"


def test_hits_spread_over_sessions_before_a_session_repeats() -> None:
    candidates = [Candidate(i, similarity=1.0 - i / 10) for i in range(5)]
    facts = {i: (f"t{i}", f"text {i}", None) for i in range(5)}
    sessions = {0: "a", 1: "a", 2: "a", 3: "b", 4: "c"}
    picked = distinct(candidates, facts, lambda _: None, 3, 0.0, set(), sessions, per_session=1)
    assert [c.rowid for c in picked] == [0, 3, 4]
    # Too few other sessions: the session's later hits fill the k in their order.
    picked = distinct(candidates[:3], facts, lambda _: None, 3, 0.0, set(), sessions, per_session=1)
    assert [c.rowid for c in picked] == [0, 1, 2]
    assert [c.rowid for c in distinct(candidates, facts, lambda _: None, 3, 0.0, set())] == [0, 1, 2]


def test_a_hit_close_to_one_taken_waits_behind_the_rest() -> None:
    candidates = [Candidate(i, similarity=1.0 - i / 10) for i in range(4)]
    facts = {i: (f"t{i}", f"text {i}", None) for i in range(4)}
    sessions = {i: f"s{i}" for i in range(4)}
    # 0 and 1 say nearly the same (cousin's trip to Bali / to Vienna); 2 and 3 say other things.
    vectors = {0: np.array([1.0, 0.0, 0.0]), 1: unit_rows(np.array([[0.9, 0.3, 0.0]]))[0],
               2: np.array([0.0, 1.0, 0.0]), 3: np.array([0.0, 0.0, 1.0])}
    picked = distinct(candidates, facts, vectors.get, 3, 0.0, set(), sessions, similar_cosine=0.75)
    assert [c.rowid for c in picked] == [0, 2, 3]
    picked = distinct(candidates[:2], facts, vectors.get, 2, 0.0, set(), sessions, similar_cosine=0.75)
    assert [c.rowid for c in picked] == [0, 1]  # nothing else: the close one fills the k
    assert [c.rowid for c in distinct(candidates, facts, vectors.get, 3, 0.0, set(), None, similar_cosine=0.75)] == [
        0, 1, 2]  # no sessions (a question naming a time): no spread


def test_an_older_database_gains_the_keys_table_and_its_turns_get_keys_as_they_are_re_embedded(tmp_path: Path) -> None:
    path = tmp_path / "memory.db"
    conn = sqlite3.connect(path)
    for migration in MIGRATIONS[:2]:
        for statement in migration:
            conn.execute(statement)
    conn.execute("PRAGMA user_version = 2")
    conn.execute("INSERT INTO turns (id, session, time, speaker, role, text, embed_version) "
                 "VALUES ('old1', 's', ?, 'Sam', 'user', 'My sister Ilse moved to Quito', 1)", (T0.isoformat(),))
    conn.execute("INSERT INTO turns_words (rowid, text, speaker, when_words, answers) "
                 "VALUES (1, 'My sister Ilse moved to Quito', 'Sam', '', '')")
    conn.commit()
    conn.close()
    with SqliteMemoryStore(path, embedder=WordHashEmbedder()) as store:
        assert store.schema_version() == len(MIGRATIONS) == 5
        assert store.keys() == [] and store.pending_vectors() == 1
        assert store.backfill() == 1
        assert {k.key for k in store.keys(kind="entity")} == {"ilse", "quito"}
        assert store.get("old1") is not None


def test_the_cli_lists_and_forgets_keys_and_forget_takes_them_along(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"id": "a1", "session": "s1", "time": "2025-01-05T10:00:00+00:00", "speaker": "Sam",
                                  "role": "user", "text": "My dog Biscuit loves Brighton beach"}) + "\n")

    def run(*args: str):
        return CliRunner().invoke(main, ["--data-dir", str(tmp_path), *args])

    assert run("memory", "import", str(source), "--no-embed").exit_code == 0
    listed = run("memory", "keys", "--kind", "entity")
    assert listed.exit_code == 0, listed.output
    assert [line.split()[:3] for line in listed.output.splitlines() if line.strip() and not line.startswith("(")] == [
        ["biscuit", "a1", "entity"], ["brighton", "a1", "entity"]]
    assert run("memory", "forget-key", "entity", "Brighton").exit_code == 0
    assert "brighton" not in run("memory", "keys").output
    missing = run("memory", "forget-key", "entity", "brighton")
    assert missing.exit_code != 0 and "no entity key" in missing.output
    assert run("memory", "forget", "a1").exit_code == 0
    assert "biscuit" not in run("memory", "keys").output


def test_a_question_hit_can_bring_its_answer_after_it(tmp_path: Path) -> None:
    weights = RankingWeights(answer_neighbours=True, question_penalty=0.0, per_session=0)
    with SqliteMemoryStore(tmp_path / "m.db", embedder=WordHashEmbedder(), weights=weights) as store:
        store.add_many([turn(1, "Did the parcel I sent arrive?", "Maya", "assistant"),
                        turn(2, "Yes, on Friday, thank you so much"),
                        turn(3, "The parcel service lost a parcel of mine once", session="s2")])
        assert [h.id for h in store.search("did the parcel I sent arrive", 2, floor=0.0)] == ["t1", "t2"]
        store.use_weights(RankingWeights(question_penalty=0.0, per_session=0))  # off, the default
        assert [h.id for h in store.search("did the parcel I sent arrive", 2, floor=0.0)] == ["t1", "t3"]
