"""How recall ranks stored turns: the constants, the query's words, and pure functions over candidates.

Nothing here touches the database or the embedder: the search (memory/search.py) gathers the
vector, word and date rankings, and these functions fuse them, weigh in priors, recency and
restatements, and pick distinct hits. Each is table-tested.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import numpy as np

from convers.memory.sentences import sentences

Fusion = Literal["rrf", "blend", "words"]
SearchMode = Literal["fused", "vector", "lexical"]

# BM25 column weights: the words said count most; who said it, when, and the question it answers
# help break ties.
FTS_WEIGHTS = (1.0, 0.5, 0.3, 0.5)
# Lexical evidence as a similarity in [0, 1): bm25 / (bm25 + LEXICAL_HALF). A BM25 of 6 (a rare
# word or two matched) maps to 0.5.
LEXICAL_HALF = 6.0
# Reciprocal rank fusion constant from Cormack et al. (2009); larger flattens rank differences.
RRF_K = 60
# Fusion and weights: chosen on `convers bench memory` (the generated conversations, tuned on
# half of them and reported on the other half; see docs/memory.md for the table).
DEFAULT_FUSION: Fusion = "blend"
RRF_VECTOR_WEIGHT = 1.0
RRF_LEXICAL_WEIGHT = 1.0
# blend: similarity = BLEND_VECTOR_WEIGHT * cosine + (1 - weight) * lexical.
BLEND_VECTOR_WEIGHT = 0.85
# A time expression in the question ("two weeks ago") adds a ranking of the turns from that span
# (by meaning) with this RRF weight, or this much to a blended score.
DATE_WEIGHT = 1.0
# Newer candidates get up to this much more (as RRF weight of a ranking by time among the
# candidates, or added to a blended score): a plan that changed is found in its latest form.
RECENCY_WEIGHT = 0.0
# A turn that is a question counts its cosine this much less; a turn with under SHORT_TURN_WORDS
# content words up to SHORT_PENALTY less (see `prior`).
QUESTION_PENALTY = 0.3
SHORT_PENALTY = 0.3
SHORT_TURN_WORDS = 3
# The question penalty is scaled by how much of the turn asks: the share of its content words in
# sentences ending with "?" (`question_share`). A real turn often tells something and then asks
# back ("We brought a beagle home last week. How about you?"); it is not a question. False: the whole
# penalty for any turn ending with "?". `convers bench memory --long-turns`, tuning half, recall@5:
# 0.473 without, 0.602 with (the plain run has no such turn and does not move).
QUESTION_SHARE = True
# A later turn of the same speaker this close in meaning to a better-ranked earlier one takes its
# place (just above it): when a plan changes, the latest version is what the user means. 0: off,
# the default: on `convers bench memory` it lifted changed plans (0.59 -> 0.81 held out) only without
# the margin below, and then the synthetic set's recall@1 fell from 0.76 to 0.15 (newer remarks
# naming the same person pushed the answer down); with the margin it gained nothing.
SUPERSEDE_COSINE = 0.0
# ... and only when the later turn matches the question nearly as well (similarity at most this much lower):
# a newer remark that merely names the same person must not push the answer down.
SUPERSEDE_MARGIN = 0.05
# Only the best this many candidates are compared for superseding (pairwise, so kept small).
SUPERSEDE_TOP = 20
# A turn holding an entity key the question names, or a topic key the question is near (of the
# person asked about), gets this much added to its blended score (or these as RRF weights).
# On the tuning half of `convers bench memory`, recall@5: topic 0 0.576, 0.05 0.637, 0.1 0.645,
# 0.15 0.651, 0.2 0.651 (the smaller of the best two), with MiniLM. With all-mpnet-base-v2 (the
# default embedder since): 0.1 against 0.15, 0.787 against 0.781, and the same or better on the
# other two corpora (--long-turns 0.738 / 0.739, --echoed-words 0.5 0.854 / 0.848). Entity keys
# changed nothing there: its questions name places and people that words already find (BM25);
# they are kept for the turns that only a name links.
ENTITY_WEIGHT = 0.05
TOPIC_WEIGHT = 0.1
# At most this many hits of one session among the first k while other sessions have candidates:
# facts said on different days ("what instruments does she play?") need room beside the best
# session. Not for a question that names a time (that day's turns are what it wants). 0: no cap.
# On the tuning half of `convers bench memory`, with SIMILAR_COSINE: 1 a session 0.667, 2 0.683, no cap
# 0.683 (held out the same). 2 keeps one evening from filling the prompt at no cost.
PER_SESSION = 2
# A candidate this close in meaning to a hit already taken waits behind the rest (a softer
# NEAR_DUPLICATE_COSINE: maximal marginal relevance in its simplest form). "My cousin keeps talking
# about a trip to Bali / Vienna / Norway" would otherwise fill the top five for "which places have I
# visited?". Tuning half, recall@5: off 0.651, 0.9 0.654, 0.85 0.656, 0.8 0.670, 0.75 0.678 (0.683
# with 2 a session), 0.7 0.667, 0.65 0.636, 0.6 0.599, with MiniLM. Stored vectors carry the
# speaker, so the same person's turns are closer to each other than their texts are, and more so
# with all-mpnet-base-v2 (the default embedder since): there a changed plan waits behind the plan
# it replaced ("we booked Sicily" / "change of plans, Rome instead"), and 0.8 finds more of the
# one-sentence turns (tuning half, topic weight 0.1: 0.787 -> 0.802; questions in their evidence's
# words 0.854 -> 0.872) but less where turns carry small talk (--long-turns 0.738 -> 0.728, held
# out 0.701 -> 0.665), as real turns do. So 0.75 stays.
SIMILAR_COSINE = 0.75
# A hit that is a question brings the next turn of its session (the answer) in right after it. Off:
# on the tuning half of `convers bench memory` it cost recall@5 (0.640 -> 0.637); questions rarely rank
# high (QUESTION_PENALTY), and the answer displaces a hit.
ANSWER_NEIGHBOURS = False
# A fused candidate's cosine loses this much x its dot product with the store's mean vector (above
# the candidates' average; memory/centring.py): template chatter near every question sinks. On the
# tuning half of `convers bench memory`, recall@5: 0 0.683, 0.1 0.682, 0.2 0.680, 0.3 0.692,
# 0.4 0.690, 0.5 0.692, 0.6 0.697, 0.7 0.696, 1.0 0.691.
CENTRE_WEIGHT = 0.6
# A question asking for a judgement about a person ("would Maya enjoy a hiking trip?") has its vector
# moved this far towards its nearest topic description (memory/judgement.py); 0: off. On the tuning
# half of `convers bench memory`, inference recall@5: 0 0.370, 0.1 0.370, 0.15 0.391, 0.2 0.422,
# 0.25 0.417, 0.3 0.417, 0.4 0.401, 0.7 0.391 (no other type has such questions). For every question
# at 0.2: recall@5 0.697 -> 0.635 (single-hop 0.683 -> 0.625, open-domain 0.775 -> 0.550).
JUDGEMENT_TOPIC_WEIGHT = 0.2
# Part vectors (memory/turn_parts.py, memory/part_index.py): a turn's cosine moves this far towards
# the cosine of its part nearest the question when that is higher (1: the best of its vectors; 0:
# the part is not used), per kind of part: its sentences, its clauses, the question it answers with
# the answer. Recall@5 on the tuning half of `convers bench memory --long-turns` (turns of several
# sentences; the plain run has no evidence turn of two sentences, and moves by 0.01 at most):
# none 0.602; sentences 0.5 0.617, 0.75 0.610, 1.0 0.618; with clauses 0.5 0.623, 0.75 0.620; with
# the question answered 0.25 0.619, 0.5 0.619. Clauses and answers gained within noise on both runs
# (plain: clauses 0.5 0.701, answers 0.5 0.711 against 0.702) and cost inference questions, so only
# sentences are stored (turn_parts.STORED_PART_KINDS).
SENTENCE_WEIGHT = 1.0
CLAUSE_WEIGHT = 0.0
CONTEXT_WEIGHT = 0.0
# A part's cosine is centred like its turn's before it lifts it (memory/part_index.py): small talk
# said in many turns sits near the mean. Long turns, tuning half: 0.618 centred, 0.609 not.
PART_CENTRING = True
# Observation keys (memory/observations.py, off unless `memory.observation_keys`): the question's
# OBSERVATION_TOP nearest observations that are OBSERVATION_COSINE close lift the turns they came
# from (of the person asked about) by OBSERVATION_WEIGHT, like a topic. With the packaged 135M
# model's notes, on the tuning half of `convers bench memory --observations`, recall@5: without
# 0.702; weight 0.05 0.702, 0.1 0.695, 0.15 0.679, 0.25 0.642; cosine 0.4 0.676, 0.6 0.686; top 3
# 0.694, 30 0.692: nothing gained, so these stay as first set (the topic's lift) for a capable model.
OBSERVATION_WEIGHT = 0.15
OBSERVATION_COSINE = 0.5
OBSERVATION_TOP = 10
# Each ranking (vectors, words, a time span, each kind of key) contributes this many candidates to
# fusion: a turn a key lifts, or one the words find, is compared only if it is among them. Recall@5
# on the tuning half of `convers bench memory` (plain / --long-turns): 25 0.689 / -, 50 0.702 /
# 0.618, 100 0.705 / 0.628, 150 0.707 / 0.629, 200 0.707 / -. At 10k turns 150 costs
# about 1 ms a search more than 50 (fetching and fusing the rows); docs/memory.md.
CANDIDATES = 150
# Two hits this close in meaning say the same thing; the prompt needs only one.
NEAR_DUPLICATE_COSINE = 0.97
# Longer questions are cut to this many characters (the embedder reads ~256 word pieces anyway)
# and to this many distinct words for the word index.
MAX_QUERY_CHARS = 2000
MAX_QUERY_TERMS = 48
STOPWORDS = frozenset(
    """a an the and or but if then so of to in on at by for with from about as into over after before
    is am are was were be been being do does did have has had i me my mine we us our you your he him his
    she her it its they them their this that these those what which who whom whose when where why how
    can could would should will shall may might must not no yes just also too very really there here
    tell told say said remember know think like get got go going s t don didn im ive id""".split()
)


@dataclass
class RankingWeights:
    """How the rankings are fused and weighed (the defaults are the constants above, chosen on the benchmark)."""

    fusion: Fusion = DEFAULT_FUSION
    blend_vector_weight: float = BLEND_VECTOR_WEIGHT
    rrf_vector_weight: float = RRF_VECTOR_WEIGHT
    rrf_lexical_weight: float = RRF_LEXICAL_WEIGHT
    date_weight: float = DATE_WEIGHT
    recency_weight: float = RECENCY_WEIGHT
    question_penalty: float = QUESTION_PENALTY
    short_penalty: float = SHORT_PENALTY
    supersede_cosine: float = SUPERSEDE_COSINE
    supersede_margin: float = SUPERSEDE_MARGIN
    lexical_half: float = LEXICAL_HALF
    entity_weight: float = ENTITY_WEIGHT
    topic_weight: float = TOPIC_WEIGHT
    per_session: int = PER_SESSION
    similar_cosine: float = SIMILAR_COSINE
    answer_neighbours: bool = ANSWER_NEIGHBOURS
    centre_weight: float = CENTRE_WEIGHT
    judgement_topic_weight: float = JUDGEMENT_TOPIC_WEIGHT
    observation_weight: float = OBSERVATION_WEIGHT
    observation_cosine: float = OBSERVATION_COSINE
    observation_top: int = OBSERVATION_TOP
    candidates: int = CANDIDATES
    sentence_weight: float = SENTENCE_WEIGHT
    clause_weight: float = CLAUSE_WEIGHT
    context_weight: float = CONTEXT_WEIGHT
    part_centring: bool = PART_CENTRING
    question_share: bool = QUESTION_SHARE

    def part_weights(self) -> dict[str, float]:
        """How far each kind of part vector moves its turn's cosine (memory/part_index.py)."""
        return {"sentence": self.sentence_weight, "clause": self.clause_weight, "context": self.context_weight}


