"""SqliteMemoryStore: every turn in one SQLite file, searchable by meaning (vectors) and by words (FTS5).

The store's own job is writing and reading turns so that the rows, the word index and the
in-memory vectors agree. The parts live beside it: memory/schema.py (the file, its upgrades, its
transactions and errors), memory/turn_table.py (the SQL), memory/search.py and memory/ranking.py
(finding turns), memory/speakers.py (who said it, in the vectors), memory/jsonl.py (the export format).

The embedder is called outside the database lock, and a failing embedder stores the row with a
NULL vector for `backfill` to fill later: a turn is never lost or delayed for want of a vector.

Why this module is over 400 lines: each write path (add_many, backfill, attach_vector, forget,
wipe) changes things that must agree, the row, its word-index row, its part rows (memory/turn_parts.py)
and their in-memory vectors, in one transaction under one lock, and the in-memory indexes follow only
committed rows. Spread
over modules, that rule could no longer be read and checked in one place.
"""

from __future__ import annotations

import builtins
import logging
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import InitVar, dataclass, field
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

import numpy as np

from convers.config import ProviderOptions, provider_options
from convers.contracts.embedder import Embedder, EmbedderError
from convers.contracts.memory import MemoryHit, MemoryStoreError, MemoryTurn
from convers.contracts.provider import Availability
from convers.memory import key_table, part_table, turn_table
from convers.memory.derived_keys import TOPICS, DerivedKey, entities
from convers.memory.jsonl import read_turns, write_turns
from convers.memory.observation_index import note_deletion
from convers.memory.ranking import (
    MAX_QUERY_CHARS,
    Fusion,
    RankingWeights,
    SearchMode,
    query_terms,
)
from convers.memory.schema import (
    DB_FILE_NAME,
    MIGRATIONS,
    Transaction,
    database_error,
    fts5_problem,
    open_database,
)
from convers.memory.search import TurnSearch
from convers.memory.speakers import QUERY_SPEAKER_WEIGHT, SPEAKER_WEIGHT, SpeakerVectors
from convers.memory.turn_parts import STORED_PART_KINDS, PartKind, turn_parts
from convers.memory.turn_text import (
    EMBED_TEXT_VERSION,
    in_zone,
    local_zone,
)
from convers.memory.vectors import embed_blocking, embed_query_blocking
from convers.memory.when import TimeSpan, find_time_span, without_time_words

if TYPE_CHECKING:
    from convers.config import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")
# A turn's parts (kind, text) and their stored vectors (one row each; None when it has none).
Parts = tuple[list[tuple[PartKind, str]], np.ndarray | None]

# Re-exported: the schema and the query's words are part of what the store promises its callers.
__all__ = ["DB_FILE_NAME", "MIGRATIONS", "SqliteMemoryStore", "StoreStats", "query_terms"]


@dataclass
class StoreStats:
    """Counts for `convers memory` and the doctor: how much is stored and how much lacks a vector."""

    turns: int
    digests: int
    unembedded: int
    embed_failures: int
    path: str
    # Rows whose vector is from an older embedding text or another embedder (re-embedded in the background).
    stale: int = 0
    # Keys derived from the turns (names and topics, memory/derived_keys.py).
    keys: int = 0


