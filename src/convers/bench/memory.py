"""`convers bench memory`: recall on long generated conversations, search latency, and the synthetic set.

Parts:
1. **Conversations** (bench/memory_corpus.py): 8 conversations of ~380 turns between the user and a
   named friend, 544 questions of five types with evidence turn ids. Each conversation goes into its
   own store (one person's memory), in its own time zone, every turn embedded for real.
   Rankings are compared on conversations 0-3 (the tuning half) and reported on 4-7 (held out);
   the chosen ranking is the best on the tuning half. recall@k is the share of a question's
   evidence turns among the top k (a multi-hop question with one of its two turns found counts a
   half); the session hit rate is the share of questions with a top-k hit from an evidence session.
2. **Recall settings of the conversation**: recall@k for k = 1..10 and the similarity of true
   evidence against the best hit for questions with no answer (which sets the floor).
3. **Latency** at 10k and 100k stored turns, query embedding included (real MiniLM, one query at a
   time), and the first query after a start (with the warm-up CompanionMemory does) against the tenth.
   Embedding 100k turns on this machine would take over half an hour, so the latency stores hold
   the corpus text repeated (real words for the word index) with random unit vectors; the JSON says so.
4. **Synthetic** (bench/memory_synthetic.py): the original set, facts far apart in topic.

Over 400 lines: a benchmark script with four parts that share one store set-up and one report;
nothing in the product imports it.
"""

from __future__ import annotations

import hashlib
import platform
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from zoneinfo import ZoneInfo

import numpy as np

from convers.bench.memory_corpus import (
    QUESTION_TYPES,
    BenchConversation,
    BenchQuestion,
    build_corpus,
)
from convers.bench.results import write_json_result
from convers.bench.summary import summarise
from convers.contracts.memory import MemoryTurn
from convers.memory.ranking import RankingWeights
from convers.memory.speakers import QUERY_SPEAKER_WEIGHT, SPEAKER_WEIGHT
from convers.memory.store import SqliteMemoryStore
from convers.memory.turn_parts import PART_KINDS
from convers.memory.vectors import embed_blocking

if TYPE_CHECKING:
    from convers.config import Settings
    from convers.contracts.embedder import Embedder

NEGATIVES = ["What does {X} think about cryptocurrency?", "How did {Xs} scuba diving exam go?",
             "What colour is {Xs} motorbike?", "Which language is {X} learning on the app?",
             "What did {X} say about the solar eclipse?", "How many goals did {Xs} son score?",
             "What did {X} buy at the antiques fair?", "Where did {X} go skiing?",
             "What did {X} think of the new tax rules?", "Who won {Xs} chess tournament?"]


class Ranking:
    """One way to rank: how turns are stored (the speaker weights), how searched (`mode`), and the
    store's `RankingWeights` (any of its fields by name; the rest keep the store's defaults)."""

    def __init__(self, name: str, *, speaker_weight: float = SPEAKER_WEIGHT,
                 query_speaker_weight: float = QUERY_SPEAKER_WEIGHT, mode: str = "fused", **weights: Any) -> None:
        self.name = name
        # Stored vector = text + speaker_weight x the speaker label (0: bare text).
        self.speaker_weight = speaker_weight
        self.query_speaker_weight = query_speaker_weight
        self.mode = mode
        self.weights = RankingWeights(**weights)

    def but(self, **weights: Any) -> Ranking:
        """The same ranking with some weights changed."""
        return Ranking(self.name, speaker_weight=self.speaker_weight, query_speaker_weight=self.query_speaker_weight,
                       mode=self.mode, **{**asdict(self.weights), **weights})

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "speaker_weight": self.speaker_weight,
                "query_speaker_weight": self.query_speaker_weight, "mode": self.mode, **asdict(self.weights)}


