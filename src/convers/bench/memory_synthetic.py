"""The synthetic part of `convers bench memory` (the original set): facts far apart in topic, filler between.

The data set is generated here (no download): synthetic people with facts stated once in some past
session, questions about those facts asked in other words, and chit-chat filler between them. Each
question knows its evidence turn, so recall@k is exact. Store sizes grow by adding filler sessions.

Embedding 100k turns with numpy MiniLM on two cores would take most of an hour, so the filler is
drawn from a fixed set of unique sentences that are embedded once; their vectors are reused for
every repeat. Facts, mentions and questions are all embedded for real. The JSON says so.
"""

from __future__ import annotations

import json
import platform
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from convers.bench.summary import summarise
from convers.contracts.memory import MemoryTurn
from convers.memory.store import SqliteMemoryStore
from convers.memory.vectors import embed_blocking

if TYPE_CHECKING:
    from convers.config import Settings
    from convers.contracts.embedder import Embedder

NAMES = """Ana Bilal Chiara Dmitri Esther Farid Greta Hiro Ines Jonas Keiko Lars Maya Nikhil Olga Pavel Quinn
Rosa Sven Tamsin Ugo Vera Wen Ximena Yusuf Zora Amara Bruno Celeste Dario Elif Felix Gwen Hamid Ilse Joaquin
Kofi Lena Mateo Noor Oskar Priya Rafael Saskia Tobias Uma Viktor Wanda Yara Zeno""".split()
RELATIONS = "sister brother cousin neighbour coworker friend aunt uncle boss roommate".split()
CITIES = "Lisbon Osaka Montreal Nairobi Tallinn Valparaiso Porto Hanoi Krakow Edinburgh Auckland Quito".split()
JOBS = "nurse architect baker pilot electrician teacher lawyer chemist carpenter journalist".split()
PETS = ["parrot", "tortoise", "greyhound", "ferret", "cat", "rabbit", "goldfish", "beagle"]
PET_NAMES = "Biscuit Pepper Mochi Waffles Juniper Nacho Pickle Olive Rocket Truffle".split()
HOBBIES = ["pottery", "rock climbing", "birdwatching", "chess", "sourdough baking", "salsa dancing",
           "sailing", "woodworking", "knitting", "astronomy"]
FOODS = ["peanuts", "shellfish", "gluten", "dairy", "eggs", "sesame", "kiwi"]
MONTHS = "January February March April May June July August September October November December".split()

# (statement, paraphrase question, keyword question). Paraphrases ask for the fact in other words,
# as people do; keyword questions reuse a rare word of the statement, where word search shines.
FACTS: tuple[tuple[str, str, str], ...] = (
    ("My {rel} {p} just moved to {city}, she found a flat near the harbour.", "Where does {p} live these days?",
     "What did I tell you about {p} and {city}?"),
    ("{p} started a new job as a {job} last month and loves it.", "What does {p} do for a living now?",
     "How is {p}'s new job going?"),
    ("{p} adopted a {pet} called {petname} over the weekend.", "What's the name of {p}'s new animal?",
     "How is {p}'s {pet} doing?"),
    ("Apparently {p} has gotten really into {hobby} lately.", "Which pastime has {p} taken up?",
     "Is {p} still doing {hobby}?"),
    ("{p}'s birthday is on {month} {day}, I must not forget it.", "When should I celebrate {p}'s big day?",
     "When is {p}'s birthday?"),
    ("{p} can't have {food}, it gives them a bad reaction.", "Is there anything {p} is allergic to?",
     "Can {p} eat {food}?"),
)
MENTIONS = (
    "I bumped into {p} at the market this morning.",
    "{p} called me yesterday but I missed it.",
    "I might have lunch with {p} next week.",
)
FILLER_SUBJECTS = ["The weather", "My commute", "The new café downstairs", "This week at work", "The garden",
                   "My sleep", "The train", "Dinner tonight", "The football match", "My running",
                   "The book I'm reading", "The neighbours' party", "The rent", "My back", "The podcast"]
FILLER_VERBS = ["was honestly", "turned out", "has been", "felt", "seemed", "is getting", "was a bit"]
FILLER_ENDS = ["pretty good", "exhausting", "kind of boring", "better than expected", "a total mess",
               "surprisingly fun", "too long", "quite relaxing", "annoying again", "really lovely",
               "a little strange", "nothing special", "stressful", "cheerful", "slow"]
