"""The part vectors table (memory/turn_parts.py) as SQL over one connection: writing, loading, deleting.

Each row is one part of a turn (a sentence, a clause, or the question it answers with the answer)
with its vector, tied to the turn by its rowid: forgetting a turn (or wiping) deletes its parts in
the same transaction. Like memory/turn_table.py: no locking, no error handling; the store does both.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence


def replace_parts(conn: sqlite3.Connection, rowid: int, parts: Sequence[tuple[str, str]],
                  vectors: Sequence[bytes], embedder_key: str | None) -> tuple[list[int], list[int]]:
    """Sets the parts of one turn (its earlier parts go): (the ids deleted, the new ids, in order)."""
    gone = delete_for(conn, [rowid])
    ids = []
    for (kind, text), vector in zip(parts, vectors, strict=True):
        cursor = conn.execute("INSERT INTO turn_parts (turn_rowid, kind, text, embedding, embedder) "
                              "VALUES (?, ?, ?, ?, ?)", (rowid, kind, text, vector, embedder_key))
        ids.append(int(cursor.lastrowid))  # type: ignore[arg-type]
    return gone, ids


def delete_for(conn: sqlite3.Connection, rowids: Sequence[int]) -> list[int]:
    """Deletes the parts of the turns `rowids`; their ids."""
    gone: list[int] = []
    for rowid in rowids:
        gone += [int(r[0]) for r in conn.execute("SELECT id FROM turn_parts WHERE turn_rowid = ?", (rowid,))]
        conn.execute("DELETE FROM turn_parts WHERE turn_rowid = ?", (rowid,))
    return gone


def delete_all(conn: sqlite3.Connection) -> int:
    count = int(conn.execute("SELECT count(*) FROM turn_parts").fetchone()[0])
    conn.execute("DELETE FROM turn_parts")
    return count


def parts_after(conn: sqlite3.Connection, after_id: int,
                embedder_key: str | None) -> list[tuple[int, int, str, bytes, str]]:
    """(id, turn rowid, kind, vector, the turn's time) of the parts after `after_id` that `embedder_key`
    made, by id."""
    return [(int(r[0]), int(r[1]), str(r[2]), bytes(r[3]), str(r[4])) for r in conn.execute(
        "SELECT p.id, p.turn_rowid, p.kind, p.embedding, t.time FROM turn_parts p JOIN turns t "
        "ON t.rowid = p.turn_rowid WHERE p.id > ? AND (? IS NULL OR p.embedder = ?) ORDER BY p.id",
        (after_id, embedder_key, embedder_key))]


def last_id(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT coalesce(max(id), 0) FROM turn_parts").fetchone()[0])


def count(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM turn_parts").fetchone()[0])
