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
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone, tzinfo
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from convers.contracts.embedder import Embedder, EmbedderError
from convers.contracts.memory import MemoryHit, MemoryStoreError, MemoryTurn
from convers.contracts.provider import Availability
from convers.memory.turn_text import (
    EMBED_TEXT_VERSION,
    answered,
    in_zone,
    local_zone,
    speaker_label,
    when_words,
)
from convers.memory.vectors import VectorIndex, embed_blocking, unit_rows
from convers.memory.when import TimeSpan, find_time_span, without_time_words
from convers.private_files import create_private, private_dir, tighten

if TYPE_CHECKING:
    from convers.config import Settings

log = logging.getLogger(__name__)

DB_FILE_NAME = "memory.db"
Fusion = Literal["rrf", "blend", "words"]
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
    (
        # Which embedding text (turn_text.EMBED_TEXT_VERSION) and which embedder made each vector:
        # rows of an older version or another embedder are re-embedded in the background.
        "ALTER TABLE turns ADD COLUMN embed_version INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE turns ADD COLUMN embedder TEXT",
        # The word index gains the question a turn answers; dates are rewritten in the local zone
        # as each row is re-embedded.
        """CREATE VIRTUAL TABLE turns_words USING fts5(
            text, speaker, when_words, answers, tokenize = 'porter unicode61'
        )""",
        "INSERT INTO turns_words (rowid, text, speaker, when_words, answers) "
        "SELECT rowid, text, speaker, when_words, '' FROM turns_fts",
        "DROP TABLE turns_fts",
    ),
)

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
# content words up to SHORT_PENALTY less (see SqliteMemoryStore._prior).
QUESTION_PENALTY = 0.3
SHORT_PENALTY = 0.3
SHORT_TURN_WORDS = 3
# Stored vector = text vector + SPEAKER_WEIGHT x the speaker label's vector; the query adds
# QUERY_SPEAKER_WEIGHT x the label of the speaker it names (or the user, for "I"). Measured on
# `convers bench memory`: embedding "Maya (assistant), Tuesday 3 May 2026 evening: text" instead
# did worse (short turns become mostly their label, see docs/memory.md).
SPEAKER_WEIGHT = 0.7
QUERY_SPEAKER_WEIGHT = 0.4
FIRST_PERSON = frozenset({"i", "me", "my", "mine", "myself", "im", "am"})
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
# Each ranking contributes this many candidates to fusion.
CANDIDATES = 50
# Two hits this close in meaning say the same thing; the prompt needs only one.
NEAR_DUPLICATE_COSINE = 0.97
# Longer questions are cut to this many characters (the embedder reads ~256 word pieces anyway)
# and to this many distinct words for the word index.
MAX_QUERY_CHARS = 2000
MAX_QUERY_TERMS = 48
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
    # Rows whose vector is from an older embedding text or another embedder (re-embedded in the background).
    stale: int = 0


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


def _seconds(iso: str) -> float:
    moment = datetime.fromisoformat(iso)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