# Filler that names the same people: near-distractors whose number grows with the store size.
PEOPLE_FILLER = ["I texted {p} about the weekend plans.", "{p} says hi, by the way.",
                 "I was thinking about {p} earlier today.", "{p} and I watched a film last night.",
                 "I owe {p} a phone call.", "{p} was in a good mood this morning.",
                 "I need to give {p} their umbrella back.", "{p} recommended a podcast to me."]
REPLIES = ["That sounds lovely.", "Oh no, I'm sorry to hear that.", "How did that make you feel?",
           "Tell me more about that.", "That's good news!", "Hmm, that does sound tiring.",
           "I hope tomorrow is easier.", "Ha, that made me smile."]
NEGATIVES = ["What is the capital of Peru?", "How do I fix a flat bicycle tyre?", "What did Ezekiel say about Mars?",
             "Which telescope should I buy?", "Do you know any good jokes about penguins?",
             "What's the boiling point of mercury?", "How tall is Mount Kilimanjaro?",
             "Where did Bartholomew go skiing?", "How many strings does a harp have?",
             "What should I plant in a shady balcony?"]


@dataclass
class BenchConfig:
    sizes: list[int] = field(default_factory=lambda: [1000, 10000])
    people: int = 40
    latency_queries: int = 200
    seed: int = 7
    k: int = 10
    blend_weights: tuple[float, ...] = (0.85,)


@dataclass
class Question:
    text: str
    evidence_id: str
    style: str  # "paraphrase" or "keyword"


@dataclass
class Corpus:
    """Evidence turns (facts and mentions), questions, and a generator of filler turns."""

    evidence: list[MemoryTurn]
    questions: list[Question]
    filler_texts: list[str]


def build_corpus(config: BenchConfig) -> Corpus:
    rng = random.Random(config.seed)
    people = NAMES[: min(config.people, len(NAMES))]
    evidence: list[MemoryTurn] = []
    questions: list[Question] = []
    start = datetime(2025, 1, 6, 18, 0, tzinfo=UTC)
    for n, person in enumerate(people):
        slots = {
            "p": person, "rel": rng.choice(RELATIONS), "city": rng.choice(CITIES), "job": rng.choice(JOBS),
            "pet": rng.choice(PETS), "petname": rng.choice(PET_NAMES), "hobby": rng.choice(HOBBIES),
            "food": rng.choice(FOODS), "month": rng.choice(MONTHS), "day": rng.randint(1, 28),
        }
        for f, (statement, paraphrase, keyword) in enumerate(FACTS):
            when = start + timedelta(days=rng.randint(0, 360), minutes=rng.randint(0, 600))
            turn_id = f"fact-{n}-{f}"
            evidence.append(MemoryTurn(turn_id, f"s-fact-{n}-{f}", when, "Sam", "user", statement.format(**slots)))
            questions.append(Question(paraphrase.format(**slots), turn_id, "paraphrase"))
            questions.append(Question(keyword.format(**slots), turn_id, "keyword"))
        for m, mention in enumerate(MENTIONS):
            when = start + timedelta(days=rng.randint(0, 360))
            evidence.append(MemoryTurn(f"mention-{n}-{m}", f"s-mention-{n}", when, "Sam", "user", mention.format(p=person)))
    filler = sorted({f"{s} {v} {e} today." for s in FILLER_SUBJECTS for v in FILLER_VERBS for e in FILLER_ENDS})
    filler += [t.format(p=p) for p in people for t in PEOPLE_FILLER]
    rng.shuffle(filler)
    return Corpus(evidence, questions, filler)


def filler_turns(corpus: Corpus, count: int, offset: int, seed: int) -> list[tuple[MemoryTurn, int]]:
    """`count` filler turns (with the index of their text in corpus.filler_texts or -1-reply index)."""
    rng = random.Random(seed + offset)
    out: list[tuple[MemoryTurn, int]] = []
    start = datetime(2024, 6, 1, tzinfo=UTC)
    for i in range(offset, offset + count):
        session = f"s-filler-{i // 20}"
        when = start + timedelta(minutes=i * 7)
        if i % 2 == 0:
            index = rng.randrange(len(corpus.filler_texts))
            out.append((MemoryTurn(f"filler-{i}", session, when, "Sam", "user", corpus.filler_texts[index]), index))
        else:
            index = rng.randrange(len(REPLIES))
            out.append((MemoryTurn(f"filler-{i}", session, when, "Juniper", "assistant", REPLIES[index]), -1 - index))
    return out


