"""Finds the user's name in what they say ("my name is Sam", "I'm Sam", "call me Sam")."""

from __future__ import annotations

import re
from dataclasses import dataclass

# "my name is" and "call me" are unambiguous; "I'm X" usually is not a name ("I'm tired"), so it
# counts only when X looks like a name or the agent has just asked for one.
_STRONG = re.compile(
    r"\b(?:my name(?:'s| is)|name's|call me|you can call me|people call me|my friends call me)\s+"
    r"(?P<name>[^\W\d_][\w'-]*(?:\s+[^\W\d_][\w'-]*)?)",
    re.IGNORECASE,
)
_WEAK = re.compile(r"\b(?:i'm|i am|im|this is|it's)\s+(?P<name>[^\W\d_][\w'-]*)", re.IGNORECASE)
_BARE = re.compile(r"^\s*(?P<name>[^\W\d_][\w'-]*)\s*[.!]?\s*$")

NOT_NAMES = frozenset(
    ["a", "an", "the", "not", "just", "so", "very", "really", "fine", "good", "great", "ok", "okay", "well", "sorry", "sure", "glad", "happy", "sad", "tired", "here", "there", "back", "home", "busy", "done", "going", "doing", "feeling", "trying", "looking", "working", "from", "in", "at", "on", "with", "thinking", "sick", "hungry", "ready", "new", "old", "still", "also", "actually", "kind", "sort", "pretty", "quite", "hi", "hello", "hey", "yes", "no", "yeah", "nope", "thanks", "thank", "please", "what", "who", "me", "you", "it", "that", "this", "alright", "bored", "excited", "nervous"]
)


@dataclass(frozen=True)
class NameMention:
    """A name found in a user turn; `certain` is False for the guess-prone patterns."""

    name: str
    certain: bool


def _clean(raw: str) -> str | None:
    words = [w for w in raw.split() if w.lower() not in NOT_NAMES]
    if not words or raw.split()[0].lower() in NOT_NAMES:
        return None
    # Keep a second word only when it is capitalised like a surname ("Sam Lee", not "Sam and").
    kept = [words[0]] + [w for w in words[1:2] if w[:1].isupper()]
    return " ".join(w[:1].upper() + w[1:] for w in kept)


def find_name(text: str, asked_for_name: bool = False) -> NameMention | None:
    """The name the user gives for themselves in `text`, or None.

    `asked_for_name`: the agent's last turn asked for their name, so a bare "Sam." or a lower-case
    "i'm sam" (speech-to-text output) counts as an answer.
    """
    strong = _STRONG.search(text)
    if strong:
        name = _clean(strong.group("name"))
        if name:
            return NameMention(name, certain=True)
    for weak in _WEAK.finditer(text):
        raw = weak.group("name")
        if raw.lower() in NOT_NAMES:
            continue
        if raw[:1].isupper() or asked_for_name:
            name = _clean(raw)
            if name:
                return NameMention(name, certain=False)
    if asked_for_name:
        bare = _BARE.match(text)
        if bare and bare.group("name").lower() not in NOT_NAMES:
            name = _clean(bare.group("name"))
            if name:
                return NameMention(name, certain=False)
    return None