def default_rankings() -> list[Ranking]:
    """What is compared: the ranking before this benchmark existed, one change at a time, and grids."""
    # What issue 26 added (derived keys, sessions), off: the rankings from before it.
    # What its second round added (centring, the judgement topic), off: the rows built on the first.
    # What its third round added (sentence vectors, the question share, 150 candidates), off: the rows
    # built on the first two.
    round1: dict[str, Any] = dict(centre_weight=0.0, judgement_topic_weight=0.0, sentence_weight=0.0,
                                  question_share=False, candidates=50)
    off = dict(entity_weight=0.0, topic_weight=0.0, per_session=0, similar_cosine=1.0, **round1)
    before = dict(speaker_weight=0.0, query_speaker_weight=0.0, fusion="blend", date_weight=0.0,
                  question_penalty=0.0, short_penalty=0.0, supersede_cosine=0.0, **off)
    rankings = [
        Ranking("before: bare text, blend 0.85", **before),
        Ranking("before, words only", **{**before, "mode": "lexical"}),
        Ranking("before, vector only", **{**before, "mode": "vector"}),
        Ranking("before, rrf", **{**before, "fusion": "rrf"}),
        Ranking("+ dates", **{**before, "date_weight": 1.0}),
        Ranking("+ dates + speaker", **{**before, "date_weight": 1.0, "speaker_weight": 0.5,
                                         "query_speaker_weight": 0.4}),
        Ranking("+ dates + speaker + priors", **{**before, "date_weight": 1.0, "speaker_weight": 0.5,
                                                 "query_speaker_weight": 0.4, "question_penalty": 0.3,
                                                 "short_penalty": 0.3}),
        Ranking("previous defaults (no keys, no session spread)", **off),
        Ranking("previous defaults, words only", mode="lexical", **off),
        Ranking("previous defaults, vector only", mode="vector", **off),
        Ranking("+ entity keys", topic_weight=0.0, per_session=0, similar_cosine=1.0, **round1),
        Ranking("+ topic keys", entity_weight=0.0, per_session=0, similar_cosine=1.0, **round1),
        Ranking("+ session spread", entity_weight=0.0, topic_weight=0.0, similar_cosine=1.0, **round1),
        Ranking("+ similar spread", entity_weight=0.0, topic_weight=0.0, per_session=0, **round1),
        Ranking("all, no similar spread", similar_cosine=1.0),
        Ranking("all, no session cap", per_session=0),
        Ranking("all, 1 per session", per_session=1),
        Ranking("all, similar 0.7", similar_cosine=0.7),
        Ranking("all, similar 0.8", similar_cosine=0.8),
        Ranking("all, topic 0.05", topic_weight=0.05),
        Ranking("all, topic 0.15", topic_weight=0.15),
        Ranking("all, entity 0.1", entity_weight=0.1),
        Ranking("all, answers after questions", answer_neighbours=True),
        Ranking("all, rrf", fusion="rrf"),
        Ranking("all, blend 0.5", blend_vector_weight=0.5),
        Ranking("all, blend 0.6", blend_vector_weight=0.6),
        Ranking("all, blend 0.7", blend_vector_weight=0.7),
        Ranking("all, blend 0.75", blend_vector_weight=0.75),
        Ranking("round 1 defaults (no centring, no judgement topic)", **round1),
        Ranking("round 2 defaults (no sentence vectors, whole-turn question prior, 50 candidates)",
                sentence_weight=0.0, question_share=False, candidates=50),
        Ranking("all, no centring", centre_weight=0.0),
        Ranking("all, centring 0.3", centre_weight=0.3),
        Ranking("all, centring 1.0", centre_weight=1.0),
        Ranking("all, no judgement topic", judgement_topic_weight=0.0),
        Ranking("all, judgement topic 0.3", judgement_topic_weight=0.3),
        Ranking("all, no sentence vectors", sentence_weight=0.0),
        Ranking("all, sentence vectors 0.5", sentence_weight=0.5),
        Ranking("all, sentence vectors not centred", part_centring=False),
        Ranking("all, clause vectors 0.5", clause_weight=0.5),
        Ranking("all, answered-question vectors 0.5", context_weight=0.5),
        Ranking("all, whole-turn question prior", question_share=False),
        Ranking("all, 50 candidates", candidates=50),
        Ranking("all, 100 candidates", candidates=100),
        Ranking("all, words only", mode="lexical"),
        Ranking("all, vector only", mode="vector"),
    ]
    for penalty in (0.15, 0.45):
        rankings.append(Ranking(f"all, question penalty {penalty}", question_penalty=penalty))
    rankings.append(Ranking("all (the defaults)"))
    return rankings


