"""Judgement questions ("would Maya enjoy a hiking trip?") and their topic-moved vector (memory/judgement.py)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from convers.contracts.memory import MemoryTurn
from convers.memory.derived_keys import TopicVectors
from convers.memory.judgement import is_judgement, towards_topic
from convers.memory.store import SqliteMemoryStore
from tests.memory_doubles import WordHashEmbedder


@pytest.mark.parametrize("question", [
    "Would Maya enjoy a hiking trip?", "would a chef's workshop appeal to Leo?",
    "Is Maya the kind of person who'd like a library tour?", "Is he likely to sign a petition?",
    "Does she care about climate issues?", "Do I care about climate issues?",
])
def test_judgement_questions_are_recognised(question: str) -> None:
    assert is_judgement(question)


@pytest.mark.parametrize("question", [
    "Would you remind me tomorrow?", "What would Maya like for dinner?", "Where does Ana live?",
    "Is it raining?", "What did I cook two weeks ago?",
])
def test_other_questions_are_not(question: str) -> None:
    assert not is_judgement(question)


def test_vector_moves_towards_its_nearest_topic_and_the_input_is_kept() -> None:
    topics = TopicVectors(names=["a", "b"], matrix=np.eye(3, dtype=np.float32)[:2])
    vector = np.asarray([0.8, 0.1, 0.59], dtype=np.float32)
    kept = vector.copy()
    moved = towards_topic(vector, topics, 0.2)
    np.testing.assert_array_equal(vector, kept)
    assert np.linalg.norm(moved) == pytest.approx(1.0, abs=1e-5)
    assert moved[0] > vector[0] / np.linalg.norm(vector)  # nearer topic "a"
    assert moved[1] == pytest.approx(0.1 / np.linalg.norm(vector + [0.2, 0, 0]), abs=1e-5)  # "b" gets nothing
    assert towards_topic(vector, topics, 0.0) is vector
    assert towards_topic(vector, TopicVectors(), 0.2) is vector
    assert towards_topic(np.ones(4, dtype=np.float32), topics, 0.2).shape == (4,)  # another width: unchanged


def test_a_judgement_question_reaches_turns_on_its_topic(tmp_path) -> None:
    start = datetime(2025, 3, 3, 19, tzinfo=UTC)
    texts = ["A long nap would be nice.", "Camping in the mountains, trails all week, my tent survived."]
    embedder = WordHashEmbedder()
    with SqliteMemoryStore(tmp_path / "memory.db", embedder=embedder) as store:
        for i, text in enumerate(texts):
            store.add(MemoryTurn(f"t{i}", f"s{i}", start + timedelta(days=i), "Sam", "user", text))
        question = "Would I enjoy hiking?"  # the word-hash double puts it nearest "outdoors"
        vector = embedder.embed_sync([question])[0]
        kept = vector.copy()
        plain = replace(store.weights, judgement_topic_weight=0.0, topic_weight=0.0, centre_weight=0.0)
        store.use_weights(plain)
        before = [h.id for h in store.search(question, 2, vector=vector, floor=0.0)]
        store.use_weights(replace(plain, judgement_topic_weight=1.0))
        after = [h.id for h in store.search(question, 2, vector=vector, floor=0.0)]
        np.testing.assert_array_equal(vector, kept)  # the caller's vector (shared with the write) is untouched
    assert before[0] == "t0" and after[0] == "t1"
