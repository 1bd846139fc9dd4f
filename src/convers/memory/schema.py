"""The memory database on disk: its schema and upgrades, opening it safely, its transactions and errors.

Durability rules this module keeps:
- WAL journal with synchronous=FULL: a committed turn survives kill -9 and power loss.
- A database that cannot be read is reported (MemoryStoreError naming the file); it is never
  deleted, recreated or written to, so the user can still rescue it.
- busy_timeout lets two processes write at once; writes take the lock up front (BEGIN IMMEDIATE)
  so two writers never deadlock upgrading a read lock.
- The database file and its -wal and -shm companions are private to the user (0600).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from convers.contracts.memory import MemoryStoreError, MemoryTurn
from convers.private_files import create_private, private_dir, tighten

log = logging.getLogger(__name__)

DB_FILE_NAME = "memory.db"
# The columns of a turn, in the order `turn_from_row` reads them.
COLUMNS = "id, session, time, speaker, role, text, kind"

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
    (
        # Keys derived from each turn (memory/derived_keys.py: names and topics), by the turn's rowid:
        # a turn forgotten takes its keys with it. Old rows get theirs as they are re-embedded
        # (turn_text.EMBED_TEXT_VERSION 2).
        """CREATE TABLE turn_keys (
            turn_rowid INTEGER NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('entity', 'topic')),
            key TEXT NOT NULL,
            PRIMARY KEY (turn_rowid, kind, key)
        ) WITHOUT ROWID""",
        "CREATE INDEX turn_keys_by_key ON turn_keys (kind, key, turn_rowid)",
    ),
    (
        # Observation keys (memory/observations.py: "Maya enjoys the outdoors", written by the language
        # model in the background) join names and topics: the table is rebuilt, since SQLite cannot
        # change a CHECK. Each observation's text has a vector of its own, kept once however many
        # turns it came from, and deleted with the last of its keys.
        """CREATE TABLE turn_keys_v4 (
            turn_rowid INTEGER NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('entity', 'topic', 'observation')),
            key TEXT NOT NULL,
            PRIMARY KEY (turn_rowid, kind, key)
        ) WITHOUT ROWID""",
        "INSERT INTO turn_keys_v4 (turn_rowid, kind, key) SELECT turn_rowid, kind, key FROM turn_keys",
        "DROP TABLE turn_keys",
        "ALTER TABLE turn_keys_v4 RENAME TO turn_keys",
        "CREATE INDEX turn_keys_by_key ON turn_keys (kind, key, turn_rowid)",
        """CREATE TABLE observation_vectors (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            key TEXT NOT NULL UNIQUE,
            embedding BLOB NOT NULL,
            embedder TEXT
        )""",
    ),
    (
        # Part vectors (memory/turn_parts.py): a turn's sentences, clauses and the question it answers
        # with its answer, each with a vector that points at the turn by its rowid. Old turns get
        # theirs as they are re-embedded (turn_text.EMBED_TEXT_VERSION 3). AUTOINCREMENT: ids are
        # never reused, so the search loads the parts after the last id it has.
        """CREATE TABLE turn_parts (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            turn_rowid INTEGER NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('sentence', 'clause', 'context')),
            text TEXT NOT NULL,
            embedding BLOB NOT NULL,
            embedder TEXT
        )""",
        "CREATE INDEX turn_parts_by_turn ON turn_parts (turn_rowid)",
    ),
)


def turn_from_row(row: Sequence[Any]) -> MemoryTurn:
    """The turn in a row that starts with COLUMNS."""
    id_, session, time_text, speaker, role, text, kind = row[:7]
    return MemoryTurn(id_, session, datetime.fromisoformat(time_text), speaker, role, text, kind)


def fts5_problem() -> str | None:
    """Why this Python's SQLite cannot hold the word index (no FTS5), or None when it can."""
    try:
        probe = sqlite3.connect(":memory:")
        probe.execute("CREATE VIRTUAL TABLE probe USING fts5(text)")
        probe.close()
    except sqlite3.Error as error:
        return f"SQLite {sqlite3.sqlite_version} lacks FTS5 ({error}); use a Python built with FTS5"
    return None


def is_busy(error: sqlite3.Error) -> bool:
    """Whether SQLite refused because another connection holds the file (it may work later)."""
    text = str(error)
    return "locked" in text or "busy" in text