def observation_rankings() -> list[Ranking]:
    """With `--observations`: the defaults with the observation keys' lift, and a grid around it. The other
    rows are run without it (weight 0), so they read as in a run without `--observations`."""
    rankings = [Ranking("all + observation keys")]
    for weight in (0.05, 0.1, 0.25):
        rankings.append(Ranking(f"all + observation keys, weight {weight}", observation_weight=weight))
    for cosine in (0.4, 0.6):
        rankings.append(Ranking(f"all + observation keys, cosine {cosine}", observation_cosine=cosine))
    for top in (3, 30):
        rankings.append(Ranking(f"all + observation keys, top {top}", observation_top=top))
    return rankings


# The latency stores repeat the corpus's turns; each copy's vector gets noise of this length, so copies
# are not exact duplicates (cosine ~0.9 to the original).
LATENCY_NOISE = 0.5


def _load_average() -> str:
    """The 1, 5 and 15 minute load averages (the latency goal is for an idle machine), or 'unknown'."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


@dataclass
class BenchConfig:
    conversations: int = 8
    seed: int = 13
    tune_conversations: int = 4  # the first N choose the ranking; the rest are held out
    latency_sizes: list[int] = field(default_factory=lambda: [10000, 100000])
    latency_queries: int = 200
    synthetic: bool = True
    synthetic_sizes: list[int] = field(default_factory=lambda: [1000, 10000])
    # Optional folder where embeddings are kept between runs (keyed by embedder and text), and the
    # language model's observation notes (bench/memory_observations.py).
    cache_dir: Path | None = None
    # Observation keys written by the configured language model for every turn worth one.
    observations: bool = False
    # Every turn wrapped in small talk (bench/memory_long_turns.py): turns of several sentences.
    long_turns: bool = False
    # The share of questions asked in their evidence's words (memory_corpus.echo_words); 0: all paraphrase.
    echoed_words: float = 0.0


def _times_ms(seconds: Sequence[float]) -> dict[str, float | int | None]:
    return summarise(seconds, ("p50", "p95", "max"), digits=2, scale=1000, suffix="_ms")


class _Vectors:
    """Embeds texts once per run (and per cache folder), in batches."""

    def __init__(self, embedder: Embedder, cache_dir: Path | None) -> None:
        self.embedder = embedder
        self.cache_dir = cache_dir
        self.embedded = 0

    def __call__(self, texts: list[str]) -> np.ndarray:
        if self.cache_dir is not None:
            digest = hashlib.sha1("\n".join([getattr(self.embedder, "name", "?"), *texts]).encode()).hexdigest()
            path = self.cache_dir / f"vectors-{digest}.npy"
            if path.exists():
                return np.load(path)
        vectors = embed_blocking(self.embedder, texts)
        self.embedded += len(texts)
        if self.cache_dir is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            np.save(path, vectors)
        return vectors


class _CachedEmbedder:
    """The conversations' stores' embedder: each text embedded once per run (its part vectors, the
    speaker labels, the topic descriptions), the batches a store asks for kept in `vectors`' folder.
    Each text is embedded alone by the int8 encoder, so a cached vector is the one it would make."""

    def __init__(self, embedder: Embedder, vectors: _Vectors) -> None:
        self.name = getattr(embedder, "name", "?")
        self.dimension = getattr(embedder, "dimension", None)
        self._vectors = vectors
        self._memo: dict[str, np.ndarray] = {}

    def embed_sync(self, texts: list[str]) -> np.ndarray:
        missing = list(dict.fromkeys(t for t in texts if t not in self._memo))
        if missing:
            self._memo.update(zip(missing, self._vectors(missing), strict=True))
        return np.stack([self._memo[t] for t in texts])

    async def embed(self, texts: list[str]) -> np.ndarray:
        return self.embed_sync(texts)


@dataclass
class _Prepared:
    conversation: BenchConversation
    stores: dict[float, SqliteMemoryStore]  # by speaker weight
    query_vectors: np.ndarray
    negatives: list[BenchQuestion]
    negative_vectors: np.ndarray


def _negatives(conversation: BenchConversation) -> list[BenchQuestion]:
    asked = conversation.turns[-1].time + timedelta(days=1)
    out = []
    for n, template in enumerate(NEGATIVES):
        for who in ("user", "friend"):
            if who == "user":
                text = template.format(X="I", Xs="my").replace("does I ", "do I ")
            else:
                text = template.format(X=conversation.friend, Xs=f"{conversation.friend}'s")
            out.append(BenchQuestion(f"{conversation.name}-neg{n}{who[0]}", conversation.name, text, "none", (), asked))
    return out


def _search(store: SqliteMemoryStore, ranking: Ranking, text: str, vector: np.ndarray | None, k: int,
            now: datetime, floor: float = 0.0) -> list[Any]:
    store.use_weights(ranking.weights, query_speaker_weight=ranking.query_speaker_weight)
    return store.search(text, k, vector=vector, mode=ranking.mode, floor=floor, now=now)  # type: ignore[arg-type]


def _evaluate(prepared: list[_Prepared], ranking: Ranking, k_max: int = 10) -> dict[str, Any]:
    """recall@1..k_max per question type, and session hit rate @5 / @10."""
    by_type: dict[str, list[list[float]]] = {t: [] for t in QUESTION_TYPES}
    sessions_hit: dict[str, list[tuple[bool, bool]]] = {t: [] for t in QUESTION_TYPES}
    for p in prepared:
        store = p.stores[ranking.speaker_weight]
        vectors = p.query_vectors
        session_of = {t.id: t.session for t in p.conversation.turns}
        for question, vector in zip(p.conversation.questions, vectors, strict=True):
            hits = _search(store, ranking, question.text, vector, k_max, question.asked_at)
            ids = [h.id for h in hits]
            evidence = set(question.evidence)
            by_type[question.kind].append(
                [len(evidence & set(ids[:k])) / len(evidence) for k in range(1, k_max + 1)]
            )
            wanted = {session_of[e] for e in evidence}
            sessions = [session_of.get(i) for i in ids]
            sessions_hit[question.kind].append((bool(wanted & set(sessions[:5])), bool(wanted & set(sessions[:10]))))
    out: dict[str, Any] = {"types": {}}
    every = [row for rows in by_type.values() for row in rows]
    every_sessions = [row for rows in sessions_hit.values() for row in rows]

    def summary(rows: list[list[float]], session_rows: list[tuple[bool, bool]]) -> dict[str, Any]:
        matrix = np.asarray(rows)
        return {
            "questions": len(rows),
            "recall@1": round(float(matrix[:, 0].mean()), 4),
            "recall@5": round(float(matrix[:, 4].mean()), 4),
            "recall@10": round(float(matrix[:, 9].mean()), 4),
            "recall_at_k": [round(float(v), 4) for v in matrix.mean(axis=0)],
            "session_hit@5": round(float(np.mean([a for a, _ in session_rows])), 4),
            "session_hit@10": round(float(np.mean([b for _, b in session_rows])), 4),
        }

    out["all"] = summary(every, every_sessions)
    for kind in QUESTION_TYPES:
        if by_type[kind]:
            out["types"][kind] = summary(by_type[kind], sessions_hit[kind])
    out["worst_type_recall@5"] = min(v["recall@5"] for v in out["types"].values())
    return out


def _floor_profile(prepared: list[_Prepared], ranking: Ranking, k: int) -> dict[str, Any]:
    """Similarity of true evidence hits vs the best hit for questions without an answer, and what floors cost."""
    evidence_scores: list[float] = []
    negative_scores: list[float] = []
    per_question: list[tuple[set[str], list[tuple[str, float]]]] = []
    for p in prepared:
        store = p.stores[ranking.speaker_weight]
        for question, vector in zip(p.conversation.questions, p.query_vectors, strict=True):
            hits = _search(store, ranking, question.text, vector, k, question.asked_at)
            per_question.append((set(question.evidence), [(h.id, h.score) for h in hits]))
            evidence_scores += [h.score for h in hits if h.id in question.evidence]
        for question, vector in zip(p.negatives, p.negative_vectors, strict=True):
            hits = _search(store, ranking, question.text, vector, 1, question.asked_at)
            negative_scores.append(hits[0].score if hits else 0.0)
    floors = {}
    for floor in (0.0, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5):
        kept = [len(ev & {i for i, s in hits if s >= floor}) / len(ev) for ev, hits in per_question]
        floors[str(floor)] = {
            f"recall@{k}": round(float(np.mean(kept)), 4),
            "unanswerable_with_no_hit": round(float(np.mean([s < floor for s in negative_scores])), 4),
        }
    q = lambda xs, p: round(float(np.quantile(xs, p)), 3) if xs else None  # noqa: E731
    return {
        "evidence_similarity": {"p05": q(evidence_scores, 0.05), "p10": q(evidence_scores, 0.1),
                                "p50": q(evidence_scores, 0.5)},
        "unanswerable_top1_similarity": {"p50": q(negative_scores, 0.5), "p90": q(negative_scores, 0.9),
                                         "max": q(negative_scores, 1.0)},
        "floors": floors,
    }


def _prepare(corpus: list[BenchConversation], rankings: list[Ranking], vectors: _Vectors, embedder: Embedder,
             folder: Path, progress: Callable[[str], None]) -> list[_Prepared]:
    """One store per conversation and speaker weight, every turn's text embedded once (real MiniLM)."""
    weights = sorted({r.speaker_weight for r in rankings})
    cached = cast("Embedder", _CachedEmbedder(embedder, vectors))
    prepared = []
    for conversation in corpus:
        progress(f"{conversation.name}: embedding {len(conversation.turns)} turns and "
                 f"{len(conversation.questions)} questions...")
        zone = ZoneInfo(conversation.zone)
        text_vectors = vectors([t.text for t in conversation.turns])
        stores = {}
        for weight in weights:
            # Every kind of part vector is stored: the rankings weigh them (0: not used).
            store = SqliteMemoryStore(folder / f"{conversation.name}-{weight}.db", embedder=cached, zone=zone,
                                      speaker_weight=weight, part_kinds=PART_KINDS)
            store.add_many(conversation.turns, vectors=text_vectors)
            stores[weight] = store
        negatives = _negatives(conversation)
        prepared.append(_Prepared(conversation, stores, vectors([q.text for q in conversation.questions]), negatives,
                                  vectors([q.text for q in negatives])))
    return prepared


