"""SqliteMemoryStore: every turn in one SQLite file, searchable by meaning (vectors) and by words (FTS5).

Durability rules this module keeps:
- WAL journal with synchronous=FULL: a committed turn survives kill -9 and power loss.
- A database that cannot be read is reported (MemoryStoreError naming the file); it is never
  deleted, recreated or written to, so the user can still rescue it.
- busy_timeout lets two processes write at once; writes take the lock up front (BEGIN IMMEDIATE)
  so two writers never deadlock upgrading a read lock.
- The embedder is called outside the database lock, and a failing embedder stores the row with a
  NULL vector for `backfill` to fill later: a turn is never lost or delayed for want of a vector.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from convers.contracts.embedder import Embedder, EmbedderError
from convers.contracts.memory import MemoryHit, MemoryStoreError, MemoryTurn
from convers.contracts.provider import Availability
from convers.memory.vectors import VectorIndex, embed_blocking, unit_rows
from convers.private_files import create_private, private_dir, tighten

if TYPE_CHECKING:
    from convers.config import Settings

log = logging.getLogger(__name__)

DB_FILE_NAME = "memory.db"
Fusion = Literal["rrf", "blend"]
SearchMode = Literal["fused", "vector", "lexical"]

# Each entry upgrades the schema by one version; PRAGMA user_version counts the entries applied.
# Never edit a released entry: append a new one.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE turns (
            rowid INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE,
            session TEXT NOT NULL,
            time TEXT NOT NULL,
            speaker TEXT NOT NULL,
            role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
            text TEXT NOT NULL,
            kind TEXT NOT NULL DEFAULT 'turn' CHECK (kind IN ('turn', 'digest')),
            source_id TEXT,
            embedding BLOB
        )""",
        "CREATE INDEX turns_session ON turns (session, rowid)",
        "CREATE INDEX turns_source ON turns (source_id) WHERE source_id IS NOT NULL",
        "CREATE INDEX turns_unembedded ON turns (rowid) WHERE embedding IS NULL",
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        # Speaker names and spelled-out dates are indexed too: questions name people and days.
        """CREATE VIRTUAL TABLE turns_fts USING fts5(
            text, speaker, when_words, tokenize = 'porter unicode61'
        )""",
    ),
)

# BM25 column weights: the words said count most; who said it and when help break ties.
FTS_WEIGHTS = (1.0, 0.5, 0.3)
# Lexical evidence as a similarity in [0, 1): bm25 / (bm25 + LEXICAL_HALF). A BM25 of 6 (a rare
# word or two matched) maps to 0.5.
LEXICAL_HALF = 6.0
# Reciprocal rank fusion constant from Cormack et al. (2009); larger flattens rank differences.
RRF_K = 60
# blend: similarity = BLEND_VECTOR_WEIGHT * cosine + (1 - weight) * lexical. `convers bench memory`
# (480 questions, MiniLM, filler naming the same people), recall@1 at 1k / 10k / 100k turns:
# blend 0.85: 0.785 / 0.708 / 0.696; blend 0.7: 0.783 / 0.696 / 0.527; vector only 0.790 / 0.710 /
# 0.702; reciprocal rank fusion 0.565 / 0.504 / 0.579; words only 0.531 / 0.500 / 0.500. Words lift
# keyword questions to ~1.0 but, weighted higher, drown paraphrases in turns that merely share a name.
BLEND_VECTOR_WEIGHT = 0.85
# Each ranking contributes this many candidates to fusion.
CANDIDATES = 50
# Two hits this close in meaning say the same thing; the prompt needs only one.
NEAR_DUPLICATE_COSINE = 0.97

STOPWORDS = frozenset(
    """a an the and or but if then so of to in on at by for with from about as into over after before
    is am are was were be been being do does did have has had i me my mine we us our you your he him his
    she her it its they them their this that these those what which who whom whose when where why how
    can could would should will shall may might must not no yes just also too very really there here
    tell told say said remember know think like get got go going s t don didn im ive id""".split()
)


@dataclass
class StoreStats:
    """Counts for `convers memory` and the doctor: how much is stored and how much lacks a vector."""

    turns: int
    digests: int
    unembedded: int
    embed_failures: int
    path: str


