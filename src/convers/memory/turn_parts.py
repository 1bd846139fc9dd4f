"""The parts of a turn that get vectors of their own: its sentences, its clauses, and the question it answers.

One mean-pooled MiniLM vector per turn dilutes a fact said among chatter ("Long week. We finally
brought a puppy home, he chewed my shoes. Anyway, how are you?"): the question about the puppy is
closer to that one sentence than to the whole turn. And an answer ("Yeah, since I was ten!") means
something only with the question it answers. So a turn may have, besides its own vector, part
vectors that point at it (table `turn_parts`); a search scores the turn by its best vector
(memory/search.py). Parts are derived here from the text alone, and embedded by the store where it
embeds the turn (in the background writer, never on the reply's path).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

from convers.contracts.memory import MemoryTurn
from convers.memory.ranking import query_terms
from convers.memory.sentences import clauses, sentences
from convers.memory.turn_text import answered

PartKind = Literal["sentence", "clause", "context"]
PART_KINDS: tuple[PartKind, ...] = ("sentence", "clause", "context")
# The kinds a store writes (memory/ranking.py weighs them when it searches; only sentences paid).
STORED_PART_KINDS: tuple[PartKind, ...] = ("sentence",)
# A part of fewer content words says too little to be found by it ("Anyway.", "Oh wow!"), and a
# turn gets at most this many parts (a long monologue keeps its first sentences: the index grows by
# the part count, and so does every search's matrix pass).
MIN_PART_WORDS = 3
MAX_PARTS = 8
# A context part is the question and its answer as one text: only for answers short enough to need
# it (a long answer says what it is about itself), counted in content words.
CONTEXT_MAX_WORDS = 12
def _worth(parts: Iterable[str]) -> list[str]:
    """The parts with MIN_PART_WORDS content words or more, without repeats."""
    return list(dict.fromkeys(p for p in parts if len(query_terms(p)) >= MIN_PART_WORDS))


def turn_parts(turn: MemoryTurn, previous: MemoryTurn | None,
               kinds: Sequence[PartKind] = PART_KINDS) -> list[tuple[PartKind, str]]:
    """The (kind, text) parts of `turn` for `kinds`, at most MAX_PARTS, sentences first.

    A turn of one sentence has no sentence part (its own vector is that sentence), nor a clause part
    unless the sentence has two clauses worth one. A context part is the other speaker's question
    before it (same session) and the turn, for an answer of at most CONTEXT_MAX_WORDS content words.
    Digests get none: they are one sentence, made from a turn that has its own parts.
    """
    if turn.kind != "turn":
        return []
    out: list[tuple[PartKind, str]] = []
    said = sentences(turn.text)
    if "sentence" in kinds and len(said) > 1:
        out += [("sentence", s) for s in _worth(said)]
    if "clause" in kinds:
        whole = {text for _, text in out} | {" ".join(turn.text.split())}
        for sentence in said:
            pieces = _worth(clauses(sentence))
            if len(pieces) > 1:
                out += [("clause", c) for c in pieces if c not in whole]
    if "context" in kinds and not turn.text.rstrip().endswith("?"):
        question = answered(turn, previous)
        if question and len(query_terms(turn.text)) <= CONTEXT_MAX_WORDS:
            out.append(("context", f"{question} {' '.join(turn.text.split())}"))
    return out[:MAX_PARTS]