def _latency(embedder: Embedder, new_embedder: Callable[[], Embedder], corpus: list[BenchConversation],
             vectors: _Vectors, sizes: list[int], queries: int, k: int, seed: int, folder: Path,
             progress: Callable[[str], None], notes: dict[str, list[str]] | None = None) -> list[dict[str, Any]]:
    """Search latency with the query embedded each time, at each size; first query after start vs tenth.

    Each stored turn is a corpus turn with its real vector plus noise (LATENCY_NOISE): the topic and
    name keys, and so the rows a question's keys bring in, are as many as real turns would have.
    """
    rng = np.random.default_rng(seed)
    texts = [t for c in corpus for t in c.turns]
    text_vectors = vectors([t.text for t in texts])
    questions = [(q, c) for c in corpus for q in c.questions]
    picks = random.Random(seed).sample(questions, min(queries, len(questions)))
    dimension = int(getattr(embedder, "dimension", 384))
    path = folder / "latency.db"
    rows: list[dict[str, Any]] = []
    store = SqliteMemoryStore(path, embedder=embedder, zone=UTC)
    stored = 0
    start = datetime(2024, 1, 1, 19, tzinfo=UTC)
    for size in sorted(sizes):
        progress(f"latency: filling the store to {size} turns (corpus turns repeated, their vectors with noise)...")
        while stored < size:
            count = min(5000, size - stored)
            batch = []
            for i in range(stored, stored + count):
                source = texts[i % len(texts)]
                batch.append(MemoryTurn(f"l{i}", f"ls{i // 20}", start + timedelta(minutes=7 * i), source.speaker,
                                        source.role, source.text))
            noise = rng.standard_normal((count, dimension)).astype(np.float32) * (LATENCY_NOISE / np.sqrt(dimension))
            store.add_many(batch, vectors=text_vectors[np.arange(stored, stored + count) % len(texts)] + noise)
            if notes:
                # Each copy of a turn holds its notes (one vector per note text, as in a real store).
                copies: dict[str, list[str]] = {}
                for i, turn in zip(range(stored, stored + count), batch, strict=True):
                    copies.setdefault(texts[i % len(texts)].id, []).append(turn.id)
                for source_id, ids in copies.items():
                    if notes.get(source_id):
                        store.add_observations(ids, notes[source_id])
            stored += count
        store.warm_up()
        samples, search_only, embed_only = [], [], []
        for question, _ in picks:
            # What a caller without a vector gets: the store embeds the question while it searches words.
            t0 = time.perf_counter()
            store.search(question.text, k, now=question.asked_at)
            samples.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            vector = store.embed_query(question.text)
            t1 = time.perf_counter()
            store.search(question.text, k, vector=vector, now=question.asked_at)  # the vector known already
            search_only.append(time.perf_counter() - t1)
            embed_only.append(t1 - t0)
        progress(f"latency: first queries after a restart at {size} turns...")
        starts = {}
        for warm in (False, True):
            fresh_embedder = new_embedder()  # a restart: the model is not loaded yet
            fresh = SqliteMemoryStore(path, embedder=fresh_embedder, zone=UTC)
            warm_s = None
            if warm:
                t0 = time.perf_counter()
                embed_blocking(fresh_embedder, ["hello"])  # what CompanionMemory does at start
                fresh.warm_up()
                warm_s = round(time.perf_counter() - t0, 3)
            first = []
            for question, _ in picks[:10]:
                t0 = time.perf_counter()
                fresh.search(question.text, k, now=question.asked_at)
                first.append(round((time.perf_counter() - t0) * 1000, 2))
            fresh.close()
            starts["warmed" if warm else "cold"] = {"warm_up_s": warm_s, "first_ms": first[0], "tenth_ms": first[9],
                                                    "first_ten_ms": first}
        rows.append({"size": store.count(kind=None), "with_query_embedding": _times_ms(samples),
                     "search_only": _times_ms(search_only), "embedding_only": _times_ms(embed_only),
                     "after_start": starts})
    store.close()
    return rows


