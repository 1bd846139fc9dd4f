"""Who said a turn, in its vector: speaker label vectors and the speakers a question can name.

Mean pooling makes "Maya (assistant): text" mostly a vector of the label for short turns, so the
label is added once, with a measured weight, instead of being embedded with the text; the text's
own vector stays the one recall already computed for the query.
"""

from __future__ import annotations

import logging
import re
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from convers.contracts.embedder import Embedder, EmbedderError
from convers.contracts.memory import MemoryTurn
from convers.memory.turn_text import speaker_label
from convers.memory.vectors import embed_blocking, unit_rows

log = logging.getLogger(__name__)

# Stored vector = text vector + SPEAKER_WEIGHT x the speaker label's vector; the query adds
# QUERY_SPEAKER_WEIGHT x the label of the speaker it names (or the user, for "I"). Measured on
# `convers bench memory`: embedding "Maya (assistant), Tuesday 3 May 2026 evening: text" instead
# did worse (short turns become mostly their label, see docs/memory.md).
SPEAKER_WEIGHT = 0.7
QUERY_SPEAKER_WEIGHT = 0.4
FIRST_PERSON = frozenset({"i", "me", "my", "mine", "myself", "im", "am"})


@dataclass
class SpeakerVectors:
    """Label vectors ('Maya (assistant)'), made once each, and the speakers stored so far.

    Not thread-safe by itself: the store calls it under its lock (label vectors may be made outside
    it; a race only embeds a label twice).
    """

    embedder: Embedder | None
    speaker_weight: float = SPEAKER_WEIGHT
    query_speaker_weight: float = QUERY_SPEAKER_WEIGHT
    _labels: dict[str, np.ndarray] = field(init=False, repr=False, default_factory=dict)
    _speakers: dict[str, str] = field(init=False, repr=False, default_factory=dict)
    _counted_to_rowid: int = field(init=False, repr=False, default=-1)
    _user_label: str | None = field(init=False, repr=False, default=None)
    _counts: dict[tuple[str, str], int] = field(init=False, repr=False, default_factory=dict)

    def label_vector(self, label: str) -> np.ndarray | None:
        """The embedding of a speaker label, made once per label and kept (None while the embedder fails)."""
        if label in self._labels:
            return self._labels[label]
        if self.embedder is None:
            return None
        try:
            vector = embed_blocking(self.embedder, [label])[0]
        except EmbedderError as error:
            log.info("no vector for speaker %r yet: %s", label, error)
            return None
        self._labels[label] = vector
        return vector

    def labels_embedded(self) -> list[str]:
        """The labels whose vectors are made and kept (warm_up makes every stored speaker's)."""
        return list(self._labels)

    def turn_vectors(self, turns: Sequence[MemoryTurn], text_vectors: np.ndarray) -> np.ndarray:
        """Stored vectors: each turn's text vector plus speaker_weight x its speaker's label vector."""
        vectors = unit_rows(text_vectors)
        if not self.speaker_weight:
            return vectors
        out = vectors.copy()
        for i, turn in enumerate(turns):
            label = self.label_vector(speaker_label(turn))
            if label is not None and len(label) == out.shape[1]:
                out[i] += self.speaker_weight * label
        return unit_rows(out)

    def known(self, conn: sqlite3.Connection) -> dict[str, str]:
        """Speaker name -> label for every speaker stored (read again when new turns arrived)."""
        top = conn.execute("SELECT max(rowid) FROM turns").fetchone()[0] or 0
        if top < self._counted_to_rowid:
            self._counts.clear()  # rows were deleted (a wipe): count again
            self._counted_to_rowid = -1
        if top != self._counted_to_rowid:
            # Only the rows added since the last look: a conversation adds one at a time.
            for name, role, n in conn.execute(
                "SELECT speaker, role, count(*) FROM turns WHERE kind = 'turn' AND rowid > ? GROUP BY speaker, role",
                (self._counted_to_rowid,),
            ):
                self._counts[(name, role)] = self._counts.get((name, role), 0) + int(n)
            rows = sorted(((n, name, role) for (name, role), n in self._counts.items() if name))
            # The most frequent role wins for a name; the most frequent user-role name is "I".
            self._speakers = {name: f"{name} ({role})" if name.lower() != role else role for _, name, role in rows}
            users = [(n, name) for n, name, role in rows if role == "user"]
            self._user_label = self._speakers.get(max(users)[1]) if users else None
            self._counted_to_rowid = top
        return self._speakers

    def asked_about(self, conn: sqlite3.Connection, query: str) -> str | None:
        """The label of the speaker a question is about: a stored speaker it names, else the user for "I"."""
        words = set(re.findall(r"[^\W_]+", query.lower()))
        for name, label in self.known(conn).items():
            if name.lower() in words:
                return label
        if words & FIRST_PERSON:
            return self._user_label
        return None

    def with_label(self, vector: np.ndarray, label: str | None) -> np.ndarray:
        """`vector` as a unit vector, plus query_speaker_weight x `label`'s vector (when there is one)."""
        unit = unit_rows(vector)[0]
        speaker = self.label_vector(label) if label and self.query_speaker_weight else None
        if speaker is None or len(speaker) != len(unit):
            return unit
        return unit_rows(unit + self.query_speaker_weight * speaker)[0]