@dataclass
class Candidate:
    """One stored turn under consideration, with what each ranking said about it."""

    rowid: int
    cosine: float | None = None
    lexical: float = 0.0
    vector_rank: int | None = None
    lexical_rank: int | None = None
    span_rank: int | None = None
    entity_rank: int | None = None
    topic_rank: int | None = None
    observation_rank: int | None = None
    similarity: float = 0.0
    order: float = 0.0


def query_terms(text: str) -> list[str]:
    """Content words of a question, for the FTS5 query (stopwords would match everything)."""
    words = re.findall(r"[^\W_]+", text.lower())
    seen: dict[str, None] = {}
    for word in words:
        if word not in STOPWORDS and (len(word) > 1 or word.isdigit() or not word.isascii()):
            seen.setdefault(word, None)
        if len(seen) == MAX_QUERY_TERMS:
            break
    return list(seen)


def seconds(iso: str) -> float:
    """POSIX seconds of a stored ISO time (a time without a zone is UTC)."""
    moment = datetime.fromisoformat(iso)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def prior(text: str, weights: RankingWeights) -> float:
    """How much a turn's cosine counts: a question or a two-word "oh nice!" carries little to recall.

    Question queries resemble question turns in style ("what did you have for dinner?") and short
    turns are mostly their speaker's vector; both crowd out the turn that holds the answer.
    """
    value = 1.0
    if text.rstrip().endswith("?"):
        value -= weights.question_penalty * (question_share(text) if weights.question_share else 1.0)
    content = len(query_terms(text))
    if content < SHORT_TURN_WORDS:
        value -= weights.short_penalty * (SHORT_TURN_WORDS - content) / SHORT_TURN_WORDS
    return value


