"""Splitting a turn into sentences and clauses, by punctuation (no model: a turn is a few sentences)."""

from __future__ import annotations

import re

# Sentence ends: ., ! or ? (and a closing quote or bracket), then a space.
_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+|(?<=[.!?…][\"'”’)\]])\s+")
# Clause breaks inside a sentence: a comma, semicolon or colon and a space, or a free-standing dash.
_CLAUSE_BREAK = re.compile(r"\s*[,;:]\s+|\s+[-–—]+\s+")


def sentences(text: str) -> list[str]:
    """The sentences of `text` (split after ., ! or ? and a space), stripped, none empty."""
    return [s.strip() for s in _SENTENCE_END.split(" ".join(text.split())) if s.strip()]


def clauses(sentence: str) -> list[str]:
    """The clauses of one sentence (split at commas, semicolons, colons and dashes)."""
    return [c.strip() for c in _CLAUSE_BREAK.split(sentence) if c.strip()]
