"""The search over one store's turns: the vector pass, the word pass (FTS5 / BM25), and their fusion.

`TurnSearch` keeps the in-memory copy of the stored vectors in step with the database and runs
one question through both passes; the ranking itself is memory/ranking.py's pure functions. The
store calls it under its lock with its connection, so nothing here locks or opens anything.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from convers.contracts.memory import MemoryHit
from convers.memory import key_table, ranking
from convers.memory.centring import centre
from convers.memory.derived_keys import TopicVectors, query_entities
from convers.memory.judgement import is_judgement, towards_topic
from convers.memory.observation_index import ObservationIndex
from convers.memory.part_index import PartIndex
from convers.memory.ranking import (
    FTS_WEIGHTS,
    Fusion,
    RankingWeights,
    SearchMode,
    query_terms,
)
from convers.memory.schema import COLUMNS, turn_from_row
from convers.memory.speakers import SpeakerVectors
from convers.memory.vectors import VectorIndex, VectorPass
from convers.memory.when import TimeSpan

log = logging.getLogger(__name__)

# From this many stored vectors on, the matrix pass runs in a worker thread while SQLite ranks by
# words: at 100k turns each takes ~15-25 ms on one core (the matrix pass is bound by memory
# bandwidth, BM25 by CPU) and both release the GIL, so side by side costs the larger, not the sum.
# Below it the hand-off (~0.1 ms) is not worth it.
PARALLEL_MIN_VECTORS = 5000
# A query word found in more rows than this (and more than COMMON_TERM_SHARE of them) is left out of
# the BM25 query when the query has rarer words: FTS5 scores every matching row, so one common word
# ("dinner" in 7,000 of 100k turns) made BM25 cost 40 ms, while its low IDF barely moves the top 50.
# Smaller stores never reach the count, so their ranking is unchanged.
COMMON_TERM_ROWS = 2000
COMMON_TERM_SHARE = 0.02


Hits = list[tuple[int, float]]
# The worker waits this long at most for a search's plan. It comes within milliseconds; the bound
# only keeps a bug from hanging the worker (and every later search) for good.
PLAN_WAIT_S = 30.0
# What the vector pass needs from the search's setup: the label of the speaker the question names and
# the span of time it points at (POSIX seconds); None: no pass, the search goes on by words.
Plan = tuple[str | None, tuple[float, float] | None] | None


@dataclass
class VectorJob:
    """The vector side of one search, running in the worker: `result` waits for `plan` before the pass.

    The worker reads the index only after the plan, which the search sets while it holds the store's
    lock; started outside that lock, a job would wait for a search that waits for the lock (two
    searches at once deadlocked the one worker so)."""

    plan: Future[Plan]
    result: Future[tuple[VectorPass | None, np.ndarray | None]]


@dataclass
class TurnSearch:
    """Ranks a store's turns for a question; holds the stored vectors in memory (loaded on first search)."""

    path: Path
    speakers: SpeakerVectors
    weights: RankingWeights
    # The embedder's width, when known: the width expected of stored vectors before any is loaded.
    width: int | None = None
    index: VectorIndex = field(default_factory=VectorIndex)
    # Highest rowid whose vector is loaded; -1 until the first sync (nothing is kept in step before).
    loaded_to_rowid: int = field(init=False, default=-1)
    # The database's vector generation the index matches; another one means rows changed in place.
    generation: str | None = field(init=False, default=None)
    # Each turn's prior (ranking.prior of its text) by rowid; a turn's text never changes under its rowid.
    # Kept for one set of penalties (_priors_for): the benchmark changes them between rankings.
    _priors: dict[int, float] = field(init=False, repr=False, default_factory=dict)
    _priors_for: tuple[float, float, bool] = field(init=False, repr=False, default=(-1.0, -1.0, False))
    # Rows each query word matches (for COMMON_TERM_ROWS), and the row count they were counted at.
    term_rows: dict[str, int] = field(init=False, repr=False, default_factory=dict)
    _term_rows_at: int = field(init=False, repr=False, default=0)
    # One worker for the vector pass of large stores (PARALLEL_MIN_VECTORS); started on first need.
    _worker: ThreadPoolExecutor | None = field(init=False, repr=False, default=None)
    # The topic descriptions' vectors (the store embeds them once): a question's topics find turns by their keys.
    topics: TopicVectors = field(default_factory=TopicVectors)
    # The observation keys' vectors (memory/observations.py): an observation near the question lifts its turns.
    observations: ObservationIndex = field(default_factory=ObservationIndex)
    # The part vectors (memory/turn_parts.py): a turn's sentences, clauses and the question it answers.
    parts: PartIndex = field(default_factory=PartIndex)

    # ----------------------------------------------------------------- keeping the vectors in step

    def add_vectors(self, rowids: list[int], vectors: np.ndarray, times: Sequence[float]) -> None:
        """Adds committed vectors once the index is loaded; vectors of another width stay out of it."""
        if self.loaded_to_rowid < 0 or not rowids:
            return
        try:
            self.index.add(rowids, vectors, times)
        except ValueError as error:
            log.warning(
                "memory %s: %s; vector recall covers only turns from one embedder. To re-embed everything: "
                "`convers memory export F`, `convers memory wipe`, `convers memory import F`", self.path, error
            )

    def add_parts(self, ids: list[int], turns: list[int], kinds: list[str], vectors: np.ndarray,
                  times: Sequence[float]) -> None:
        """Adds committed part vectors (memory/turn_parts.py) once the index is loaded."""
        try:
            self.parts.add(ids, turns, kinds, vectors, times)
        except ValueError as error:
            log.warning("memory %s: part vectors left out: %s", self.path, error)

    @staticmethod
    def _stored_generation(conn: sqlite3.Connection) -> str | None:
        row = conn.execute("SELECT value FROM meta WHERE key = 'vector_generation'").fetchone()
        return row[0] if row else None

    def note_rewrite(self, conn: sqlite3.Connection, new_generation: str) -> None:
        """Records (inside the writer's transaction) that stored vectors changed other than by appending."""
        old = self._stored_generation(conn)
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('vector_generation', ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (new_generation,),
        )
        # If another process rewrote since we last synced, our index is stale: force a full reload.
        self.generation = new_generation if old == self.generation else "stale"

    def sync(self, conn: sqlite3.Connection, embedder_key: str | None) -> None:
        """Brings the in-memory vectors up to date with the database (cheap when nothing changed).

        Vectors another embedder made are left out: their cosines against this embedder's query
        mean nothing. Those turns are found by words until the store's backfill re-embeds them.
        """
        generation = self._stored_generation(conn)
        if self.loaded_to_rowid < 0 or generation != self.generation:
            self.index.clear()
            self.parts.clear()
            self.loaded_to_rowid = 0
            self.generation = generation
        self.parts.sync(conn, embedder_key, self.index.dimension or self.width)
        top = conn.execute("SELECT max(rowid) FROM turns").fetchone()[0] or 0
        if top <= self.loaded_to_rowid:
            return
        rows = conn.execute(
            "SELECT rowid, embedding, time FROM turns WHERE rowid > ? AND embedding IS NOT NULL "
            "AND (? IS NULL OR embedder IS NULL OR embedder = ?)",
            (self.loaded_to_rowid, embedder_key, embedder_key),
        ).fetchall()
        if rows:
            width = self.index.dimension or self.width or len(rows[0][1]) // 4
            good = [r for r in rows if len(r[1]) == width * 4]
            if len(good) < len(rows):
                log.warning("memory %s: %d turns have vectors of another width (embedder changed?) and are "
                            "found by words only until they are re-embedded", self.path, len(rows) - len(good))
            if good:
                matrix = np.frombuffer(b"".join(r[1] for r in good), dtype=np.float32).reshape(len(good), width)
                self.add_vectors([r[0] for r in good], matrix, [ranking.seconds(r[2]) for r in good])
        self.loaded_to_rowid = top

    def close(self) -> None:
        if self._worker is not None:
            self._worker.shutdown(wait=True)
            self._worker = None

    # ----------------------------------------------------------------- one question

    def _start(self, query: str, vector: np.ndarray | None,
               embed: Callable[[str], np.ndarray | None] | None) -> VectorJob:
        if self._worker is None:
            self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="memory-vectors")
        plan: Future[Plan] = Future()
        return VectorJob(plan, self._worker.submit(self._vector_side, query, vector, embed, plan))

    def run(
        self, conn: sqlite3.Connection, query: str, words: str, vector: np.ndarray | None, span: TimeSpan | None,
        *, k: int, mode: SearchMode, fusion: Fusion, floor: float, excluded: set[str], embedder_key: str | None,
        embed: Callable[[str], np.ndarray | None] | None = None,
    ) -> list[MemoryHit]:
        """The `k` best distinct turns; `words` is the query less its time expression (for BM25).

        `vector` is the question's embedding; without one, `embed` makes it in the worker thread
        while SQLite ranks by words (on two cores the embedding then costs little more than the word
        pass it overlaps), and no vector from it means words only. The caller holds the store's lock.
        """
        job: VectorJob | None = None
        if vector is not None:
            vector = self._judged(query, vector)
        if mode != "lexical" and vector is None and embed is not None:
            # First of all: the embedding is the longest part of a search. Its pass over the index
            # waits for the plan made below.
            job = self._start(query, None, embed)
        elif mode not in ("lexical", "vector") and vector is not None and len(self.index) >= PARALLEL_MIN_VECTORS:
            job = self._start(query, vector, None)
        found_by_vector: VectorPass | None = None
        label: str | None = None
        try:
            if mode != "lexical" and (vector is not None or job is not None):
                self.sync(conn, embedder_key)
                label = self.speakers.asked_about(conn, query) if self.speakers.query_speaker_weight else None
                within = None if span is None else (span.start.timestamp(), span.end.timestamp())
                if job is not None:
                    # From here the worker reads the index: it is only changed under the store's lock,
                    # which this search holds until the worker is done (the `finally` below).
                    job.plan.set_result((label, within))
                elif vector is not None:
                    found_by_vector = self._pass(vector, label, within)
            lexical_hits = self.lexical(conn, words, self.weights.candidates) if mode != "vector" else []
            rows = self._rows(conn, [r for r, _ in lexical_hits])  # while the vector side may still run
            entity_rowids = self._entity_turns(conn, words) if mode == "fused" else []
        finally:
            if job is not None:
                if not job.plan.done():
                    job.plan.set_result(None)
                wait([job.result])
        if job is not None:
            found_by_vector, vector = job.result.result()
        vector_hits = found_by_vector.nearest if found_by_vector else []
        span_hits = found_by_vector.nearest_within if found_by_vector else []
        entity_hits: Hits = []
        topic_hits: Hits = []
        observation_hits: Hits = []
        if found_by_vector is not None and mode == "fused":
            entity_hits = self._by_cosine(found_by_vector, entity_rowids)
            if span is None:
                # A question that names a time is about that day: its topic would lift every other
                # day's turns on it ("what did I cook two weeks ago?" and every dinner). On the tuning
                # half of `convers bench memory`: temporal recall@5 0.824 with topics, 0.838 without.
                topic_hits = self._by_cosine(found_by_vector, self._topic_turns(conn, vector, words, label))
                observation_hits = self._by_cosine(
                    found_by_vector, self._observation_turns(conn, vector, label, embedder_key))
        rows.update(self._rows(conn, list({r for r, _ in (*vector_hits, *span_hits, *entity_hits, *topic_hits,
                                                          *observation_hits)} - rows.keys())))
        weights = self.weights
        if weights.question_penalty or weights.short_penalty:
            vector_hits, span_hits = self._with_priors(vector_hits, rows), self._with_priors(span_hits, rows)
            entity_hits, topic_hits = self._with_priors(entity_hits, rows), self._with_priors(topic_hits, rows)
            observation_hits = self._with_priors(observation_hits, rows)
        fused = found_by_vector is not None and mode == "fused"
        found = ranking.gather(vector_hits, lexical_hits, span_hits, weights.lexical_half)
        ranking.mark_keys(found, entity_hits, topic_hits, observation_hits)
        if fused and found_by_vector is not None:
            # Word matches outside the vector top list still get their true cosine.
            missing = [c.rowid for c in found.values() if c.cosine is None]
            for rowid, cosine in found_by_vector.cosines(missing).items():
                found[rowid].cosine = cosine
        if fused and weights.centre_weight:
            centre(found.values(), self.index.mean_dots(found), weights.centre_weight)
        candidates = ranking.fuse(found.values(), weights, fusion, only_words=not vector_hits,
                                  only_vectors=not lexical_hits and not fused)
        if weights.recency_weight and len(candidates) > 1:
            times = {rowid: ranking.seconds(row[2]) for rowid, row in rows.items()}
            candidates = ranking.prefer_recent(candidates, times, weights.recency_weight, fusion)
        if weights.supersede_cosine and span is None:
            # A question that names a time wants what was said then, not the latest version.
            top = [c.rowid for c in candidates[: ranking.SUPERSEDE_TOP] if c.rowid in rows]
            candidates = ranking.supersede(
                candidates, self.index.vectors_for(top), {r: ranking.seconds(rows[r][2]) for r in top},
                {r: rows[r][3] for r in top}, weights)
        # Only the chosen few become MemoryTurns: parsing every candidate's row cost ~0.5 ms a search.
        facts = {rowid: (row[0], row[5], row[7]) for rowid, row in rows.items()}
        # A question that names a time wants that day's turns, often several from one session.
        sessions = {rowid: row[1] for rowid, row in rows.items()} if span is None else None
        chosen = ranking.distinct(candidates, facts, self.index.vector, k, floor, excluded, sessions,
                                  weights.per_session, weights.similar_cosine)
        hits = []
        for c in chosen:
            turn = turn_from_row(rows[c.rowid])
            hits.append(MemoryHit(turn.id, turn.text, round(c.similarity, 4), turn))
        if weights.answer_neighbours:
            hits = self._with_answers(conn, hits, k, excluded)
        return hits

    @staticmethod
    def _with_answers(conn: sqlite3.Connection, hits: list[MemoryHit], k: int, excluded: set[str]) -> list[MemoryHit]:
        """A hit that is a question is followed by the other speaker's next turn in its session (its
        answer, which the question alone does not hold); the last hits make room for it."""
        out: list[MemoryHit] = []
        shown = {h.id for h in hits} | excluded
        for hit in hits:
            out.append(hit)
            if not hit.text.rstrip().endswith("?"):
                continue
            row = conn.execute(f"SELECT {COLUMNS} FROM turns WHERE session = ? AND kind = 'turn' AND rowid > "
                               "(SELECT rowid FROM turns WHERE id = ?) ORDER BY rowid LIMIT 1",
                               (hit.turn.session, hit.id)).fetchone()
            if row is None:
                continue
            answer = turn_from_row(row)
            if answer.id not in shown and answer.speaker != hit.turn.speaker:
                shown.add(answer.id)
                out.append(MemoryHit(answer.id, answer.text, hit.score, answer))
        return out[:k]

    def _vector_side(self, query: str, vector: np.ndarray | None, embed: Callable[[str], np.ndarray | None] | None,
                     plan: Future[Plan]) -> tuple[VectorPass | None, np.ndarray | None]:
        """In the worker: the question's vector (embedded here when not given), then, once `plan` comes,
        its pass over the index and the vector; a pass of None: words only (no vector, or a plan of None)."""
        if vector is None:
            vector = embed(query) if embed is not None else None
            if vector is not None:
                vector = self._judged(query, vector)
        try:
            planned = plan.result(timeout=PLAN_WAIT_S)
        except TimeoutError:
            log.error("memory %s: a search never planned its vector pass; searching by words", self.path)
            return None, vector
        if vector is None or planned is None:
            return None, vector
        return self._pass(vector, *planned), vector

    def _judged(self, query: str, vector: np.ndarray) -> np.ndarray:
        """The question's vector, moved towards its nearest topic when it asks for a judgement about a
        person (memory/judgement.py); the caller's array is never changed."""
        weight = self.weights.judgement_topic_weight
        if not weight or not is_judgement(query):
            return vector
        return towards_topic(vector, self.topics, weight)

    def _entity_turns(self, conn: sqlite3.Connection, words: str) -> list[int]:
        """Turns holding an entity key the question names (a stored speaker's own name aside: who said
        what is in the vectors, and their name is in every greeting)."""
        if not self.weights.entity_weight:
            return []
        speakers = {name.lower() for name in self.speakers.known(conn)}
        names = [e for e in query_entities(query_terms(words)) if e not in speakers]
        return key_table.turns_with(conn, "entity", names)

    def _topic_turns(self, conn: sqlite3.Connection, vector: np.ndarray | None, words: str,
                     label: str | None) -> list[int]:
        """Turns sharing a topic key with the question, of the speaker it asks about when it names one."""
        if not self.weights.topic_weight or vector is None:
            return []
        topics = self.topics.of_query(vector, query_terms(words))
        if not topics:
            return []
        speaker = next((name for name, known in self.speakers.known(conn).items() if known == label), None)
        return key_table.turns_with(conn, "topic", topics, speaker)

    def _observation_turns(self, conn: sqlite3.Connection, vector: np.ndarray | None, label: str | None,
                           embedder_key: str | None) -> list[int]:
        """Turns whose observation keys are near the question, of the speaker it asks about when it names one."""
        weights = self.weights
        if not weights.observation_weight or vector is None:
            return []
        self.observations.sync(conn, embedder_key)
        near = self.observations.near(vector, weights.observation_top, weights.observation_cosine)
        if not near:
            return []
        speaker = next((name for name, known in self.speakers.known(conn).items() if known == label), None)
        return key_table.turns_with(conn, "observation", [key for key, _ in near], speaker)

    def _by_cosine(self, found: VectorPass, rowids: list[int]) -> Hits:
        """`rowids` with a vector, nearest to the question first, the best `weights.candidates` of them."""
        if not rowids:
            return []
        cosines = found.cosines(rowids)
        return sorted(cosines.items(), key=lambda hit: -hit[1])[: self.weights.candidates]

    def _pass(self, vector: np.ndarray, label: str | None, within: tuple[float, float] | None) -> VectorPass | None:
        """`vector` (plus the label of the speaker asked about) over the index; None when widths differ."""
        width = len(np.ravel(vector))
        if self.index.dimension not in (None, width):
            log.warning("memory %s holds %s-wide vectors but the query is %d wide: searching by words",
                        self.path, self.index.dimension, width)
            return None
        query = self.speakers.with_label(vector, label)
        weights = self.weights.part_weights()
        if not len(self.parts) or not any(weights.values()):
            return self.index.query(query, self.weights.candidates, within)

        mean = self.index.mean() if self.weights.part_centring else None
        centring = None if mean is None else (self.index, mean, self.weights.centre_weight)

        def lift(scores: np.ndarray, position: Mapping[int, int]) -> None:
            self.parts.lift(query, scores, position, weights, within, centring)

        return self.index.query(query, self.weights.candidates, within, lift)

    def lexical(self, conn: sqlite3.Connection, query: str, limit: int) -> Hits:
        """BM25 over what was said (and answered, and when); the speaker column only when that finds nothing.

        A speaker's name matches half the rows of a two-person store, and ranking them all by BM25
        took 28 of 37 ms per search at 100k turns; who said what is in the vectors (speakers.py).
        """
        terms = self.without_common(conn, query_terms(query))
        if not terms:
            return []
        match = " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)
        weights = ", ".join(str(w) for w in FTS_WEIGHTS)
        sql = (f"SELECT rowid, -bm25(turns_words, {weights}) AS score FROM turns_words WHERE turns_words MATCH ? "
               "ORDER BY score DESC LIMIT ?")
        rows = conn.execute(sql, (f"{{text answers when_words}} : ({match})", limit)).fetchall()
        if not rows:
            rows = conn.execute(sql, (match, limit)).fetchall()
        return [(int(r), float(s)) for r, s in rows]

    def without_common(self, conn: sqlite3.Connection, terms: list[str]) -> list[str]:
        """`terms` less those in more than COMMON_TERM_ROWS rows, keeping at least the rarest one."""
        if len(terms) < 2:
            return terms
        rows = len(self.index) or int(conn.execute("SELECT count(*) FROM turns").fetchone()[0])
        limit = max(COMMON_TERM_ROWS, COMMON_TERM_SHARE * rows)
        if rows <= limit:
            return terms  # no word can match more rows than there are
        if rows > self._term_rows_at * 1.1 or len(self.term_rows) > 100_000:
            # Counts grow with the store; 10 % is close enough for a cut-off.
            self.term_rows.clear()
            self._term_rows_at = rows
        counts = []
        for term in terms:
            count = self.term_rows.get(term)
            if count is None:
                # Counting walks the term's row list without scoring: a fraction of what BM25 costs.
                count = self.term_rows[term] = int(conn.execute(
                    "SELECT count(*) FROM turns_words WHERE turns_words MATCH ?",
                    ('{text answers when_words} : "' + term.replace('"', '""') + '"',)).fetchone()[0])
            counts.append(count)
        kept = [t for t, n in zip(terms, counts, strict=True) if n <= limit]
        return kept or [min(zip(counts, terms, strict=True))[1]]

    def _with_priors(self, hits: Hits, rows: dict[int, tuple[Any, ...]]) -> Hits:
        penalties = (self.weights.question_penalty, self.weights.short_penalty, self.weights.question_share)
        if penalties != self._priors_for:
            self._priors.clear()
            self._priors_for = penalties
        weighted = []
        for rowid, cosine in hits:
            prior = self._priors.get(rowid)
            if prior is None and rowid in rows:
                if len(self._priors) > 200_000:
                    self._priors.clear()
                prior = self._priors[rowid] = ranking.prior(rows[rowid][5], self.weights)
            weighted.append((rowid, cosine * (1.0 if prior is None else prior)))
        return sorted(weighted, key=lambda hit: -hit[1])

    @staticmethod
    def _rows(conn: sqlite3.Connection, rowids: list[int]) -> dict[int, tuple[Any, ...]]:
        if not rowids:
            return {}
        marks = ",".join("?" * len(rowids))
        rows = conn.execute(f"SELECT rowid, {COLUMNS}, source_id FROM turns WHERE rowid IN ({marks})", rowids).fetchall()
        return {r[0]: r[1:] for r in rows}
