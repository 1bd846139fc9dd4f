"""Table tests of recall's pure ranking functions (memory/ranking.py): no database, no embedder."""

from __future__ import annotations

import numpy as np
import pytest

from convers.memory.ranking import (
    NEAR_DUPLICATE_COSINE,
    RRF_K,
    Candidate,
    RankingWeights,
    distinct,
    fuse,
    gather,
    prefer_recent,
    prior,
    query_terms,
    seconds,
    supersede,
)

WEIGHTS = RankingWeights()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("What did Maya say about her new job?", ["maya", "new", "job"]),
        ("the and of", []),
        ("Café in Zürich, 2 days", ["café", "zürich", "2", "days"]),
        ("dog dog DOG", ["dog"]),
        ("", []),
    ],
)
def test_query_terms_keep_content_words_once(text: str, expected: list[str]) -> None:
    assert query_terms(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I started the new job at the bakery on Monday", 1.0),
        ("Did you start the new job at the bakery?", 1.0 - WEIGHTS.question_penalty),
        ("Oh nice!", 1.0 - WEIGHTS.short_penalty / 3),  # two content words of the three a turn needs
        ("Really?", 1.0 - WEIGHTS.question_penalty - WEIGHTS.short_penalty),
        # Telling something and asking back is not a question; a reaction before a question is a quarter of it.
        ("We finally brought home a beagle from the shelter. How about you?", 1.0),
        ("Oh wow, that's great! How was your week?", 1.0 - WEIGHTS.question_penalty / 4),
    ],
)
def test_prior_weighs_down_questions_and_short_turns(text: str, expected: float) -> None:
    assert prior(text, WEIGHTS) == pytest.approx(expected)


def test_the_whole_turn_counts_as_a_question_without_question_share() -> None:
    whole = RankingWeights(question_share=False)
    assert prior("We brought home a beagle from the shelter. How about you?", whole) == 1.0 - whole.question_penalty


def test_seconds_reads_a_time_without_a_zone_as_utc() -> None:
    assert seconds("2026-05-03T10:00:00") == seconds("2026-05-03T10:00:00+00:00")
    assert seconds("2026-05-03T12:00:00+02:00") == seconds("2026-05-03T10:00:00+00:00")


def test_gather_keeps_each_rankings_rank_and_maps_bm25_to_a_similarity() -> None:
    found = gather([(1, 0.9), (2, 0.5)], [(2, 6.0), (3, 18.0)], [(4, 0.4)], lexical_half=6.0)
    assert found[1] == Candidate(1, cosine=0.9, vector_rank=0)
    assert (found[2].vector_rank, found[2].lexical_rank, found[2].lexical) == (1, 0, 0.5)
    assert (found[3].cosine, found[3].lexical_rank, found[3].lexical) == (None, 1, 0.75)
    assert (found[4].span_rank, found[4].cosine, found[4].vector_rank) == (0, 0.4, None)


@pytest.mark.parametrize(
    ("fusion", "only_words", "only_vectors", "expected_order", "expected_similarity"),
    [
        # blend: 0.85 x cosine + 0.15 x words; the row found by words only has no cosine.
        ("blend", False, False, [1, 2, 3], {1: 0.85 * 0.9, 2: 0.85 * 0.8 + 0.15 * 0.5, 3: 0.75}),
        # no query vector: words are all there is.
        ("blend", True, False, [3, 2, 1], {1: 0.0, 2: 0.5, 3: 0.75}),
        # no word matches: the cosine alone.
        ("blend", False, True, [1, 2, 3], {1: 0.9, 2: 0.8, 3: 0.75}),
        # rrf: the order is by summed reciprocal ranks; row 2 is in both rankings.
        ("rrf", False, False, [2, 1, 3], {1: 0.85 * 0.9, 2: 0.85 * 0.8 + 0.15 * 0.5, 3: 0.75}),
    ],
)
def test_fuse_orders_and_scores_by_the_fusion(fusion: str, only_words: bool, only_vectors: bool,
                                              expected_order: list[int], expected_similarity: dict[int, float]) -> None:
    found = gather([(1, 0.9), (2, 0.8)], [(3, 18.0), (2, 6.0)], [], lexical_half=6.0)
    ranked = fuse(found.values(), WEIGHTS, fusion, only_words=only_words, only_vectors=only_vectors)  # type: ignore[arg-type]
    assert [c.rowid for c in ranked] == expected_order
    for c in ranked:
        assert c.similarity == pytest.approx(expected_similarity[c.rowid])
    if fusion == "rrf":
        assert ranked[0].order == pytest.approx(1 / (RRF_K + 2) + 1 / (RRF_K + 2))