def _observations(settings: Settings, corpus: list[BenchConversation], prepared: list[_Prepared],
                  config: BenchConfig, progress: Callable[[str], None]) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """Every turn's observation notes (by turn id) from the configured language model, stored in the
    conversations' stores; and what was written, for the result."""
    from convers import registry
    from convers.bench.memory_observations import model_answers
    from convers.memory.observations import needs_observations, parse

    name = registry.provider_name("llm", settings)
    llm = registry.create("llm", name, settings)
    model = f"{name}:{Path(str(getattr(llm, 'model_path', getattr(llm, 'model', '?')))).name}"
    asked = [t for c in corpus for t in c.turns if needs_observations(t.text)]
    cache = (config.cache_dir or settings.data_path / "bench-cache") / "observations.json"
    started = time.perf_counter()
    answers = model_answers(llm, model, asked, cache, progress)
    by_id = {t.id: t for t in asked}
    notes = {turn_id: parse(answer, by_id[turn_id].speaker, by_id[turn_id].text) for turn_id, answer in answers.items()}
    progress("observations: storing them with their vectors...")
    for p in prepared:
        for store in p.stores.values():
            for turn in p.conversation.turns:
                if notes.get(turn.id):
                    store.add_observations([turn.id], notes[turn.id])
    written = [n for n in notes.values() if n]
    return notes, {"model": model, "cache": str(cache), "turns_asked": len(asked), "turns_with_notes": len(written),
                   "notes": sum(len(n) for n in written), "seconds": round(time.perf_counter() - started, 1),
                   "examples": [{"turn": by_id[i].text, "notes": n} for i, n in list(notes.items())[:: max(1, len(notes) // 12)]
                                if n][:12]}


def run_benchmark(settings: Settings, config: BenchConfig, progress: Callable[[str], None] = print,
                  rankings: list[Ranking] | None = None) -> dict[str, Any]:
    from convers.app.wiring import build

    def make_embedder() -> Embedder:
        return build("embedder", settings)

    embedder = make_embedder()
    rankings = rankings or default_rankings()
    corpus = build_corpus(config.conversations, config.seed, config.echoed_words)
    if config.long_turns:
        from convers.bench.memory_long_turns import lengthen

        corpus = [lengthen(c, config.seed) for c in corpus]
    vectors = _Vectors(embedder, config.cache_dir)
    result: dict[str, Any] = {
        "benchmark": "memory",
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "processor": platform.processor() or platform.machine()},
        "embedder": getattr(embedder, "name", str(embedder)),
        # Whether embeddings came from a cache, not where it is: results carry no machine paths.
        "config": {**{k: v for k, v in asdict(config).items() if k != "cache_dir"}, "cached": config.cache_dir is not None},
        "corpus": {
            "conversations": len(corpus), "turns": [len(c.turns) for c in corpus], "long_turns": config.long_turns,
            "echoed_words": config.echoed_words,
            "questions": sum(len(c.questions) for c in corpus),
            "questions_by_type": {t: sum(q.kind == t for c in corpus for q in c.questions) for t in QUESTION_TYPES},
            "tune": [c.name for c in corpus[: config.tune_conversations]],
            "held_out": [c.name for c in corpus[config.tune_conversations:]],
        },
    }
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="convers-bench-") as folder_name:
        folder = Path(folder_name)
        prepared = _prepare(corpus, rankings, vectors, embedder, folder, progress)
        result["timings"] = {"embed_s": round(time.perf_counter() - started, 1), "texts_embedded": vectors.embedded}
        notes: dict[str, list[str]] | None = None
        if config.observations:
            notes, result["observations"] = _observations(settings, corpus, prepared, config, progress)
            rankings = [*(r.but(observation_weight=0.0) for r in rankings), *observation_rankings()]
        tune, held_out = prepared[: config.tune_conversations], prepared[config.tune_conversations:]
        progress(f"comparing {len(rankings)} rankings...")
        table = []
        for ranking in rankings:
            table.append({"ranking": ranking.as_dict(), "tune": _evaluate(tune, ranking),
                          "held_out": _evaluate(held_out, ranking)})
        # Best on the tuning half: overall recall@5, and no type left far behind.
        best = max(table, key=lambda row: (row["tune"]["all"]["recall@5"] + 0.5 * row["tune"]["worst_type_recall@5"]))
        result["rankings"] = table
        result["chosen"] = best["ranking"]["name"]
        # The conversation's k and floor are set for the ranking it uses: the store's defaults.
        # (Without the observation keys' lift: they are off by default, `memory.observation_keys`.)
        defaults = Ranking("all (the defaults)", observation_weight=0.0)
        result["recall_settings"] = {"ranking": defaults.name, "k": 10, **_floor_profile(held_out, defaults, 10),
                                     "recall_at_k": _evaluate(held_out, defaults)["all"]["recall_at_k"]}
        for p in prepared:
            for store in p.stores.values():
                store.close()
        if config.latency_sizes:
            load = _load_average()
            result["latency"] = _latency(embedder, make_embedder, corpus, vectors, config.latency_sizes,
                                         config.latency_queries, settings.memory.recall_k, config.seed, folder,
                                         progress, notes)
            result["latency_note"] = ("stores filled with the corpus turns repeated (real words for the word index, "
                                      f"their real vectors plus noise of length {LATENCY_NOISE}, so topic keys are "
                                      "as common as in real turns); every query embedded with the real embedder; "
                                      f"1/5/15-minute load average before: {load}"
                                      + ("; every copy of a turn holds its observation keys (--observations)"
                                         if notes else ""))
    if config.synthetic:
        from convers.bench.memory_synthetic import BenchConfig as SyntheticConfig
        from convers.bench.memory_synthetic import run_synthetic

        result["synthetic"] = run_synthetic(settings, SyntheticConfig(sizes=config.synthetic_sizes), embedder,
                                            progress)
    return result