def _latency(seconds: list[float]) -> dict[str, float | int | None]:
    return summarise(seconds, ("p50", "p95"), digits=3, scale=1000, suffix="_ms", count=False)


def recall_at(store: SqliteMemoryStore, questions: list[Question], vectors: np.ndarray, k: int,
              **search: Any) -> dict[str, float]:
    ranks: list[int | None] = []
    for question, vector in zip(questions, vectors, strict=True):
        hits = store.search(question.text, k, vector=vector, floor=0.0, **search)
        ids = [h.id for h in hits]
        ranks.append(ids.index(question.evidence_id) if question.evidence_id in ids else None)
    result: dict[str, float] = {}
    for style in (None, "paraphrase", "keyword"):
        chosen = [r for r, q in zip(ranks, questions, strict=True) if style is None or q.style == style]
        prefix = "" if style is None else f"{style}_"
        for n in (1, 5, 10):
            result[f"{prefix}recall@{n}"] = round(sum(1 for r in chosen if r is not None and r < n) / len(chosen), 4)
    return result


def similarity_profile(store: SqliteMemoryStore, questions: list[Question], vectors: np.ndarray,
                       negatives: list[str], negative_vectors: np.ndarray) -> dict[str, Any]:
    """Fused similarity of evidence hits vs. the best hit for questions with no answer: sets the floor."""
    found: list[float] = []
    for question, vector in zip(questions, vectors, strict=True):
        for hit in store.search(question.text, 10, vector=vector, floor=0.0):
            if hit.id == question.evidence_id:
                found.append(hit.score)
    unrelated = [h[0].score for q, v in zip(negatives, negative_vectors, strict=True) if (h := store.search(q, 1, vector=v, floor=0.0))]
    q = lambda xs, p: round(float(np.quantile(xs, p)), 3) if xs else None  # noqa: E731
    return {
        "evidence_similarity": {"p05": q(found, 0.05), "p10": q(found, 0.10), "p50": q(found, 0.5)},
        "unrelated_top1_similarity": {"p50": q(unrelated, 0.5), "p90": q(unrelated, 0.9), "max": q(unrelated, 1.0)},
    }