@dataclass
class _Candidate:
    rowid: int
    cosine: float | None = None
    lexical: float = 0.0
    vector_rank: int | None = None
    lexical_rank: int | None = None
    span_rank: int | None = None
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
    speaker_weight: float = SPEAKER_WEIGHT
    query_speaker_weight: float = QUERY_SPEAKER_WEIGHT
    lexical_half: float = LEXICAL_HALF
    # The user's zone: dates are indexed and time expressions read in it (None: the system zone).
    zone: tzinfo | None = None
    busy_timeout_s: float = 10.0
    embed_failures: int = 0
    _conn: sqlite3.Connection = field(init=False, repr=False)
    _lock: threading.RLock = field(init=False, repr=False, default_factory=threading.RLock)
    _index: VectorIndex = field(init=False, repr=False, default_factory=VectorIndex)
    _index_rowid: int = field(init=False, repr=False, default=-1)
    _index_generation: str | None = field(init=False, repr=False, default=None)
    _upgrade_cursor: int = field(init=False, repr=False, default=0)
    _speaker_vectors: dict[str, np.ndarray] = field(init=False, repr=False, default_factory=dict)
    _speakers: dict[str, str] = field(init=False, repr=False, default_factory=dict)
    _speakers_rowid: int = field(init=False, repr=False, default=-1)
    _user_label: str | None = field(init=False, repr=False, default=None)
    _speaker_counts: dict[tuple[str, str], int] = field(init=False, repr=False, default_factory=dict)
    # Each turn's prior (_prior of its text) by rowid; a turn's text never changes under its rowid.
    _priors: dict[int, float] = field(init=False, repr=False, default_factory=dict)
    # One worker for the vector pass of large stores (PARALLEL_MIN_VECTORS); started on first need.
    _vector_worker: ThreadPoolExecutor | None = field(init=False, repr=False, default=None)
    # Rows each query word matches (for COMMON_TERM_ROWS), and the row count they were counted at.
    _term_rows: dict[str, int] = field(init=False, repr=False, default_factory=dict)
    _term_rows_at: int = field(init=False, repr=False, default=0)

    def __post_init__(self) -> None:
        self.path = Path(self.path).expanduser()
        if self.zone is None:
            self.zone = local_zone()
        self._conn = self._open()

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

    # ----------------------------------------------------------------- provider convention

    @classmethod
    def from_settings(cls, settings: Settings, embedder: Embedder | None = None) -> SqliteMemoryStore:
        """The store at data_dir/memory.db with recall settings applied; `embedder` may be None."""
        return cls(
            settings.data_path / DB_FILE_NAME,
            embedder=embedder,
            floor=settings.memory.recall_floor,
            fusion=settings.memory.options.get("fusion", DEFAULT_FUSION),
            zone=local_zone(settings.memory.time_zone or None),
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
            if self._vector_worker is not None:
                self._vector_worker.shutdown(wait=True)
                self._vector_worker = None

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

    def _index_add(self, rowids: list[int], vectors: np.ndarray, times: Sequence[float] | None = None) -> None:
        """Adds to the in-memory index; vectors of another width (the embedder changed) stay out of it."""
        try:
            self._index.add(rowids, vectors, times)
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
        """Stores one turn, with `vector` or embedding it first (NULL if the embedder fails). Returns its id.

        A `vector` is the embedding of the turn's bare text (the one recall computed for the query);
        the store adds who said it (see `turn_vectors`).
        """
        self.add_many([turn], source_ids=[source_id], vectors=None if vector is None else vector[None, :])
        return turn.id

    def _previous_turn(self, session: str, before_rowid: int | None = None) -> MemoryTurn | None:
        """The latest raw turn of `session` (before `before_rowid`), the one a new turn may answer."""
        bound = "" if before_rowid is None else "AND rowid < ?"
        params: tuple[Any, ...] = (session,) if before_rowid is None else (session, before_rowid)
        with self._lock:
            row = self._conn.execute(
                f"SELECT {self._COLUMNS} FROM turns WHERE session = ? AND kind = 'turn' {bound} "
                "ORDER BY rowid DESC LIMIT 1",
                params,
            ).fetchone()
        return self._turn(row) if row else None

    def speaker_vector(self, label: str) -> np.ndarray | None:
        """The embedding of a speaker label ('Maya (assistant)'), made once per label and kept."""
        if label in self._speaker_vectors:
            return self._speaker_vectors[label]
        if self.embedder is None:
            return None
        try:
            vector = embed_blocking(self.embedder, [label])[0]
        except EmbedderError as error:
            log.info("no vector for speaker %r yet: %s", label, error)
            return None
        self._speaker_vectors[label] = vector
        return vector

    def turn_vectors(self, turns: Sequence[MemoryTurn], text_vectors: np.ndarray) -> np.ndarray:
        """Stored vectors: each turn's text vector plus SPEAKER_WEIGHT x its speaker's label vector.

        Mean pooling makes "Maya (assistant): text" mostly a vector of the label for short turns, so
        the label is added once, with a measured weight, instead of being embedded with the text; and
        the text's own vector stays the one recall already computed for the query.
        """
        vectors = unit_rows(text_vectors)
        if not self.speaker_weight:
            return vectors
        out = vectors.copy()
        for i, turn in enumerate(turns):
            label = self.speaker_vector(speaker_label(turn))
            if label is not None and len(label) == out.shape[1]:
                out[i] += self.speaker_weight * label
        return unit_rows(out)

    def _query_speaker(self, query: str) -> str | None:
        """The label of the speaker a question is about: a stored speaker it names, else the user for "I"."""
        words = set(re.findall(r"[^\W_]+", query.lower()))
        speakers = self._known_speakers()
        for name, label in speakers.items():
            if name.lower() in words:
                return label
        if words & FIRST_PERSON:
            return self._user_label
        return None

    def _known_speakers(self) -> dict[str, str]:
        """Speaker name -> label for every speaker stored (read again when new turns arrived)."""
        top = self._conn.execute("SELECT max(rowid) FROM turns").fetchone()[0] or 0
        if top < self._speakers_rowid:
            self._speaker_counts.clear()  # rows were deleted (a wipe): count again
            self._speakers_rowid = -1
        if top != self._speakers_rowid:
            # Only the rows added since the last look: a conversation adds one at a time.
            for name, role, n in self._conn.execute(
                "SELECT speaker, role, count(*) FROM turns WHERE kind = 'turn' AND rowid > ? GROUP BY speaker, role",
                (self._speakers_rowid,),
            ):
                self._speaker_counts[(name, role)] = self._speaker_counts.get((name, role), 0) + int(n)
            rows = sorted(((n, name, role) for (name, role), n in self._speaker_counts.items() if name))
            # The most frequent role wins for a name; the most frequent user-role name is "I".
            self._speakers = {name: f"{name} ({role})" if name.lower() != role else role for _, name, role in rows}
            users = [(n, name) for n, name, role in rows if role == "user"]
            self._user_label = self._speakers.get(max(users)[1]) if users else None
            self._speakers_rowid = top
        return self._speakers

    def query_vector(self, query: str, vector: np.ndarray) -> np.ndarray:
        """The question's vector plus QUERY_SPEAKER_WEIGHT x the label vector of the speaker it asks about."""
        unit = unit_rows(vector)[0]
        if not self.query_speaker_weight:
            return unit
        label = self._query_speaker(query)
        speaker = self.speaker_vector(label) if label else None
        if speaker is None or len(speaker) != len(unit):
            return unit
        return unit_rows(unit + self.query_speaker_weight * speaker)[0]

    def _previous_in_batch(self, turns: Sequence[MemoryTurn]) -> list[MemoryTurn | None]:
        latest: dict[str, MemoryTurn | None] = {}
        out: list[MemoryTurn | None] = []
        for turn in turns:
            if turn.session not in latest:
                latest[turn.session] = self._previous_turn(turn.session)
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
            if vectors is not None:
                vectors = self.turn_vectors(turns, vectors)
        elif vectors is not None:
            if len(vectors) != len(turns):
                raise ValueError(f"{len(vectors)} vectors for {len(turns)} turns")
            vectors = self.turn_vectors(turns, np.asarray(vectors, dtype=np.float32).reshape(len(turns), -1))
        key = self.embedder_key
        added_rowids: list[int] = []
        added_vectors: list[np.ndarray] = []
        added_times: list[float] = []
        with self._write("storing turns"):
            for i, turn in enumerate(turns):
                blob = None if vectors is None else vectors[i].tobytes()
                source = source_ids[i] if source_ids is not None else None
                cursor = self._conn.execute(
                    "INSERT INTO turns (id, session, time, speaker, role, text, kind, source_id, embedding, "
                    "embed_version, embedder) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                    (turn.id, turn.session, turn.time.isoformat(), turn.speaker, turn.role, turn.text,
                     turn.kind, source, blob, EMBED_TEXT_VERSION if blob is not None else 0,
                     key if blob is not None else None),
                )
                if cursor.rowcount != 1:
                    continue
                rowid = int(cursor.lastrowid)  # type: ignore[arg-type]
                self._index_words(rowid, turn, previous[i])
                added_rowids.append(rowid)
                if vectors is not None:
                    added_vectors.append(vectors[i])
                    added_times.append(in_zone(turn.time, self.local_zone).timestamp())
        # The index only follows committed rows, so a failed transaction leaves no phantom vectors.
        if vectors is not None and added_rowids and self._index_rowid >= 0:
            with self._lock:
                self._index_add(added_rowids, np.stack(added_vectors), added_times)
        return len(added_rowids)

    def _index_words(self, rowid: int, turn: MemoryTurn, previous: MemoryTurn | None) -> None:
        """(Re)writes the turn's row in the word index (inside the caller's transaction)."""
        self._conn.execute("DELETE FROM turns_words WHERE rowid = ?", (rowid,))
        self._conn.execute(
            "INSERT INTO turns_words (rowid, text, speaker, when_words, answers) VALUES (?, ?, ?, ?, ?)",
            (rowid, turn.text, turn.speaker, when_words(turn.time, self.local_zone), answered(turn, previous)),
        )

    _NEEDS_VECTOR = "(t.embedding IS NULL OR t.embed_version < ? OR (t.embedder IS NOT NULL AND t.embedder != ?))"

    def backfill(self, limit: int = 64) -> int:
        """Embeds up to `limit` turns that lack a current vector: stored without one (the embedder was
        down), from an older embedding text (an upgrade), or from another embedder. Their word-index
        row is rewritten too (local dates, the question answered). Returns how many were done.

        Cheap to call often: it walks the table once by rowid, never rescanning what it finished.
        """
        key = self.embedder_key
        if self.embedder is None or key is None:
            return 0
        with self._lock:
            try:
                rows = self._conn.execute(
                    f"SELECT t.rowid, t.id, t.session, t.time, t.speaker, t.role, t.text, t.kind FROM turns t "
                    f"WHERE t.rowid > ? AND {self._NEEDS_VECTOR} ORDER BY t.rowid LIMIT ?",
                    (self._upgrade_cursor, EMBED_TEXT_VERSION, key, limit),
                ).fetchall()
            except sqlite3.Error as error:
                raise self._error(error, "looking for turns to embed") from error
        if not rows:
            # Rows before the cursor may have lost their vector since (another process): start over next time.
            if self._upgrade_cursor:
                self._upgrade_cursor = 0
                return self.backfill(limit)
            return 0
        turns = [(int(r[0]), self._turn(r[1:])) for r in rows]
        previous = [self._previous_turn(t.session, rowid) if t.kind == "turn" else None for rowid, t in turns]
        try:
            vectors = self.turn_vectors([t for _, t in turns], embed_blocking(self.embedder, [t.text for _, t in turns]))
        except EmbedderError as error:
            log.info("backfill postponed, embedder still failing: %s", error)
            return 0
        filled: list[int] = []
        with self._write("storing backfilled vectors"):
            for (rowid, turn), before, vector in zip(turns, previous, vectors):
                cursor = self._conn.execute(
                    "UPDATE turns SET embedding = ?, embed_version = ?, embedder = ? WHERE rowid = ?",
                    (vector.tobytes(), EMBED_TEXT_VERSION, key, rowid),
                )
                if cursor.rowcount == 1:
                    self._index_words(rowid, turn, before)
                    filled.append(rowid)
            self._bump_generation()
        self._upgrade_cursor = turns[-1][0]
        if filled and self._index_rowid >= 0:
            with self._lock:
                by_rowid = {rowid: (v, t) for (rowid, t), v in zip(turns, vectors)}
                self._index_add(filled, np.stack([by_rowid[r][0] for r in filled]),
                                [in_zone(by_rowid[r][1].time, self.local_zone).timestamp() for r in filled])
        return len(filled)

    def pending_vectors(self) -> int:
        """How many turns `backfill` still has to embed (0 without an embedder: nothing can be done)."""
        key = self.embedder_key
        if key is None:
            return 0
        with self._lock:
            try:
                row = self._conn.execute(
                    f"SELECT count(*) FROM turns t WHERE {self._NEEDS_VECTOR}", (EMBED_TEXT_VERSION, key)
                ).fetchone()
            except sqlite3.Error as error:
                raise self._error(error, "counting turns to embed") from error
        return int(row[0])

    def attach_vector(self, turn_id: str, vector: np.ndarray) -> bool:
        """Sets the vector of a turn stored without one (`vector` embeds its text; the speaker is added
        as for any turn); False when it has one already or is gone.

        A conversation commits a turn first and attaches its vector when the embedder delivers it,
        so the commit (which the client's echo waits for) never waits on the embedder.
        """
        with self._lock:
            try:
                row = self._conn.execute(
                    "SELECT t.rowid, t.id, t.session, t.time, t.speaker, t.role, t.text, t.kind FROM turns t "
                    "WHERE t.id = ? AND t.embedding IS NULL",
                    (turn_id,),
                ).fetchone()
            except sqlite3.Error as error:
                raise self._error(error, "looking up a turn for its vector") from error
        if row is None:
            return False
        turn = self._turn(row[1:])
        unit = self.turn_vectors([turn], np.asarray(vector, dtype=np.float32).reshape(1, -1))[0]
        with self._write("storing a turn's vector"):
            cursor = self._conn.execute(
                "UPDATE turns SET embedding = ?, embed_version = ?, embedder = ? WHERE rowid = ? AND embedding IS NULL",
                (unit.tobytes(), EMBED_TEXT_VERSION, self.embedder_key, row[0]),
            )
            if cursor.rowcount == 1:
                self._bump_generation()
        if cursor.rowcount != 1:
            return False
        if self._index_rowid >= 0:
            with self._lock:
                self._index_add([int(row[0])], unit[None, :], [in_zone(turn.time, self.local_zone).timestamp()])
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
                self._conn.execute("DELETE FROM turns_words WHERE rowid = ?", (rowid,))
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
            self._conn.execute("DELETE FROM turns_words")
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
        key = self.embedder_key
        with self._lock:
            try:
                turns, digests, unembedded, stale = self._conn.execute(
                    "SELECT sum(kind = 'turn'), sum(kind = 'digest'), sum(embedding IS NULL), "
                    "sum(embedding IS NOT NULL AND (embed_version < ? OR (? IS NOT NULL AND embedder IS NOT NULL "
                    "AND embedder != ?))) FROM turns",
                    (EMBED_TEXT_VERSION, key, key),
                ).fetchone()
            except sqlite3.Error as error:
                raise self._error(error, "counting turns") from error
        return StoreStats(turns or 0, digests or 0, unembedded or 0, self.embed_failures, str(self.path), stale or 0)

    def embedders(self) -> dict[str, int]:
        """How many stored vectors each embedder made ('earlier version' for rows from before schema 2)."""
        with self._lock:
            try:
                rows = self._conn.execute(
                    "SELECT coalesce(embedder, 'an earlier version'), count(*) FROM turns "
                    "WHERE embedding IS NOT NULL GROUP BY 1 ORDER BY 2 DESC"
                ).fetchall()
            except sqlite3.Error as error:
                raise self._error(error, "counting vectors") from error
        return {str(name): int(n) for name, n in rows}

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
        """Brings the in-memory vectors up to date with the database (cheap when nothing changed).

        Vectors another embedder made are left out: their cosines against this embedder's query
        mean nothing. Those turns are found by words until `backfill` re-embeds them.
        """
        row = self._conn.execute("SELECT value FROM meta WHERE key = 'vector_generation'").fetchone()
        generation = row[0] if row else None
        if self._index_rowid < 0 or generation != self._index_generation:
            self._index.clear()
            self._index_rowid = 0
            self._index_generation = generation
        top = self._conn.execute("SELECT max(rowid) FROM turns").fetchone()[0] or 0
        if top <= self._index_rowid:
            return
        key = self.embedder_key
        rows = self._conn.execute(
            "SELECT rowid, embedding, time FROM turns WHERE rowid > ? AND embedding IS NOT NULL "
            "AND (? IS NULL OR embedder IS NULL OR embedder = ?)",
            (self._index_rowid, key, key),
        ).fetchall()
        if rows:
            width = self._index.dimension or getattr(self.embedder, "dimension", None) or len(rows[0][1]) // 4
            good = [r for r in rows if len(r[1]) == width * 4]
            if len(good) < len(rows):
                log.warning("memory %s: %d turns have vectors of another width (embedder changed?) and are "
                            "found by words only until they are re-embedded", self.path, len(rows) - len(good))
            if good:
                matrix = np.frombuffer(b"".join(r[1] for r in good), dtype=np.float32).reshape(len(good), width)
                self._index_add([r[0] for r in good], matrix, [_seconds(r[2]) for r in good])
        self._index_rowid = top

    def warm_up(self) -> None:
        """Loads the vectors and runs one search, so the first real question is as fast as the tenth."""
        with self._lock:
            try:
                self._sync_index()
                labels = set(self._known_speakers().values())
            except sqlite3.Error as error:
                raise self._error(error, "loading vectors") from error
        for label in labels:
            self.speaker_vector(label)
        self.search("hello", 1, floor=0.0)

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
        """BM25 over what was said (and answered, and when); the speaker column only when that finds nothing.

        A speaker's name matches half the rows of a two-person store, and ranking them all by BM25
        took 28 of 37 ms per search at 100k turns; who said what is in the vectors (turn_vectors).
        """
        terms = self._without_common(query_terms(query))
        if not terms:
            return []
        match = " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)
        weights = ", ".join(str(w) for w in FTS_WEIGHTS)
        sql = (f"SELECT rowid, -bm25(turns_words, {weights}) AS score FROM turns_words WHERE turns_words MATCH ? "
               "ORDER BY score DESC LIMIT ?")
        rows = self._conn.execute(sql, (f"{{text answers when_words}} : ({match})", limit)).fetchall()
        if not rows:
            rows = self._conn.execute(sql, (match, limit)).fetchall()
        return [(int(r), float(s)) for r, s in rows]

    def _without_common(self, terms: list[str]) -> list[str]:
        """`terms` less those in more than COMMON_TERM_ROWS rows, keeping at least the rarest one."""
        if len(terms) < 2:
            return terms
        rows = len(self._index) or self.count(kind=None)
        limit = max(COMMON_TERM_ROWS, COMMON_TERM_SHARE * rows)
        if rows <= limit:
            return terms  # no word can match more rows than there are
        if rows > self._term_rows_at * 1.1 or len(self._term_rows) > 100_000:
            # Counts grow with the store; 10 % is close enough for a cut-off.
            self._term_rows.clear()
            self._term_rows_at = rows
        counts = []
        for term in terms:
            count = self._term_rows.get(term)
            if count is None:
                # Counting walks the term's row list without scoring: a fraction of what BM25 costs.
                count = self._term_rows[term] = int(self._conn.execute(
                    "SELECT count(*) FROM turns_words WHERE turns_words MATCH ?",
                    ('{text answers when_words} : "' + term.replace('"', '""') + '"',)).fetchone()[0])
            counts.append(count)
        kept = [t for t, n in zip(terms, counts) if n <= limit]
        return kept or [min(zip(counts, terms))[1]]

    def time_span(self, query: str, now: datetime | None = None) -> TimeSpan | None:
        """The span of the user's local time a question points at ("last May"), or None."""
        moment = in_zone(now or datetime.now(timezone.utc), self.local_zone)
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
    ) -> list[MemoryHit]:
        """The `k` best turns for `query`, best first, above the similarity floor, without duplicates.

        `vector` is the query's embedding when the caller already has it (None: embed here; if the
        embedder fails the search is word-only). `mode` restricts to one ranking (for the benchmark).
        A time expression in the query ("two weeks ago", read against `now` in the store's zone)
        prefers turns from that span. Every hit's `score` is a similarity in [0, 1]: cosine,
        lexical, or their blend. An empty or unreadable query finds nothing; it never raises.
        """
        floor = self.floor if floor is None else floor
        fusion = fusion or self.fusion
        query = (query or "")[:MAX_QUERY_CHARS]
        if k <= 0 or not query.strip():
            return []
        if fusion == "words":
            mode = "lexical"
        if mode != "lexical" and vector is None:
            vector = self.embed_query(query)
        span = self.time_span(query, now)
        words = without_time_words(query, span)
        excluded = set(exclude)
        with self._lock:
            try:
                vector_hits: list[tuple[int, float]] = []
                span_hits: list[tuple[int, float]] = []
                vector_job: Future[tuple[list[tuple[int, float]], list[tuple[int, float]]]] | None = None
                if vector is not None and mode != "lexical":
                    self._sync_index()
                    width = len(np.ravel(vector))
                    if self._index.dimension not in (None, width):
                        log.warning("memory %s holds %s-wide vectors but the query is %d wide: searching by words",
                                    self.path, self._index.dimension, width)
                        vector = None
                    else:
                        unit = self.query_vector(query, vector)
                        vector = unit
                        within = None if span is None else (span.start.timestamp(), span.end.timestamp())
                        if len(self._index) >= PARALLEL_MIN_VECTORS and mode != "vector":
                            # The index is only changed under self._lock, which this search holds until
                            # the worker is done, so the worker reads a matrix nobody writes.
                            vector_job = self._start_vector_pass(unit, within)
                        else:
                            vector_hits, span_hits = self._vector_pass(unit, within)
                lexical_hits = self._lexical(words, CANDIDATES) if mode != "vector" else []
                if vector_job is not None:
                    vector_hits, span_hits = vector_job.result()
                rows = self._rows(list({r for r, _ in (*vector_hits, *span_hits, *lexical_hits)}))
                if self.question_penalty or self.short_penalty:
                    vector_hits, span_hits = self._with_priors(vector_hits, rows), self._with_priors(span_hits, rows)
                candidates = self._score(vector_hits, lexical_hits, span_hits, vector if mode == "fused" else None,
                                         fusion)
                rows.update(self._rows([c.rowid for c in candidates if c.rowid not in rows]))
                if self.recency_weight and len(candidates) > 1:
                    candidates = self._prefer_recent(candidates, rows, fusion)
                if self.supersede_cosine and span is None:
                    # A question that names a time wants what was said then, not the latest version.
                    candidates = self._supersede(candidates, rows)
            except sqlite3.Error as error:
                raise self._error(error, "searching") from error
            return self._select(candidates, rows, k, floor, excluded)

    def _vector_pass(self, unit: np.ndarray, within: tuple[float, float] | None
                     ) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
        """The vector candidates, and those said within the span a question names (if it names one)."""
        if within is None:
            return self._index.search(unit, CANDIDATES), []
        return self._index.search_with_span(unit, CANDIDATES, within)

    def _start_vector_pass(self, unit: np.ndarray, within: tuple[float, float] | None
                           ) -> Future[tuple[list[tuple[int, float]], list[tuple[int, float]]]]:
        if self._vector_worker is None:
            self._vector_worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="memory-vectors")
        return self._vector_worker.submit(self._vector_pass, unit, within)

    def _score(
        self,
        vector_hits: list[tuple[int, float]],
        lexical_hits: list[tuple[int, float]],
        span_hits: list[tuple[int, float]],
        vector: np.ndarray | None,
        fusion: Fusion,
    ) -> list[_Candidate]:
        found: dict[int, _Candidate] = {}
        for rank, (rowid, cosine) in enumerate(vector_hits):
            found[rowid] = _Candidate(rowid, cosine=cosine, vector_rank=rank)
        for rank, (rowid, cosine) in enumerate(span_hits):
            candidate = found.setdefault(rowid, _Candidate(rowid, cosine=cosine))
            candidate.span_rank = rank
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
                c.order = sum(
                    w / (RRF_K + r + 1)
                    for w, r in ((self.rrf_vector_weight, c.vector_rank), (self.rrf_lexical_weight, c.lexical_rank),
                                 (self.date_weight, c.span_rank))
                    if r is not None
                )
            else:
                c.order = c.similarity + (self.date_weight * 0.15 if c.span_rank is not None else 0.0)
        return sorted(found.values(), key=lambda c: (-c.order, -c.similarity, c.rowid))

    def _prior(self, text: str) -> float:
        """How much a turn's cosine counts: a question or a two-word "oh nice!" carries little to recall.

        Question queries resemble question turns in style ("what did you have for dinner?") and short
        turns are mostly their speaker's vector; both crowd out the turn that holds the answer.
        """
        prior = 1.0
        if text.rstrip().endswith("?"):
            prior -= self.question_penalty
        content = len(query_terms(text))
        if content < SHORT_TURN_WORDS:
            prior -= self.short_penalty * (SHORT_TURN_WORDS - content) / SHORT_TURN_WORDS
        return prior

    def _with_priors(self, hits: list[tuple[int, float]], rows: dict[int, tuple[Any, ...]]) -> list[tuple[int, float]]:
        weighted = []
        for rowid, cosine in hits:
            prior = self._priors.get(rowid)
            if prior is None and rowid in rows:
                if len(self._priors) > 200_000:
                    self._priors.clear()
                prior = self._priors[rowid] = self._prior(rows[rowid][5])
            weighted.append((rowid, cosine * (1.0 if prior is None else prior)))
        return sorted(weighted, key=lambda hit: -hit[1])

    def _supersede(self, candidates: list[_Candidate], rows: dict[int, tuple[Any, ...]]) -> list[_Candidate]:
        """Lifts a newer restatement by the same speaker just above the older turn it updates."""
        top = [c for c in candidates[:SUPERSEDE_TOP] if c.rowid in rows]
        vectors = self._index.vectors_for([c.rowid for c in top])
        top = [c for c in top if c.rowid in vectors]
        if len(top) < 2:
            return candidates
        matrix = np.stack([vectors[c.rowid] for c in top])
        close = (matrix @ matrix.T) >= self.supersede_cosine
        times = [_seconds(rows[c.rowid][2]) for c in top]
        speakers = [rows[c.rowid][3] for c in top]
        for i, older in enumerate(top):
            for j in range(i + 1, len(top)):
                if (close[i, j] and speakers[i] == speakers[j] and times[j] > times[i]
                        and top[j].similarity >= older.similarity - self.supersede_margin):
                    top[j].order = max(top[j].order, older.order + 1e-6)
        return sorted(candidates, key=lambda c: (-c.order, -c.similarity, c.rowid))

    def _prefer_recent(self, candidates: list[_Candidate], rows: dict[int, tuple[Any, ...]],
                       fusion: Fusion) -> list[_Candidate]:
        """Adds a ranking by time (newest first) among the candidates, weighted by recency_weight."""
        dated = sorted((c for c in candidates if c.rowid in rows), key=lambda c: _seconds(rows[c.rowid][2]), reverse=True)
        for rank, c in enumerate(dated):
            if fusion == "rrf":
                c.order += self.recency_weight / (RRF_K + rank + 1)
            else:
                c.order += self.recency_weight * 0.1 * (1 - rank / max(len(dated) - 1, 1))
        return sorted(candidates, key=lambda c: (-c.order, -c.similarity, c.rowid))

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
            vector = vectors.get(c.rowid)
            if (turn.id in excluded or source in excluded or normalised in seen_texts or source in seen_sources
                    or (vector is not None and any(float(vector @ v) >= NEAR_DUPLICATE_COSINE for v in kept_vectors))):
                # A duplicate of something shown (or left out): its copies and its digest are duplicates too.
                seen_texts.add(normalised)
                seen_sources.add(source)
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
