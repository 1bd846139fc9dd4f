"""Centring: a candidate's cosine less what it shares with every turn of the store.

MiniLM's vectors share a common direction, and the stored ones carry their speaker's label too
(speakers.py), so template chatter ("Dinner was dumplings", "my cousin keeps talking about a trip to
Crete") sits near the store's mean and is close to every question. Ranking by the cosine of the
question with (turn - mean) instead of with the turn is the cosine less the turn's dot product
with the mean (the rest is the same for every turn of one question). Only the fused candidates are
re-scored: the vector pass still picks them by the plain cosine.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from convers.memory.ranking import Candidate


def centre(candidates: Iterable[Candidate], shared: Mapping[int, float], weight: float) -> None:
    """Lowers each candidate's cosine by `weight` x (its vector's dot product with the store's mean,
    `shared` by rowid (VectorIndex.mean_dots), less the candidates' average of it), in place;
    candidates without a cosine or a vector are left.

    Measured against the candidates' own average, a typical turn keeps its cosine (and so the
    similarity floor keeps its meaning); only turns nearer the mean than their peers lose some.
    """
    if weight <= 0:
        return
    scored = [c for c in candidates if c.cosine is not None and c.rowid in shared]
    if not scored:
        return
    average = sum(shared[c.rowid] for c in scored) / len(scored)
    for c in scored:
        assert c.cosine is not None
        c.cosine -= weight * (shared[c.rowid] - average)