@dataclass
class SqliteMemoryStore:
    """The recall store: one SQLite file (WAL) with a vector per turn and an FTS5 word index.

    Safe to share between threads (one connection behind a lock) and between processes (SQLite
    locking with a busy timeout). All methods block: async callers run them with asyncio.to_thread.
    """

    path: Path
    embedder: Embedder | None = None
    floor: float = 0.0
    weights: RankingWeights = field(default_factory=RankingWeights)
    # Stored vector = text + speaker_weight x the speaker label's vector (kept in `speakers`).
    speaker_weight: InitVar[float] = SPEAKER_WEIGHT
    query_speaker_weight: InitVar[float] = QUERY_SPEAKER_WEIGHT
    # The user's zone: dates are indexed and time expressions read in it (None: the system zone).
    zone: tzinfo | None = None
    busy_timeout_s: float = 10.0
    embed_failures: int = 0
    # Which parts of a turn get vectors of their own (memory/turn_parts.py); the benchmark stores all
    # kinds to compare them.
    part_kinds: tuple[PartKind, ...] = STORED_PART_KINDS
    speakers: SpeakerVectors = field(init=False, repr=False)
    _conn: sqlite3.Connection = field(init=False, repr=False)
    _lock: threading.RLock = field(init=False, repr=False, default_factory=threading.RLock)
    _search: TurnSearch = field(init=False, repr=False)
    _upgrade_cursor: int = field(init=False, repr=False, default=0)
    _topics_tried: bool = field(init=False, repr=False, default=False)

    def __post_init__(self, speaker_weight: float, query_speaker_weight: float) -> None:
        self.path = Path(self.path).expanduser()
        if self.zone is None:
            self.zone = local_zone()
        self.speakers = SpeakerVectors(self.embedder, speaker_weight, query_speaker_weight)
        self._search = TurnSearch(self.path, self.speakers, self.weights, getattr(self.embedder, "dimension", None))
        self._conn = open_database(self.path, self.busy_timeout_s)

    @property
    def embedder_key(self) -> str | None:
        """Who makes this store's vectors ('minilm/384'): vectors from another key are not compared."""
        if self.embedder is None:
            return None
        return f"{getattr(self.embedder, 'name', type(self.embedder).__name__)}/{getattr(self.embedder, 'dimension', '?')}"

    @property
    def local_zone(self) -> tzinfo:
        assert self.zone is not None
        return self.zone

    @property
    def vectors_in_memory(self) -> int:
        """How many stored vectors the search holds in memory (0 until the first search or warm_up)."""
        return len(self._search.index)

    def use_weights(self, weights: RankingWeights, query_speaker_weight: float | None = None) -> None:
        """Ranks with other weights from the next search on (the benchmark compares rankings on one store)."""
        self.weights = self._search.weights = weights
        if query_speaker_weight is not None:
            self.speakers.query_speaker_weight = query_speaker_weight

    # ----------------------------------------------------------------- provider convention

    class Options(ProviderOptions):
        """memory.options for the SQLite store."""

        # How word and vector ranks are fused (memory/ranking.py).
        fusion: Fusion = RankingWeights.fusion

    @classmethod
    def from_settings(cls, settings: Settings, embedder: Embedder | None = None) -> SqliteMemoryStore:
        """The store at data_dir/memory.db with recall settings applied; `embedder` may be None."""
        return cls(
            settings.data_path / DB_FILE_NAME,
            embedder=embedder,
            floor=settings.memory.recall_floor,
            weights=RankingWeights(fusion=provider_options(cls.Options, settings, "memory", "sqlite").fusion),
            zone=local_zone(settings.memory.time_zone or None),
        )

    @classmethod
    def availability(cls, settings: Settings) -> Availability:
        problem = fts5_problem()
        if problem:
            return Availability(False, problem)
        return Availability(True, f"SQLite {sqlite3.sqlite_version} at {settings.data_path / DB_FILE_NAME}")

    # ----------------------------------------------------------------- opening, errors, transactions

    def _error(self, error: sqlite3.Error, doing: str) -> MemoryStoreError:
        return database_error(self.path, error, doing, self.busy_timeout_s)

    def schema_version(self) -> int:
        with self._lock:
            return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()
            self._search.close()

    def __enter__(self) -> SqliteMemoryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write(self, doing: str) -> Transaction:
        return Transaction(self._conn, self._lock, self.path, doing, self.busy_timeout_s)

    def _read(self, doing: str, query: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """One turn_table query under the lock, an sqlite error as a MemoryStoreError saying what was being done."""
        with self._lock:
            try:
                return query(self._conn, *args, **kwargs)
            except sqlite3.Error as error:
                raise self._error(error, doing) from error

    def _times(self, turns: Iterable[MemoryTurn]) -> list[float]:
        """When each turn was said, as POSIX seconds (the in-memory index narrows searches to a span by them)."""
        return [in_zone(turn.time, self.local_zone).timestamp() for turn in turns]

    # ----------------------------------------------------------------- writing

    def _topics_ready(self) -> bool:
        """Embeds the topic descriptions once (outside the lock); False while there is no working embedder."""
        topics = self._search.topics
        if topics.ready() or self.embedder is None:
            return topics.ready()
        try:
            topics.matrix = embed_blocking(self.embedder, [TOPICS[name] for name in topics.names])
        except EmbedderError as error:
            log.info("no topic keys yet, the embedder failed: %s", error)
        return topics.ready()

    def _topic_keys(self, text_vectors: np.ndarray | None, texts: Sequence[str]) -> list[list[str]] | None:
        """Each turn's topic keys from its text's vector; None without vectors (left for backfill)."""
        if text_vectors is None or not self._topics_ready():
            return None
        return self._search.topics.of_turns(np.asarray(text_vectors, dtype=np.float32).reshape(len(texts), -1), texts)

    def _embed(self, texts: Sequence[str]) -> np.ndarray | None:
        if self.embedder is None or not texts:
            if texts:
                self.embed_failures += len(texts)
            return None
        try:
            return embed_blocking(self.embedder, texts)
        except EmbedderError as error:
            self.embed_failures += len(texts)
            log.warning("stored %d turn(s) without a vector, to be filled in later: %s", len(texts), error)
            return None

    def _parts(self, turns: Sequence[MemoryTurn],
               previous: Sequence[MemoryTurn | None]) -> builtins.list[Parts] | None:
        """Each turn's parts (memory/turn_parts.py) with their stored vectors (the speaker added, as for a
        turn); None when they could not be embedded (the turn is then stored a version behind, and the
        backfill makes them later)."""
        parts = [turn_parts(t, p, self.part_kinds) if self.part_kinds else [] for t, p in zip(turns, previous, strict=True)]
        texts = [text for found in parts for _, text in found]
        if not texts:
            return [(found, None) for found in parts]
        if self.embedder is None:
            return None
        try:
            text_vectors = embed_blocking(self.embedder, texts)
        except EmbedderError as error:
            log.info("part vectors postponed, the embedder failed: %s", error)
            return None
        vectors = self.speakers.turn_vectors([t for t, found in zip(turns, parts, strict=True) for _ in found],
                                             text_vectors)
        out: builtins.list[Parts] = []
        start = 0
        for found in parts:
            out.append((found, vectors[start : start + len(found)] if found else None))
            start += len(found)
        return out

    def _write_parts(self, rowid: int, parts: Parts, added: builtins.list[tuple[int, int, str, np.ndarray]],
                     gone: builtins.list[int]) -> None:
        """Replaces a turn's part rows (inside the caller's transaction); notes what the index must follow."""
        found, vectors = parts
        if vectors is None:
            gone += part_table.delete_for(self._conn, [rowid])
            return
        removed, ids = part_table.replace_parts(self._conn, rowid, found, [v.tobytes() for v in vectors],
                                                self.embedder_key)
        gone += removed
        added += [(part, rowid, kind, vector) for part, (kind, _), vector in zip(ids, found, vectors, strict=True)]

    def _index_committed(self, rowids: builtins.list[int], vectors: np.ndarray, turns: Iterable[MemoryTurn],
                         added: builtins.list[tuple[int, int, str, np.ndarray]], gone: builtins.list[int]) -> None:
        """After the commit: the in-memory indexes follow the rows written, the turns' vectors (`turns`,
        one a rowid) and their parts (`added`, `gone`)."""
        times = self._times(turns)
        when = dict(zip(rowids, times, strict=True))
        with self._lock:
            self._search.add_vectors(rowids, vectors, times)
            if gone:
                self._search.parts.remove(gone)
            if added:
                self._search.add_parts([a[0] for a in added], [a[1] for a in added], [a[2] for a in added],
                                       np.stack([a[3] for a in added]), [when[a[1]] for a in added])

    def add(self, turn: MemoryTurn, source_id: str | None = None, vector: np.ndarray | None = None) -> str:
        """Stores one turn, with `vector` or embedding it first (NULL if the embedder fails). Returns its id.

        A `vector` is the embedding of the turn's bare text (the one recall computed for the query);
        the store adds who said it (SpeakerVectors.turn_vectors).
        """
        self.add_many([turn], source_ids=[source_id], vectors=None if vector is None else vector[None, :])
        return turn.id

    def _previous_in_batch(self, turns: Sequence[MemoryTurn]) -> list[MemoryTurn | None]:
        """For each turn, the raw turn before it in its session (stored, or earlier in `turns`)."""
        latest: dict[str, MemoryTurn | None] = {}
        out: list[MemoryTurn | None] = []
        for turn in turns:
            if turn.session not in latest:
                latest[turn.session] = self._read("reading the previous turn", turn_table.previous_turn, turn.session)
            out.append(latest[turn.session] if turn.kind == "turn" else None)
            if turn.kind == "turn":
                latest[turn.session] = turn
        return out

    def add_many(
        self,
        turns: Sequence[MemoryTurn],
        *,
        vectors: np.ndarray | None = None,
        embed: bool = True,
        source_ids: Sequence[str | None] | None = None,
    ) -> int:
        """Stores turns in one transaction; ids already stored are skipped. Returns how many were new.

        `vectors` supplies precomputed embeddings of the turns' texts (one row per turn; the speaker is added);
        `embed=False` stores NULL vectors for a later `backfill` (fast bulk import).
        """
        if not turns:
            return 0
        previous = self._previous_in_batch(turns)
        if vectors is None and embed:
            vectors = self._embed([t.text for t in turns])
        elif vectors is not None and len(vectors) != len(turns):
            raise ValueError(f"{len(vectors)} vectors for {len(turns)} turns")
        topics = self._topic_keys(vectors, [t.text for t in turns])
        parts = None
        if vectors is not None:
            vectors = self.speakers.turn_vectors(turns, np.asarray(vectors, dtype=np.float32).reshape(len(turns), -1))
            parts = self._parts(turns, previous)
        version = EMBED_TEXT_VERSION if parts is not None else EMBED_TEXT_VERSION - 1
        added: list[tuple[int, int]] = []  # (rowid, position in turns)
        added_parts: list[tuple[int, int, str, np.ndarray]] = []
        with self._write("storing turns"):
            for i, turn in enumerate(turns):
                blob = None if vectors is None else vectors[i].tobytes()
                source = source_ids[i] if source_ids is not None else None
                rowid = turn_table.insert_turn(self._conn, turn, source, blob, self.embedder_key, version)
                if rowid is not None:
                    turn_table.index_words(self._conn, rowid, turn, previous[i], self.local_zone)
                    key_table.replace_keys(self._conn, rowid, "entity", entities(turn.text))
                    if topics is not None:
                        key_table.replace_keys(self._conn, rowid, "topic", topics[i])
                    if parts is not None:
                        self._write_parts(rowid, parts[i], added_parts, [])
                    added.append((rowid, i))
        # The index only follows committed rows, so a failed transaction leaves no phantom vectors.
        if vectors is not None and added:
            self._index_committed([r for r, _ in added], vectors[[i for _, i in added]], (turns[i] for _, i in added),
                                  added_parts, [])
        return len(added)

    def backfill(self, limit: int = 64) -> int:
        """Embeds up to `limit` turns that lack a current vector: stored without one (the embedder was
        down), from an older embedding text (an upgrade), or from another embedder. Their word-index
        row is rewritten too (local dates, the question answered). Returns how many were done.

        Cheap to call often: it walks the table once by rowid, never rescanning what it finished.
        """
        key = self.embedder_key
        if self.embedder is None or key is None:
            return 0
        rows = self._read("looking for turns to embed", turn_table.needing_vectors, self._upgrade_cursor, key, limit)
        if not rows:
            # Rows before the cursor may have lost their vector since (another process): start over next time.
            if self._upgrade_cursor:
                self._upgrade_cursor = 0
                return self.backfill(limit)
            return 0
        turns = [turn for _, turn in rows]
        previous = [self._read("reading the previous turn", turn_table.previous_turn, t.session, rowid)
                    if t.kind == "turn" else None for rowid, t in rows]
        try:
            text_vectors = embed_blocking(self.embedder, [t.text for t in turns])
        except EmbedderError as error:
            log.info("backfill postponed, embedder still failing: %s", error)
            return 0
        topics = self._topic_keys(text_vectors, [t.text for t in turns])
        vectors = self.speakers.turn_vectors(turns, text_vectors)
        parts = self._parts(turns, previous)
        if parts is None:
            log.info("backfill postponed, the embedder failed on the turns' parts")
            return 0
        filled: list[int] = []  # positions in rows
        added_parts: list[tuple[int, int, str, np.ndarray]] = []
        gone: list[int] = []
        with self._write("storing backfilled vectors"):
            for i, ((rowid, turn), before) in enumerate(zip(rows, previous, strict=True)):
                if turn_table.set_vector(self._conn, rowid, vectors[i].tobytes(), key):
                    turn_table.index_words(self._conn, rowid, turn, before, self.local_zone)
                    key_table.replace_keys(self._conn, rowid, "entity", entities(turn.text))
                    if topics is not None:
                        key_table.replace_keys(self._conn, rowid, "topic", topics[i])
                    self._write_parts(rowid, parts[i], added_parts, gone)
                    filled.append(i)
            self._search.note_rewrite(self._conn, uuid.uuid4().hex)
        self._upgrade_cursor = rows[-1][0]
        if filled:
            self._index_committed([rows[i][0] for i in filled], vectors[filled], (turns[i] for i in filled),
                                  added_parts, gone)
        return len(filled)

    def pending_vectors(self) -> int:
        """How many turns `backfill` still has to embed (0 without an embedder: nothing can be done)."""
        key = self.embedder_key
        return 0 if key is None else self._read("counting turns to embed", turn_table.count_needing_vectors, key)

    def attach_vector(self, turn_id: str, vector: np.ndarray) -> bool:
        """Sets the vector of a turn stored without one (`vector` embeds its text; the speaker is added
        as for any turn); False when it has one already or is gone.

        A conversation commits a turn first and attaches its vector when the embedder delivers it,
        so the commit (which the client's echo waits for) never waits on the embedder.
        """
        found = self._read("looking up a turn for its vector", turn_table.without_vector, turn_id)
        if found is None:
            return False
        rowid, turn = found
        topics = self._topic_keys(vector, [turn.text])
        unit = self.speakers.turn_vectors([turn], np.asarray(vector, dtype=np.float32).reshape(1, -1))
        before = (self._read("reading the previous turn", turn_table.previous_turn, turn.session, rowid)
                  if turn.kind == "turn" else None)
        parts = self._parts([turn], [before])  # on the writer's thread, like the vector it attaches
        added_parts: list[tuple[int, int, str, np.ndarray]] = []
        gone: list[int] = []
        with self._write("storing a turn's vector"):
            attached = turn_table.set_vector(self._conn, rowid, unit[0].tobytes(), self.embedder_key,
                                             only_if_missing=True,
                                             version=EMBED_TEXT_VERSION if parts else EMBED_TEXT_VERSION - 1)
            if attached:
                if topics is not None:
                    key_table.replace_keys(self._conn, rowid, "topic", topics[0])
                if parts:
                    self._write_parts(rowid, parts[0], added_parts, gone)
                self._search.note_rewrite(self._conn, uuid.uuid4().hex)
        if attached:
            self._index_committed([rowid], unit, [turn], added_parts, gone)
        return attached

    def add_observations(self, turn_ids: Sequence[str], observations: Sequence[str]) -> int:
        """Stores observation keys ("Maya enjoys the outdoors", memory/observations.py) derived from the
        turns `turn_ids`, each with its own vector; how many (turn, observation) pairs are new.

        Nothing is stored without a vector (an observation is found only by meaning), nor for turns
        that are gone (forgotten while the model wrote): 0 then.
        """
        texts = list(dict.fromkeys(o.strip() for o in observations if o.strip()))
        if not texts or not turn_ids:
            return 0
        if self.embedder is None:
            return 0
        try:
            vectors = embed_blocking(self.embedder, texts)
        except EmbedderError as error:
            log.info("observation keys not stored, the embedder failed: %s", error)
            return 0
        with self._write("storing observation keys"):
            rowids = [rowid for rowid in (turn_table.rowid_of(self._conn, turn_id) for turn_id in turn_ids)
                      if rowid is not None]
            if not rowids:
                return 0
            return key_table.add_observations(self._conn, rowids, texts, [v.tobytes() for v in vectors],
                                              self.embedder_key)

    def forget(self, turn_id: str) -> bool:
        """Deletes a turn, any digest made from it and the keys derived from both (observations too, and an
        observation's vector once no turn holds it). False when no such id."""
        with self._write("forgetting a turn"):
            rowids = turn_table.delete_with_digests(self._conn, turn_id)
            key_table.delete_for(self._conn, rowids)
            parts = part_table.delete_for(self._conn, rowids)
            if rowids and key_table.drop_unused_observations(self._conn):
                note_deletion(self._conn)
            if rowids:
                self._search.note_rewrite(self._conn, uuid.uuid4().hex)
        with self._lock:
            self._search.index.remove(rowids)
            self._search.parts.remove(parts)
        return bool(rowids)

    def wipe(self) -> int:
        """Deletes every turn and derived key (the file stays, overwritten). Returns how many turns there were."""
        with self._write("wiping memory"):
            count = turn_table.delete_all(self._conn)
            key_table.delete_all(self._conn)
            part_table.delete_all(self._conn)
            note_deletion(self._conn)
            self._search.note_rewrite(self._conn, uuid.uuid4().hex)
        with self._lock:
            self._search.index.clear()
            self._search.parts.clear()
            # Old pages also live in the write-ahead log until a checkpoint copies and truncates it.
            try:
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as error:
                log.warning("wipe: WAL checkpoint postponed: %s", error)
        return count

    # ----------------------------------------------------------------- reading

    def count(self, kind: str | None = "turn") -> int:
        """Stored turns (kind None counts digests too)."""
        return self._read("counting turns", turn_table.count, kind)

    def stats(self) -> StoreStats:
        turns, digests, unembedded, stale = self._read("counting turns", turn_table.counts, self.embedder_key)
        keys = self._read("counting derived keys", key_table.count)
        return StoreStats(turns, digests, unembedded, self.embed_failures, str(self.path), stale, keys)

    def keys(self, *, kind: str | None = None, containing: str | None = None, turn_id: str | None = None,
             limit: int = 50, offset: int = 0) -> builtins.list[DerivedKey]:
        """Derived keys (names, topics, observations) with the turn each came from, newest turns first."""
        return self._read("listing derived keys", key_table.list_keys, kind=kind, containing=containing,
                          turn_id=turn_id, limit=limit, offset=offset)

    def forget_key(self, kind: str, key: str, turn_id: str | None = None) -> int:
        """Deletes a derived key from every turn (or one turn's); how many went. The turns stay."""
        with self._write("forgetting a derived key"):
            count = key_table.forget_key(self._conn, kind, key, turn_id)
            if kind == "observation" and key_table.drop_unused_observations(self._conn):
                note_deletion(self._conn)
            return count

    def embedders(self) -> dict[str, int]:
        """How many stored vectors each embedder made ('an earlier version' for rows from before schema 2)."""
        return self._read("counting vectors", turn_table.embedders)

    def get(self, turn_id: str) -> MemoryTurn | None:
        return self._read("reading a turn", turn_table.get, turn_id)

    def list(
        self, limit: int = 50, offset: int = 0, *, newest_first: bool = True, kind: str | None = None,
        session: str | None = None, role: str | None = None, exclude_session: str | None = None,
    ) -> list[MemoryTurn]:
        """Stored turns, newest first by default, optionally filtered."""
        return self._read("listing turns", turn_table.list_turns, limit, offset, newest_first=newest_first, kind=kind,
                          session=session, role=role, exclude_session=exclude_session)

    def __iter__(self) -> Iterator[MemoryTurn]:
        """Every raw turn, oldest first, read in pages so a large store is never loaded whole."""
        offset = 0
        while True:
            page = self.list(1000, offset, newest_first=False, kind="turn")
            yield from page
            if len(page) < 1000:
                return
            offset += len(page)

    # ----------------------------------------------------------------- search

    # ----------------------------------------------------------------- search

    def warm_up(self) -> None:
        """Loads the vectors and runs one search, so the first real question is as fast as the tenth."""
        with self._lock:
            try:
                self._search.sync(self._conn, self.embedder_key)
                labels = set(self.speakers.known(self._conn).values())
            except sqlite3.Error as error:
                raise self._error(error, "loading vectors") from error
        for label in labels:
            self.speakers.label_vector(label)
        self._topics_ready()
        self.search("hello", 1, floor=0.0)

    def embed_query(self, query: str) -> np.ndarray | None:
        """The query's vector, or None when there is no working embedder."""
        if self.embedder is None:
            return None
        try:
            return embed_query_blocking(self.embedder, query)
        except EmbedderError as error:
            log.warning("recall falls back to word search: %s", error)
            return None

    def time_span(self, query: str, now: datetime | None = None) -> TimeSpan | None:
        """The span of the user's local time a question points at ("last May"), or None."""
        moment = in_zone(now or datetime.now(UTC), self.local_zone)
        return find_time_span(query[:MAX_QUERY_CHARS], moment)

    def search(
        self,
        query: str,
        k: int = 5,
        *,
        vector: np.ndarray | None = None,
        mode: SearchMode = "fused",
        floor: float | None = None,
        fusion: Fusion | None = None,
        exclude: Iterable[str] = (),
        now: datetime | None = None,
    ) -> builtins.list[MemoryHit]:  # `list` here is the method above
        """The `k` best turns for `query`, best first, above the similarity floor, without duplicates.

        `vector` is the query's embedding when the caller already has it (None: embed here; if the
        embedder fails the search is word-only). `mode` restricts to one ranking (for the benchmark).
        A time expression in the query ("two weeks ago", read against `now` in the store's zone)
        prefers turns from that span. Every hit's `score` is a similarity in [0, 1]: cosine,
        lexical, or their blend. An empty or unreadable query finds nothing; it never raises.
        """
        floor = self.floor if floor is None else floor
        fusion = fusion or self.weights.fusion
        query = (query or "")[:MAX_QUERY_CHARS]
        if k <= 0 or not query.strip():
            return []
        if fusion == "words":
            mode = "lexical"
        span = self.time_span(query, now)
        words = without_time_words(query, span)
        embed = self.embed_query if vector is None and self.embedder is not None else None
        if not self._topics_tried and mode == "fused" and vector is None:
            # Once per store when nothing was written or warmed up yet (a CLI search): ~30 short texts.
            # Not with a vector given: that is a conversation's recall, whose warm-up makes them.
            self._topics_tried = True
            self._topics_ready()
        with self._lock:  # held until the search's worker is done with the index (search.VectorJob)
            try:
                return self._search.run(self._conn, query, words, vector, span, k=k, mode=mode, fusion=fusion,
                                        floor=floor, excluded=set(exclude), embedder_key=self.embedder_key,
                                        embed=embed)
            except sqlite3.Error as error:
                raise self._error(error, "searching") from error

    # ----------------------------------------------------------------- export / import

    def export_jsonl(self, out: IO[str]) -> int:
        """Writes every raw turn as one JSON object per line (digests are derived and left out)."""
        return write_turns(self, out)

    def import_jsonl(self, lines: Iterable[str], *, embed: bool = True, batch: int = 256) -> tuple[int, int]:
        """Reads turns in the export format; ids already stored are skipped. Returns (added, skipped).

        The whole input is validated before anything is written, so a bad line imports nothing.
        """
        turns = read_turns(lines)
        added = 0
        for start in range(0, len(turns), batch):
            added += self.add_many(turns[start : start + batch], embed=embed)
        return added, len(turns) - added