class TurnRecord(BaseModel):
    """One line of a JSONL export: the exchange format for `convers memory export/import`."""

    model_config = ConfigDict(extra="ignore")

    id: str
    session: str
    time: datetime
    speaker: str
    role: Literal["user", "assistant"]
    text: str

    def turn(self) -> MemoryTurn:
        return MemoryTurn(self.id, self.session, self.time, self.speaker, self.role, self.text)


def new_turn_id() -> str:
    return uuid.uuid4().hex


def when_words(time: datetime) -> str:
    """A date spelled out for the word index: 'monday 3 march 2025 mar'."""
    return f"{time:%A} {time.day} {time:%B} {time.year} {time:%b}".lower()


def query_terms(text: str) -> list[str]:
    """Content words of a question, for the FTS5 query (stopwords would match everything)."""
    words = re.findall(r"[^\W_]+", text.lower())
    seen: dict[str, None] = {}
    for word in words:
        if word not in STOPWORDS and (len(word) > 1 or word.isdigit()):
            seen.setdefault(word, None)
    return list(seen)


@dataclass
class _Candidate:
    rowid: int
    cosine: float | None = None
    lexical: float = 0.0
    vector_rank: int | None = None
    lexical_rank: int | None = None
    similarity: float = 0.0
    order: float = 0.0