def print_table(result: dict[str, Any], echo: Callable[[str], None] = print) -> None:
    corpus = result["corpus"]
    echo(f"\nrecall on {corpus['conversations']} generated conversations ({corpus['questions']} questions); "
         f"tuned on {', '.join(corpus['tune'])}, held out: {', '.join(corpus['held_out'])}")
    header = "".join(f"{t[:12]:>13}" for t in QUESTION_TYPES)
    echo(f"{'ranking':<44}{'tune R@5':>9}{'held R@5':>9}{'R@10':>7}{'sess@5':>7}{header}")
    for row in result["rankings"]:
        held = row["held_out"]
        types = "".join(f"{held['types'][t]['recall@5']:>13.3f}" for t in QUESTION_TYPES)
        mark = "*" if row["ranking"]["name"] == result["chosen"] else " "
        echo(f"{mark}{row['ranking']['name']:<43}{row['tune']['all']['recall@5']:>9.3f}{held['all']['recall@5']:>9.3f}"
             f"{held['all']['recall@10']:>7.3f}{held['all']['session_hit@5']:>7.3f}{types}")
    settings = result["recall_settings"]
    echo(f"\nbest on the tuning half: {result['chosen']}; the defaults' held-out recall@k, k = 1..10: "
         f"{settings['recall_at_k']}")
    echo(f"evidence similarity {settings['evidence_similarity']}, unanswerable best hit "
         f"{settings['unanswerable_top1_similarity']}")
    for floor, row in settings["floors"].items():
        echo(f"  floor {floor:>5}: recall@10 {row['recall@10']:.3f}, unanswerable questions with no hit "
             f"{row['unanswerable_with_no_hit']:.2f}")
    for row in result.get("latency", []):
        q, s, e = row["with_query_embedding"], row["search_only"], row.get("embedding_only", {})
        starts = row["after_start"]
        echo(f"\n{row['size']:>7} turns: search with query embedding p50 {q['p50_ms']} / p95 {q['p95_ms']} ms "
             f"(search alone p50 {s['p50_ms']} / p95 {s['p95_ms']} ms, embedding alone p50 {e.get('p50_ms')} / "
             f"p95 {e.get('p95_ms')} ms); after a start, cold first "
             f"{starts['cold']['first_ms']} ms, warmed first {starts['warmed']['first_ms']} ms, tenth "
             f"{starts['warmed']['tenth_ms']} ms")
    if "synthetic" in result:
        from convers.bench.memory_synthetic import print_synthetic_table

        print_synthetic_table(result["synthetic"], echo)


def write_result(result: dict[str, Any], out: Path | None = None) -> Path:
    """The result as JSON at `out`, or under bench/results/."""
    return write_json_result(result, out, "memory")