def question_share(text: str) -> float:
    """How much of a turn asks: the share of its content words in its sentences that end with "?"
    (1 for a question of no content words, "Really?"; 0 when no sentence asks)."""
    counts = [(len(query_terms(s)), s.endswith("?")) for s in sentences(text)]
    total = sum(n for n, _ in counts)
    if not total:
        return 1.0 if text.rstrip().endswith("?") else 0.0
    return sum(n for n, asks in counts if asks) / total


def gather(vector_hits: Sequence[tuple[int, float]], lexical_hits: Sequence[tuple[int, float]],
           span_hits: Sequence[tuple[int, float]], lexical_half: float) -> dict[int, Candidate]:
    """One candidate per turn any ranking found, with its ranks, its cosine and its BM25 as a similarity."""
    found: dict[int, Candidate] = {}
    for rank, (rowid, cosine) in enumerate(vector_hits):
        found[rowid] = Candidate(rowid, cosine=cosine, vector_rank=rank)
    for rank, (rowid, cosine) in enumerate(span_hits):
        candidate = found.setdefault(rowid, Candidate(rowid, cosine=cosine))
        candidate.span_rank = rank
    for rank, (rowid, bm25) in enumerate(lexical_hits):
        candidate = found.setdefault(rowid, Candidate(rowid))
        candidate.lexical = bm25 / (bm25 + lexical_half)
        candidate.lexical_rank = rank
    return found