def run_synthetic(settings: Settings, config: BenchConfig, embedder: Embedder,
                  progress: Callable[[str], None] = print) -> dict[str, Any]:
    """The original synthetic set at config.sizes stored turns."""
    corpus = build_corpus(config)
    timings: dict[str, float] = {}

    started = time.perf_counter()
    progress(f"embedding {len(corpus.filler_texts)} unique filler sentences and {len(corpus.evidence)} evidence turns...")
    filler_vectors = embed_blocking(embedder, corpus.filler_texts)
    reply_vectors = embed_blocking(embedder, REPLIES)
    evidence_vectors = embed_blocking(embedder, [t.text for t in corpus.evidence])
    question_vectors = embed_blocking(embedder, [q.text for q in corpus.questions])
    negative_vectors = embed_blocking(embedder, NEGATIVES)
    timings["embed_corpus_s"] = round(time.perf_counter() - started, 2)
    embedded = len(corpus.filler_texts) + len(REPLIES) + len(corpus.evidence)
    timings["embed_per_text_ms"] = round(1000 * timings["embed_corpus_s"] / (embedded + len(corpus.questions) + len(NEGATIVES)), 2)
    single = []
    for question in corpus.questions[:50]:
        t0 = time.perf_counter()
        embed_blocking(embedder, [question.text])
        single.append(time.perf_counter() - t0)
    query_embed = _latency(single)

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="convers-bench-") as folder:
        store = SqliteMemoryStore(Path(folder) / "memory.db", embedder=None)
        store.add_many(corpus.evidence, vectors=evidence_vectors)
        stored = len(corpus.evidence)
        for size in config.sizes:
            t0 = time.perf_counter()
            while stored < size:
                batch = filler_turns(corpus, min(2000, size - stored), stored, config.seed)
                vectors = np.stack([filler_vectors[i] if i >= 0 else reply_vectors[-1 - i] for _, i in batch])
                store.add_many([t for t, _ in batch], vectors=vectors)
                stored += len(batch)
            insert_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            store.search("warm up", 1, vector=question_vectors[0])  # loads the vector cache
            load_s = time.perf_counter() - t0
            progress(f"{stored} turns stored; measuring recall and latency...")
            row: dict[str, Any] = {"size": store.count(), "insert_s": round(insert_s, 2), "index_load_s": round(load_s, 3)}
            row["vector"] = recall_at(store, corpus.questions, question_vectors, config.k, mode="vector")
            row["lexical"] = recall_at(store, corpus.questions, question_vectors, config.k, mode="lexical")
            row["fused_rrf"] = recall_at(store, corpus.questions, question_vectors, config.k, fusion="rrf")
            defaults = store.weights
            for weight in config.blend_weights:
                store.use_weights(replace(defaults, blend_vector_weight=weight))
                row[f"fused_blend_{weight}"] = recall_at(store, corpus.questions, question_vectors, config.k, fusion="blend")
            store.use_weights(defaults)
            row["similarity"] = similarity_profile(store, corpus.questions, question_vectors, NEGATIVES, negative_vectors)
            latency: dict[str, Any] = {}
            rng = random.Random(config.seed)
            picks = [rng.randrange(len(corpus.questions)) for _ in range(config.latency_queries)]
            for mode in ("fused", "vector", "lexical"):
                samples = []
                for i in picks:
                    t0 = time.perf_counter()
                    store.search(corpus.questions[i].text, settings.memory.recall_k, vector=question_vectors[i], mode=mode)
                    samples.append(time.perf_counter() - t0)
                latency[mode] = _latency(samples)
            row["search_latency"] = latency
            rows.append(row)
        store.close()

    return {
        "benchmark": "memory",
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "processor": platform.processor() or platform.machine()},
        "embedder": getattr(embedder, "name", str(embedder)),
        "config": asdict(config),
        "corpus": {
            "people": min(config.people, len(NAMES)), "questions": len(corpus.questions),
            "evidence_turns": len(corpus.evidence), "unique_filler_sentences": len(corpus.filler_texts),
            "note": ("filler turns reuse the vectors of a fixed set of unique sentences (embedded once); "
                     "facts, mentions and questions are embedded individually"),
        },
        "defaults": {"fusion": settings.memory.options.get("fusion", "rrf"), "recall_k": settings.memory.recall_k,
                     "recall_floor": settings.memory.recall_floor},
        "query_embedding_latency": query_embed,
        "timings": timings,
        "results": rows,
    }


def print_synthetic_table(result: dict[str, Any], echo: Callable[[str], None] = print) -> None:
    rankings = [key for key in result["results"][0] if key in ("vector", "lexical") or key.startswith("fused")]
    echo(f"\nsynthetic set: recall of the evidence turn ({result['corpus']['questions']} questions, embedder {result['embedder']})")
    echo(f"{'':28}{'all':^20}  {'paraphrase':^20}  {'keyword':^20}")
    echo(f"{'size':>8}  {'ranking':<18}" + f" {'R@1':>6} {'R@5':>6} {'R@10':>6} " * 3)
    for row in result["results"]:
        for key in rankings:
            r = row[key]
            cells = "".join(
                f" {r[p + 'recall@1']:>6.3f} {r[p + 'recall@5']:>6.3f} {r[p + 'recall@10']:>6.3f} "
                for p in ("", "paraphrase_", "keyword_")
            )
            echo(f"{row['size']:>8}  {key:<18}{cells}")
    echo(f"\nsearch latency (ms; query vector precomputed; embedding one query: "
         f"p50 {result['query_embedding_latency']['p50_ms']} ms)")
    echo(f"{'size':>8}  {'fused p50':>10} {'p95':>8}  {'vector p50':>10} {'p95':>8}  {'lexical p50':>11} {'p95':>8}")
    for row in result["results"]:
        lat = row["search_latency"]
        echo(f"{row['size']:>8}  {lat['fused']['p50_ms']:>10.2f} {lat['fused']['p95_ms']:>8.2f}  "
             f"{lat['vector']['p50_ms']:>10.2f} {lat['vector']['p95_ms']:>8.2f}  "
             f"{lat['lexical']['p50_ms']:>11.2f} {lat['lexical']['p95_ms']:>8.2f}")
    echo("\nsimilarity (fused score) of evidence hits vs best hit for unanswerable questions")
    for row in result["results"]:
        echo(f"{row['size']:>8}  {json.dumps(row['similarity'])}")