@dataclass
class SqliteMemoryStore:
    """The recall store: one SQLite file (WAL) with a vector per turn and an FTS5 word index.

    Safe to share between threads (one connection behind a lock) and between processes (SQLite
    locking with a busy timeout). All methods block: async callers run them with asyncio.to_thread.
    """

    path: Path
    embedder: Embedder | None = None
    floor: float = 0.0
    fusion: Fusion = "blend"
    blend_vector_weight: float = BLEND_VECTOR_WEIGHT
    lexical_half: float = LEXICAL_HALF
    busy_timeout_s: float = 10.0
    embed_failures: int = 0
    _conn: sqlite3.Connection = field(init=False, repr=False)
    _lock: threading.RLock = field(init=False, repr=False, default_factory=threading.RLock)
    _index: VectorIndex = field(init=False, repr=False, default_factory=VectorIndex)
    _index_rowid: int = field(init=False, repr=False, default=-1)
    _index_generation: str | None = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        self.path = Path(self.path).expanduser()
        self._conn = self._open()

    # ----------------------------------------------------------------- provider convention

    @classmethod
    def from_settings(cls, settings: Settings, embedder: Embedder | None = None) -> SqliteMemoryStore:
        """The store at data_dir/memory.db with recall settings applied; `embedder` may be None."""
        return cls(
            settings.data_path / DB_FILE_NAME,
            embedder=embedder,
            floor=settings.memory.recall_floor,
            fusion=settings.memory.options.get("fusion", "blend"),
        )

    @classmethod
    def availability(cls, settings: Settings) -> Availability:
        try:
            probe = sqlite3.connect(":memory:")
            probe.execute("CREATE VIRTUAL TABLE probe USING fts5(text)")
            probe.close()
        except sqlite3.Error as error:
            return Availability(False, f"SQLite {sqlite3.sqlite_version} lacks FTS5 ({error}); use a Python built with FTS5")
        return Availability(True, f"SQLite {sqlite3.sqlite_version} at {settings.data_path / DB_FILE_NAME}")

    # ----------------------------------------------------------------- opening and errors

    def _error(self, error: sqlite3.Error, doing: str) -> MemoryStoreError:
        text = str(error)
        if _is_busy(error):
            return MemoryStoreError(
                f"memory database {self.path} is locked by another process while {doing} "
                f"(waited {self.busy_timeout_s:g} s): close the other convers process and try again"
            )
        if isinstance(error, sqlite3.DatabaseError) and any(
            word in text for word in ("not a database", "malformed", "corrupt", "disk image")
        ):
            return MemoryStoreError(
                f"memory database {self.path} is damaged ({text}) while {doing}; it was left untouched. "
                f"Move it aside (mv {self.path} {self.path}.broken) to start a fresh memory, "
                f"or try `sqlite3 {self.path} .recover` to rescue its turns"
            )
        return MemoryStoreError(f"memory database {self.path}: {text} while {doing}")

    def _open(self) -> sqlite3.Connection:
        try:
            private_dir(self.path.parent)
            # SQLite gives the -wal and -shm files the mode of the database file: 0600 before the
            # first connect makes all three private from the first write.
            create_private(self.path)
            for companion in ("-wal", "-shm"):
                tighten(self.path.with_name(self.path.name + companion))
        except OSError as error:
            raise MemoryStoreError(f"cannot create {self.path}: {error.strerror}") from error
        # SQLite answers "locked" at once, without its busy handler, when two connections set up
        # the same file together (the switch to WAL, a first migration): try again until the busy
        # timeout, as it would for an ordinary lock.
        deadline = time.monotonic() + self.busy_timeout_s
        delay_s = 0.01
        while True:
            try:
                return self._connect()
            except sqlite3.Error as error:
                busy = isinstance(error, sqlite3.OperationalError) and _is_busy(error)
                if not busy or time.monotonic() + delay_s > deadline:
                    raise self._error(error, "opening it") from error
            time.sleep(delay_s)
            delay_s = min(delay_s * 2, 0.2)

    def _connect(self) -> sqlite3.Connection:
        """One attempt to open, check and migrate the database; sqlite3 errors are the caller's."""
        conn = sqlite3.connect(
            str(self.path), timeout=self.busy_timeout_s, isolation_level=None, check_same_thread=False
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
            # Reading the schema first makes a damaged file fail here, before anything writes to it.
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                log.warning("memory database %s is in %s mode, not WAL (network file system?)", self.path, mode)
            conn.execute("PRAGMA synchronous = FULL")
            # Forgotten turns are overwritten on disk, not just unlinked from the b-tree.
            conn.execute("PRAGMA secure_delete = ON")
            self._migrate(conn)
            if conn.execute("PRAGMA quick_check(1)").fetchone()[0] != "ok":
                raise sqlite3.DatabaseError("database disk image is malformed (quick_check failed)")
        except BaseException:
            conn.close()
            raise
        return conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise MemoryStoreError(
                f"memory database {self.path} has schema version {version}, newer than this convers "
                f"understands ({len(MIGRATIONS)}): upgrade convers"
            )
        if version == len(MIGRATIONS):
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Re-read under the write lock: another process may have migrated while we waited.
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            for number in range(version, len(MIGRATIONS)):
                for statement in MIGRATIONS[number]:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {number + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def schema_version(self) -> int:
        with self._lock:
            return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> SqliteMemoryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- transactions

    def _write(self, doing: str) -> _Transaction:
        return _Transaction(self, doing)

    def _bump_generation(self) -> None:
        """Records that stored vectors changed other than by appending (another process must reload)."""
        row = self._conn.execute("SELECT value FROM meta WHERE key = 'vector_generation'").fetchone()
        old = row[0] if row else None
        new = uuid.uuid4().hex
        self._conn.execute(
            "INSERT INTO meta (key, value) VALUES ('vector_generation', ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (new,),
        )
        # If someone else bumped since we last synced, our index is stale: force a full reload.
        self._index_generation = new if old == self._index_generation else "stale"

    def _index_add(self, rowids: list[int], vectors: np.ndarray) -> None:
        """Adds to the in-memory index; vectors of another width (the embedder changed) stay out of it."""
        try:
            self._index.add(rowids, vectors)
        except ValueError as error:
            log.warning(
                "memory %s: %s; vector recall covers only turns from one embedder. To re-embed everything: "
                "`convers memory export F`, `convers memory wipe`, `convers memory import F`", self.path, error
            )

    # ----------------------------------------------------------------- writing

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

    def add(self, turn: MemoryTurn, source_id: str | None = None, vector: np.ndarray | None = None) -> str:
        """Stores one turn, with `vector` or embedding it first (NULL if the embedder fails). Returns its id."""
        self.add_many([turn], source_ids=[source_id], vectors=None if vector is None else vector[None, :])
        return turn.id

    def add_many(
        self,
        turns: Sequence[MemoryTurn],
        *,
        vectors: np.ndarray | None = None,
        embed: bool = True,
        source_ids: Sequence[str | None] | None = None,
    ) -> int:
        """Stores turns in one transaction; ids already stored are skipped. Returns how many were new.

        `vectors` supplies precomputed embeddings (one row per turn); `embed=False` stores NULL vectors
        for a later `backfill` (fast bulk import).
        """
        if not turns:
            return 0
        if vectors is None and embed:
            vectors = self._embed([t.text for t in turns])
        elif vectors is not None:
            vectors = unit_rows(vectors)
            if len(vectors) != len(turns):
                raise ValueError(f"{len(vectors)} vectors for {len(turns)} turns")
        added_rowids: list[int] = []
        added_vectors: list[np.ndarray] = []
        with self._write("storing turns"):
            for i, turn in enumerate(turns):
                blob = None if vectors is None else vectors[i].tobytes()
                source = source_ids[i] if source_ids is not None else None
                cursor = self._conn.execute(
                    "INSERT INTO turns (id, session, time, speaker, role, text, kind, source_id, embedding) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                    (turn.id, turn.session, turn.time.isoformat(), turn.speaker, turn.role, turn.text,
                     turn.kind, source, blob),
                )
                if cursor.rowcount != 1:
                    continue
                rowid = int(cursor.lastrowid)  # type: ignore[arg-type]
                self._conn.execute(
                    "INSERT INTO turns_fts (rowid, text, speaker, when_words) VALUES (?, ?, ?, ?)",
                    (rowid, turn.text, turn.speaker, when_words(turn.time)),
                )
                added_rowids.append(rowid)
                if vectors is not None:
                    added_vectors.append(vectors[i])
        # The index only follows committed rows, so a failed transaction leaves no phantom vectors.
        if vectors is not None and added_rowids and self._index_rowid >= 0:
            with self._lock:
                self._index_add(added_rowids, np.stack(added_vectors))
        return len(added_rowids)

    def backfill(self, limit: int = 64) -> int:
        """Embeds up to `limit` turns stored without a vector. Returns how many were filled."""
        if self.embedder is None:
            return 0
        with self._lock:
            try:
                rows = self._conn.execute(
                    "SELECT rowid, text FROM turns WHERE embedding IS NULL ORDER BY rowid LIMIT ?", (limit,)
                ).fetchall()
            except sqlite3.Error as error:
                raise self._error(error, "looking for turns to embed") from error
        if not rows:
            return 0
        try:
            vectors = embed_blocking(self.embedder, [text for _, text in rows])
        except EmbedderError as error:
            log.info("backfill postponed, embedder still failing: %s", error)
            return 0
        filled: list[int] = []
        with self._write("storing backfilled vectors"):
            for (rowid, _), vector in zip(rows, vectors):
                cursor = self._conn.execute(
                    "UPDATE turns SET embedding = ? WHERE rowid = ? AND embedding IS NULL", (vector.tobytes(), rowid)
                )
                if cursor.rowcount == 1:
                    filled.append(rowid)
            self._bump_generation()
        if filled and self._index_rowid >= 0:
            with self._lock:
                by_rowid = {r: v for (r, _), v in zip(rows, vectors)}
                self._index_add(filled, np.stack([by_rowid[r] for r in filled]))
        return len(filled)

    def attach_vector(self, turn_id: str, vector: np.ndarray) -> bool:
        """Sets the vector of a turn stored without one; False when it has one already or is gone.

        A conversation commits a turn first and attaches its vector when the embedder delivers it,
        so the commit (which the client's echo waits for) never waits on the embedder.
        """
        unit = unit_rows(vector[None, :])[0]
        with self._write("storing a turn's vector"):
            row = self._conn.execute("SELECT rowid FROM turns WHERE id = ? AND embedding IS NULL", (turn_id,)).fetchone()
            if row is not None:
                self._conn.execute("UPDATE turns SET embedding = ? WHERE rowid = ?", (unit.tobytes(), row[0]))
                self._bump_generation()
        if row is None:
            return False
        if self._index_rowid >= 0:
            with self._lock:
                self._index_add([int(row[0])], unit[None, :])
        return True

    def forget(self, turn_id: str) -> bool:
        """Deletes a turn and any digest made from it. False when no such id."""
        with self._write("forgetting a turn"):
            rows = self._conn.execute(
                "SELECT rowid FROM turns WHERE id = ? OR source_id = ?", (turn_id, turn_id)
            ).fetchall()
            rowids = [r[0] for r in rows]
            for rowid in rowids:
                self._conn.execute("DELETE FROM turns WHERE rowid = ?", (rowid,))
                self._conn.execute("DELETE FROM turns_fts WHERE rowid = ?", (rowid,))
            if rowids:
                self._bump_generation()
        with self._lock:
            self._index.remove(rowids)
        return bool(rowids)

    def wipe(self) -> int:
        """Deletes every turn (the file stays, overwritten). Returns how many turns there were."""
        with self._write("wiping memory"):
            count = self._conn.execute("SELECT count(*) FROM turns").fetchone()[0]
            self._conn.execute("DELETE FROM turns")
            self._conn.execute("DELETE FROM turns_fts")
            self._bump_generation()
        with self._lock:
            self._index.clear()
            # Old pages also live in the write-ahead log until a checkpoint copies and truncates it.
            try:
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as error:
                log.warning("wipe: WAL checkpoint postponed: %s", error)
        return int(count)

    # ----------------------------------------------------------------- reading

    def _turn(self, row: Sequence[Any]) -> MemoryTurn:
        id_, session, time, speaker, role, text, kind = row[:7]
        return MemoryTurn(id_, session, datetime.fromisoformat(time), speaker, role, text, kind)

    _COLUMNS = "id, session, time, speaker, role, text, kind"

    def count(self, kind: str | None = "turn") -> int:
        """Stored turns (kind None counts digests too)."""
        with self._lock:
            try:
                if kind is None:
                    return int(self._conn.execute("SELECT count(*) FROM turns").fetchone()[0])
                return int(self._conn.execute("SELECT count(*) FROM turns WHERE kind = ?", (kind,)).fetchone()[0])
            except sqlite3.Error as error:
                raise self._error(error, "counting turns") from error

    def stats(self) -> StoreStats:
        with self._lock:
            turns, digests, unembedded = self._conn.execute(
                "SELECT sum(kind = 'turn'), sum(kind = 'digest'), sum(embedding IS NULL) FROM turns"
            ).fetchone()
        return StoreStats(turns or 0, digests or 0, unembedded or 0, self.embed_failures, str(self.path))

    def get(self, turn_id: str) -> MemoryTurn | None:
        with self._lock:
            row = self._conn.execute(f"SELECT {self._COLUMNS} FROM turns WHERE id = ?", (turn_id,)).fetchone()
        return self._turn(row) if row else None

    def list(
        self, limit: int = 50, offset: int = 0, *, newest_first: bool = True, kind: str | None = None,
        session: str | None = None, role: str | None = None, exclude_session: str | None = None,
    ) -> list[MemoryTurn]:
        """Stored turns, newest first by default, optionally filtered."""
        where, params = [], []  # type: ignore[var-annotated]
        for column, value, op in (("kind", kind, "="), ("session", session, "="), ("role", role, "="),
                                  ("session", exclude_session, "!=")):
            if value is not None:
                where.append(f"{column} {op} ?")
                params.append(value)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        order = "DESC" if newest_first else "ASC"
        with self._lock:
            try:
                rows = self._conn.execute(
                    f"SELECT {self._COLUMNS} FROM turns {clause} ORDER BY rowid {order} LIMIT ? OFFSET ?",
                    (*params, limit, offset),
                ).fetchall()
            except sqlite3.Error as error:
                raise self._error(error, "listing turns") from error
        return [self._turn(r) for r in rows]

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

    def _sync_index(self) -> None:
        """Brings the in-memory vectors up to date with the database (cheap when nothing changed)."""
        row = self._conn.execute("SELECT value FROM meta WHERE key = 'vector_generation'").fetchone()
        generation = row[0] if row else None
        if self._index_rowid < 0 or generation != self._index_generation:
            self._index.clear()
            self._index_rowid = 0
            self._index_generation = generation
        top = self._conn.execute("SELECT max(rowid) FROM turns").fetchone()[0] or 0
        if top <= self._index_rowid:
            return
        rows = self._conn.execute(
            "SELECT rowid, embedding FROM turns WHERE rowid > ? AND embedding IS NOT NULL", (self._index_rowid,)
        ).fetchall()
        if rows:
            width = self._index.dimension or len(rows[0][1]) // 4
            good = [(r, b) for r, b in rows if len(b) == width * 4]
            if len(good) < len(rows):
                log.warning("memory %s: %d turns have vectors of another width (embedder changed?) and are "
                            "found by words only", self.path, len(rows) - len(good))
            if good:
                matrix = np.frombuffer(b"".join(b for _, b in good), dtype=np.float32).reshape(len(good), width)
                self._index.add([r for r, _ in good], matrix)
        self._index_rowid = top

    def embed_query(self, query: str) -> np.ndarray | None:
        """The query's vector, or None when there is no working embedder."""
        if self.embedder is None:
            return None
        try:
            return embed_blocking(self.embedder, [query])[0]
        except EmbedderError as error:
            log.warning("recall falls back to word search: %s", error)
            return None

    def _lexical(self, query: str, limit: int) -> list[tuple[int, float]]:
        terms = query_terms(query)
        if not terms:
            return []
        match = " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)
        weights = ", ".join(str(w) for w in FTS_WEIGHTS)
        rows = self._conn.execute(
            f"SELECT rowid, -bm25(turns_fts, {weights}) AS score FROM turns_fts WHERE turns_fts MATCH ? "
            "ORDER BY score DESC LIMIT ?",
            (match, limit),
        ).fetchall()
        return [(int(r), float(s)) for r, s in rows]

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
    ) -> list[MemoryHit]:
        """The `k` best turns for `query`, best first, above the similarity floor, without duplicates.

        `vector` is the query's embedding when the caller already has it (None: embed here; if the
        embedder fails the search is word-only). `mode` restricts to one ranking (for the benchmark).
        Every hit's `score` is a similarity in [0, 1]: cosine, lexical, or their blend.
        """
        floor = self.floor if floor is None else floor
        fusion = fusion or self.fusion
        if k <= 0:
            return []
        if mode != "lexical" and vector is None:
            vector = self.embed_query(query)
        excluded = set(exclude)
        with self._lock:
            try:
                vector_hits = []
                if vector is not None and mode != "lexical":
                    self._sync_index()
                    if self._index.dimension not in (None, len(np.ravel(vector))):
                        log.warning("memory %s holds %s-wide vectors but the query is %d wide: searching by words",
                                    self.path, self._index.dimension, len(np.ravel(vector)))
                        vector = None
                    else:
                        vector_hits = self._index.search(unit_rows(vector)[0], CANDIDATES)
                lexical_hits = self._lexical(query, CANDIDATES) if mode != "vector" else []
                candidates = self._score(vector_hits, lexical_hits, vector if mode == "fused" else None, fusion)
                rows = self._rows([c.rowid for c in candidates])
            except sqlite3.Error as error:
                raise self._error(error, "searching") from error
            return self._select(candidates, rows, k, floor, excluded)

    def _score(
        self,
        vector_hits: list[tuple[int, float]],
        lexical_hits: list[tuple[int, float]],
        vector: np.ndarray | None,
        fusion: Fusion,
    ) -> list[_Candidate]:
        found: dict[int, _Candidate] = {}
        for rank, (rowid, cosine) in enumerate(vector_hits):
            found[rowid] = _Candidate(rowid, cosine=cosine, vector_rank=rank)
        for rank, (rowid, bm25) in enumerate(lexical_hits):
            candidate = found.setdefault(rowid, _Candidate(rowid))
            candidate.lexical = bm25 / (bm25 + self.lexical_half)
            candidate.lexical_rank = rank
        if vector is not None:
            # Word matches outside the vector top list still get their true cosine.
            missing = [c.rowid for c in found.values() if c.cosine is None]
            query = unit_rows(vector)[0]
            for rowid, stored in self._index.vectors_for(missing).items():
                found[rowid].cosine = float(stored @ query)
        only_words = not vector_hits
        only_vectors = not lexical_hits and vector is None
        for c in found.values():
            if c.cosine is None or only_words:
                c.similarity = c.lexical  # no vector for this row (or no query vector): words are all we have
            elif only_vectors:
                c.similarity = max(c.cosine, 0.0)
            else:
                weight = self.blend_vector_weight
                c.similarity = weight * max(c.cosine, 0.0) + (1 - weight) * c.lexical
            if fusion == "rrf":
                c.order = sum(1.0 / (RRF_K + r + 1) for r in (c.vector_rank, c.lexical_rank) if r is not None)
            else:
                c.order = c.similarity
        return sorted(found.values(), key=lambda c: (-c.order, -c.similarity, c.rowid))

    def _rows(self, rowids: list[int]) -> dict[int, tuple[Any, ...]]:
        if not rowids:
            return {}
        marks = ",".join("?" * len(rowids))
        rows = self._conn.execute(
            f"SELECT rowid, {self._COLUMNS}, source_id FROM turns WHERE rowid IN ({marks})", rowids
        ).fetchall()
        return {r[0]: r[1:] for r in rows}

    def _select(
        self, candidates: list[_Candidate], rows: dict[int, tuple[Any, ...]], k: int, floor: float, excluded: set[str]
    ) -> list[MemoryHit]:
        hits: list[MemoryHit] = []
        seen_texts: set[str] = set()
        seen_sources: set[str] = set()
        kept_vectors: list[np.ndarray] = []
        vectors = self._index.vectors_for([c.rowid for c in candidates])
        for c in candidates:
            row = rows.get(c.rowid)
            if row is None or c.similarity < floor:
                continue
            turn = self._turn(row)
            source = row[7] or turn.id
            normalised = " ".join(turn.text.lower().split())
            if turn.id in excluded or source in excluded or normalised in seen_texts or source in seen_sources:
                continue
            vector = vectors.get(c.rowid)
            if vector is not None and any(float(vector @ v) >= NEAR_DUPLICATE_COSINE for v in kept_vectors):
                continue
            seen_texts.add(normalised)
            seen_sources.add(source)
            if vector is not None:
                kept_vectors.append(vector)
            hits.append(MemoryHit(turn.id, turn.text, round(c.similarity, 4), turn))
            if len(hits) == k:
                break
        return hits

    # ----------------------------------------------------------------- export / import

    def export_jsonl(self, out: IO[str]) -> int:
        """Writes every raw turn as one JSON object per line (digests are derived and left out)."""
        count = 0
        for turn in self:
            record = {"id": turn.id, "session": turn.session, "time": turn.time.isoformat(),
                      "speaker": turn.speaker, "role": turn.role, "text": turn.text}
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
        return count

    def import_jsonl(self, lines: Iterable[str], *, embed: bool = True, batch: int = 256) -> tuple[int, int]:
        """Reads turns in the export format; ids already stored are skipped. Returns (added, skipped).

        The whole input is validated before anything is written, so a bad line imports nothing.
        """
        turns: list[MemoryTurn] = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = TurnRecord.model_validate_json(line)
            except ValidationError as error:
                problem = error.errors()[0]
                where = ".".join(str(p) for p in problem["loc"]) or "line"
                raise ValueError(f"line {number}: {where}: {problem['msg']}") from None
            turn = record.turn()
            if turn.time.tzinfo is None:
                turn = MemoryTurn(turn.id, turn.session, turn.time.replace(tzinfo=timezone.utc), turn.speaker,
                                  turn.role, turn.text)
            turns.append(turn)
        added = 0
        for start in range(0, len(turns), batch):
            added += self.add_many(turns[start : start + batch], embed=embed)
        return added, len(turns) - added


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT under the store's lock, with sqlite errors turned into MemoryStoreError."""

    def __init__(self, store: SqliteMemoryStore, doing: str) -> None:
        self.store = store
        self.doing = doing

    def __enter__(self) -> None:
        self.store._lock.acquire()
        try:
            self.store._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as error:
            self.store._lock.release()
            raise self.store._error(error, self.doing) from error

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: object) -> None:
        conn = self.store._conn
        try:
            if kind is None:
                conn.execute("COMMIT")
            else:
                conn.execute("ROLLBACK")
        except sqlite3.Error as failure:
            if kind is None:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                raise self.store._error(failure, self.doing) from failure
        finally:
            self.store._lock.release()
        if isinstance(error, sqlite3.Error):
            raise self.store._error(error, self.doing) from error


def _is_busy(error: sqlite3.Error) -> bool:
    """Whether SQLite refused because another connection holds the file (it may work later)."""
    text = str(error)
    return "locked" in text or "busy" in text