def mark_keys(found: dict[int, Candidate], entity_hits: Sequence[tuple[int, float]],
              topic_hits: Sequence[tuple[int, float]], observation_hits: Sequence[tuple[int, float]] = ()) -> None:
    """Adds the turns found by their derived keys (rowid, cosine; best first) and their ranks by key."""
    for rank, (rowid, cosine) in enumerate(entity_hits):
        found.setdefault(rowid, Candidate(rowid, cosine=cosine)).entity_rank = rank
    for rank, (rowid, cosine) in enumerate(topic_hits):
        found.setdefault(rowid, Candidate(rowid, cosine=cosine)).topic_rank = rank
    for rank, (rowid, cosine) in enumerate(observation_hits):
        found.setdefault(rowid, Candidate(rowid, cosine=cosine)).observation_rank = rank


def fuse(candidates: Iterable[Candidate], weights: RankingWeights, fusion: Fusion, *,
         only_words: bool, only_vectors: bool) -> list[Candidate]:
    """Each candidate's similarity (cosine, words, or their blend) and order; best first."""
    out = list(candidates)
    for c in out:
        if c.cosine is None or only_words:
            c.similarity = c.lexical  # no vector for this row (or no query vector): words are all we have
        elif only_vectors:
            c.similarity = max(c.cosine, 0.0)
        else:
            weight = weights.blend_vector_weight
            c.similarity = weight * max(c.cosine, 0.0) + (1 - weight) * c.lexical
        if fusion == "rrf":
            c.order = sum(
                w / (RRF_K + r + 1)
                for w, r in ((weights.rrf_vector_weight, c.vector_rank), (weights.rrf_lexical_weight, c.lexical_rank),
                             (weights.date_weight, c.span_rank), (weights.entity_weight, c.entity_rank),
                             (weights.topic_weight, c.topic_rank),
                             (weights.observation_weight, c.observation_rank))
                if r is not None
            )
        else:
            c.order = (c.similarity + (weights.date_weight * 0.15 if c.span_rank is not None else 0.0)
                       + (weights.entity_weight if c.entity_rank is not None else 0.0)
                       + (weights.topic_weight if c.topic_rank is not None else 0.0)
                       + (weights.observation_weight if c.observation_rank is not None else 0.0))
    return best_first(out)


def best_first(candidates: Iterable[Candidate]) -> list[Candidate]:
    return sorted(candidates, key=lambda c: (-c.order, -c.similarity, c.rowid))