def test_a_turn_from_the_span_a_question_names_moves_up() -> None:
    found = gather([(1, 0.80), (2, 0.78)], [], [(2, 0.78)], lexical_half=6.0)
    assert [c.rowid for c in fuse(found.values(), WEIGHTS, "blend", only_words=False, only_vectors=True)] == [2, 1]
    no_dates = RankingWeights(date_weight=0.0)
    found = gather([(1, 0.80), (2, 0.78)], [], [(2, 0.78)], lexical_half=6.0)
    assert [c.rowid for c in fuse(found.values(), no_dates, "blend", only_words=False, only_vectors=True)] == [1, 2]


def test_prefer_recent_lifts_the_newest_and_leaves_undated_rows_alone() -> None:
    candidates = [Candidate(1, similarity=0.60, order=0.60), Candidate(2, similarity=0.59, order=0.59),
                  Candidate(3, similarity=0.10, order=0.10)]
    ranked = prefer_recent(candidates, {1: 100.0, 2: 200.0}, weight=1.0, fusion="blend")
    assert [c.rowid for c in ranked] == [2, 1, 3]
    assert ranked[-1].order == 0.10  # no time known: not moved


def test_supersede_lifts_a_later_restatement_by_the_same_speaker_only() -> None:
    a, b = np.array([1.0, 0.0], dtype=np.float32), np.array([0.96, 0.28], dtype=np.float32)
    weights = RankingWeights(supersede_cosine=0.9, supersede_margin=0.1)

    def ranked(speaker_of_newer: str, newer_similarity: float) -> list[int]:
        candidates = [Candidate(1, similarity=0.8, order=0.8), Candidate(2, similarity=newer_similarity,
                                                                        order=newer_similarity)]
        out = supersede(candidates, {1: a, 2: b}, {1: 100.0, 2: 200.0}, {1: "Sam", 2: speaker_of_newer}, weights)
        return [c.rowid for c in out]

    assert ranked("Sam", 0.75) == [2, 1]  # same speaker, later, nearly as good a match
    assert ranked("Maya", 0.75) == [1, 2]  # someone else said it
    assert ranked("Sam", 0.5) == [1, 2]  # a much weaker match only names the same thing


def test_distinct_drops_repeats_digests_of_shown_turns_exclusions_and_low_scores() -> None:
    facts = {1: ("t1", "We adopted a beagle", None), 2: ("t2", "we  adopted a BEAGLE", None),
             3: ("t3", "Digest: the beagle", "t1"), 4: ("t4", "The beagle is called Biscuit", None),
             5: ("t5", "Biscuit chewed my shoes", None), 6: ("t6", "Unrelated", None),
             7: ("t7", "Excluded one", None)}
    close = NEAR_DUPLICATE_COSINE + 0.01
    vectors = {4: np.array([1.0, 0.0], dtype=np.float32),
               5: np.array([close, np.sqrt(1 - close**2)], dtype=np.float32)}  # says what turn 4 says
    candidates = [Candidate(r, similarity=s) for r, s in ((7, 0.95), (1, 0.9), (2, 0.85), (3, 0.8), (4, 0.7),
                                                        (5, 0.6), (6, 0.1))]
    chosen = distinct(candidates, facts, vectors.get, k=5, floor=0.2, excluded={"t7"})
    assert [c.rowid for c in chosen] == [1, 4]
    assert [c.rowid for c in distinct(candidates, facts, vectors.get, k=1, floor=0.0, excluded=set())] == [7]
    everything = distinct(candidates, facts, lambda rowid: None, k=10, floor=0.0, excluded=set())
    assert [c.rowid for c in everything] == [7, 1, 4, 5, 6]  # without vectors only the words tell repeats
