"""Centring (memory/centring.py) and the store mean it needs (VectorIndex.mean)."""

from __future__ import annotations

import numpy as np
import pytest

from convers.memory.centring import centre
from convers.memory.ranking import Candidate
from convers.memory.vectors import HELD_DRIFT, VectorIndex


def _unit(*values: float) -> np.ndarray:
    vector = np.asarray(values, dtype=np.float32)
    return vector / np.linalg.norm(vector)


def _shared(vectors: dict[int, np.ndarray], mean: np.ndarray) -> dict[int, float]:
    return {rowid: float(vector @ mean) for rowid, vector in vectors.items()}


def test_index_mean_dots_are_each_stored_vectors_dot_with_the_mean() -> None:
    index = VectorIndex()
    assert index.mean_dots([1]) == {}
    a, b = _unit(1, 0, 0), _unit(0.6, 0.8, 0)
    index.add([1, 2], np.stack([a, b]))
    mean = (a + b) / 2
    dots = index.mean_dots([2, 1, 9])  # 9 is not stored
    assert dots.keys() == {1, 2}
    assert dots[1] == pytest.approx(float(a @ mean)) and dots[2] == pytest.approx(float(b @ mean))


def test_held_dots_follow_add_replace_and_remove_and_a_moved_vector() -> None:
    rng = np.random.default_rng(3)
    index = VectorIndex()
    vectors = rng.standard_normal((50, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index.add(list(range(1, 41)), vectors[:40])
    held = _unit(1, 2, 0, 0, 1, 0, 0, 3)
    first = index.held_dots([1, 2, 99], held)
    np.testing.assert_allclose(first, [vectors[0] @ held, vectors[1] @ held, 0.0], atol=1e-6)
    # Kept in step while the vector stays: new columns (past the first capacity), a replaced one, a removed one.
    index.add(list(range(41, 101)), np.tile(vectors[40:], (6, 1)))
    index.add([2], vectors[2:3])
    index.remove([1, 5])
    rowids = [2, 3, 40, 41, 100, 1]
    exact = [vectors[2] @ held, vectors[2] @ held, vectors[39] @ held, vectors[40] @ held, vectors[49] @ held, 0.0]
    np.testing.assert_allclose(index.held_dots(rowids, held), exact, atol=1e-6)
    # A vector that moved less than HELD_DRIFT keeps the dots it had; more, and they are computed anew.
    nudged = held + 0.1 * HELD_DRIFT * _unit(0, 0, 1, 0, 0, 0, 0, 0)
    np.testing.assert_allclose(index.held_dots([3], nudged), [vectors[2] @ held], atol=1e-6)
    moved = _unit(0, 0, 1, 0, 0, 0, 0, 0)
    np.testing.assert_allclose(index.held_dots([3, 41], moved), [vectors[2] @ moved, vectors[40] @ moved], atol=1e-6)


def test_index_mean_follows_add_replace_and_remove() -> None:
    index = VectorIndex()
    assert index.mean() is None
    a, b, c = _unit(1, 0, 0), _unit(0, 1, 0), _unit(0, 0, 1)
    index.add([1, 2], np.stack([a, b]))
    np.testing.assert_allclose(index.mean(), (a + b) / 2, atol=1e-6)
    index.add([2], np.stack([c]))  # replaces rowid 2's vector
    np.testing.assert_allclose(index.mean(), (a + c) / 2, atol=1e-6)
    index.add([3], np.stack([b]))
    index.remove([1])
    np.testing.assert_allclose(index.mean(), (c + b) / 2, atol=1e-6)
    index.remove([2, 3])
    assert index.mean() is None
    index.clear()
    index.add([4], np.stack([a]))
    np.testing.assert_allclose(index.mean(), a, atol=1e-6)


def test_centring_sinks_the_turn_nearest_the_store_mean() -> None:
    mean = _unit(1, 0, 0)
    vectors = {1: _unit(1, 0.2, 0), 2: _unit(0, 1, 0.2)}  # 1: chatter near the mean; 2: a distinct fact
    chatter, fact = Candidate(1, cosine=0.60), Candidate(2, cosine=0.55)
    centre([chatter, fact], _shared(vectors, mean), 0.6)
    assert chatter.cosine is not None and fact.cosine is not None
    assert fact.cosine > chatter.cosine
    # Measured against the candidates' average: one goes down as much as the other goes up.
    assert chatter.cosine + fact.cosine == pytest.approx(1.15, abs=1e-6)


def test_centring_leaves_candidates_without_a_vector_or_cosine_and_is_off_at_zero() -> None:
    mean = _unit(1, 0, 0)
    vectors = {1: _unit(1, 0, 0), 2: _unit(0, 1, 0)}
    words_only, no_vector = Candidate(1), Candidate(3, cosine=0.5)
    kept = Candidate(2, cosine=0.4)
    centre([words_only, no_vector, kept], _shared(vectors, mean), 0.6)
    assert words_only.cosine is None and no_vector.cosine == 0.5
    assert kept.cosine == pytest.approx(0.4)  # alone, it is its own average
    pair = [Candidate(1, cosine=0.5), Candidate(2, cosine=0.5)]
    centre(pair, _shared(vectors, mean), 0.0)
    centre(pair, {}, 0.6)
    assert [c.cosine for c in pair] == [0.5, 0.5]