def database_error(path: Path, error: sqlite3.Error, doing: str, busy_timeout_s: float) -> MemoryStoreError:
    """A MemoryStoreError that names the file, what was being done, and what the user can do about it."""
    text = str(error)
    if is_busy(error):
        return MemoryStoreError(
            f"memory database {path} is locked by another process while {doing} "
            f"(waited {busy_timeout_s:g} s): close the other convers process and try again"
        )
    if isinstance(error, sqlite3.DatabaseError) and any(
        word in text for word in ("not a database", "malformed", "corrupt", "disk image")
    ):
        return MemoryStoreError(
            f"memory database {path} is damaged ({text}) while {doing}; it was left untouched. "
            f"Move it aside (mv {path} {path}.broken) to start a fresh memory, "
            f"or try `sqlite3 {path} .recover` to rescue its turns"
        )
    return MemoryStoreError(f"memory database {path}: {text} while {doing}")


def open_database(path: Path, busy_timeout_s: float) -> sqlite3.Connection:
    """Opens (creating it private if new), checks and upgrades the database; MemoryStoreError if it cannot."""
    try:
        private_dir(path.parent)
        # SQLite gives the -wal and -shm files the mode of the database file: 0600 before the
        # first connect makes all three private from the first write.
        create_private(path)
        for companion in ("-wal", "-shm"):
            tighten(path.with_name(path.name + companion))
    except OSError as error:
        raise MemoryStoreError(f"cannot create {path}: {error.strerror}") from error
    # SQLite answers "locked" at once, without its busy handler, when two connections set up
    # the same file together (the switch to WAL, a first migration): try again until the busy
    # timeout, as it would for an ordinary lock.
    deadline = time.monotonic() + busy_timeout_s
    delay_s = 0.01
    while True:
        try:
            return _connect(path, busy_timeout_s)
        except sqlite3.Error as error:
            busy = isinstance(error, sqlite3.OperationalError) and is_busy(error)
            if not busy or time.monotonic() + delay_s > deadline:
                raise database_error(path, error, "opening it", busy_timeout_s) from error
        time.sleep(delay_s)
        delay_s = min(delay_s * 2, 0.2)


def _connect(path: Path, busy_timeout_s: float) -> sqlite3.Connection:
    """One attempt to open, check and migrate the database; sqlite3 errors are the caller's."""
    conn = sqlite3.connect(str(path), timeout=busy_timeout_s, isolation_level=None, check_same_thread=False)
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
        # Reading the schema first makes a damaged file fail here, before anything writes to it.
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            log.warning("memory database %s is in %s mode, not WAL (network file system?)", path, mode)
        conn.execute("PRAGMA synchronous = FULL")
        # Forgotten turns are overwritten on disk, not just unlinked from the b-tree.
        conn.execute("PRAGMA secure_delete = ON")
        _migrate(conn, path)
        if conn.execute("PRAGMA quick_check(1)").fetchone()[0] != "ok":
            raise sqlite3.DatabaseError("database disk image is malformed (quick_check failed)")
    except BaseException:
        conn.close()
        raise
    return conn


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > len(MIGRATIONS):
        raise MemoryStoreError(
            f"memory database {path} has schema version {version}, newer than this convers "
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


class Transaction:
    """BEGIN IMMEDIATE ... COMMIT under the store's lock, with sqlite errors turned into MemoryStoreError."""

    def __init__(self, conn: sqlite3.Connection, lock: threading.RLock, path: Path, doing: str,
                 busy_timeout_s: float) -> None:
        self.conn = conn
        self.lock = lock
        self.path = path
        self.doing = doing
        self.busy_timeout_s = busy_timeout_s

    def _error(self, error: sqlite3.Error) -> MemoryStoreError:
        return database_error(self.path, error, self.doing, self.busy_timeout_s)

    def __enter__(self) -> None:
        self.lock.acquire()
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as error:
            self.lock.release()
            raise self._error(error) from error

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: object) -> None:
        try:
            if kind is None:
                self.conn.execute("COMMIT")
            else:
                self.conn.execute("ROLLBACK")
        except sqlite3.Error as failure:
            if kind is None:
                try:
                    self.conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                raise self._error(failure) from failure
        finally:
            self.lock.release()
        if isinstance(error, sqlite3.Error):
            raise self._error(error) from error