def prefer_recent(candidates: list[Candidate], times: dict[int, float], weight: float,
                  fusion: Fusion) -> list[Candidate]:
    """Adds a ranking by time (newest first) among the candidates with a known time, weighted by `weight`."""
    dated = sorted((c for c in candidates if c.rowid in times), key=lambda c: times[c.rowid], reverse=True)
    for rank, c in enumerate(dated):
        if fusion == "rrf":
            c.order += weight / (RRF_K + rank + 1)
        else:
            c.order += weight * 0.1 * (1 - rank / max(len(dated) - 1, 1))
    return best_first(candidates)


def supersede(candidates: list[Candidate], vectors: dict[int, np.ndarray], times: dict[int, float],
              speakers: dict[int, str], weights: RankingWeights) -> list[Candidate]:
    """Lifts a newer restatement by the same speaker just above the older turn it updates.

    Only the best SUPERSEDE_TOP candidates with a vector, a time and a speaker are compared.
    """
    top = [c for c in candidates[:SUPERSEDE_TOP] if c.rowid in vectors and c.rowid in times and c.rowid in speakers]
    if len(top) < 2:
        return candidates
    matrix = np.stack([vectors[c.rowid] for c in top])
    close = (matrix @ matrix.T) >= weights.supersede_cosine
    for i, older in enumerate(top):
        for j in range(i + 1, len(top)):
            newer = top[j]
            if (close[i, j] and speakers[older.rowid] == speakers[newer.rowid]
                    and times[newer.rowid] > times[older.rowid]
                    and newer.similarity >= older.similarity - weights.supersede_margin):
                newer.order = max(newer.order, older.order + 1e-6)
    return best_first(candidates)


def distinct(candidates: Iterable[Candidate], facts: Mapping[int, tuple[str, str, str | None]],
             vector_of: Callable[[int], np.ndarray | None], k: int, floor: float,
             excluded: set[str], sessions: Mapping[int, str] | None = None, per_session: int = 0,
             similar_cosine: float = 1.0) -> list[Candidate]:
    """The first `k` candidates above `floor` that say something new, spread over what is said.

    `facts` maps a rowid to (turn id, text, id of the turn a digest was made from). A turn is left
    out when it, or the turn it digests, is excluded or already shown, when its text repeats one
    shown, or when its vector (`vector_of`) is within NEAR_DUPLICATE_COSINE of one shown. With
    `sessions` (rowid -> session; None turns the spread off), a candidate waits behind the others
    when its session already has `per_session` hits (0: no cap) or when it is `similar_cosine`
    close to a hit already taken; those waiting fill the k, in order, only when the rest run out.
    """
    if sessions is None or not (per_session or similar_cosine < 1.0):
        return list(itertools.islice(_distinct(candidates, facts, vector_of, floor, excluded), k))
    first: list[Candidate] = []
    later: list[Candidate] = []
    shown: dict[str, int] = {}
    kept: list[np.ndarray] = []
    for c in _distinct(candidates, facts, vector_of, floor, excluded):
        session = sessions.get(c.rowid, "")
        shown[session] = shown.get(session, 0) + 1
        vector = vector_of(c.rowid) if similar_cosine < 1.0 else None
        similar = vector is not None and any(float(vector @ v) >= similar_cosine for v in kept)
        if (not per_session or shown[session] <= per_session) and not similar:
            first.append(c)
            if vector is not None:
                kept.append(vector)
        else:
            later.append(c)
        if len(first) == k:
            break
    return (first + later)[:k]


def _distinct(candidates: Iterable[Candidate], facts: Mapping[int, tuple[str, str, str | None]],
              vector_of: Callable[[int], np.ndarray | None], floor: float,
              excluded: set[str]) -> Iterator[Candidate]:
    """The candidates above `floor` that say something new, lazily (see `distinct`)."""
    seen_texts: set[str] = set()
    seen_sources: set[str] = set()
    kept_vectors: list[np.ndarray] = []
    for c in candidates:
        fact = facts.get(c.rowid)
        if fact is None or c.similarity < floor:
            continue
        turn_id, text, source_id = fact
        source = source_id or turn_id
        normalised = " ".join(text.lower().split())
        repeated = turn_id in excluded or source in excluded or normalised in seen_texts or source in seen_sources
        vector = None if repeated else vector_of(c.rowid)
        seen_texts.add(normalised)
        seen_sources.add(source)
        if repeated or (vector is not None and any(float(vector @ v) >= NEAR_DUPLICATE_COSINE for v in kept_vectors)):
            # A duplicate of something shown (or left out): its copies and its digest are duplicates too.
            continue
        if vector is not None:
            kept_vectors.append(vector)
        yield c
