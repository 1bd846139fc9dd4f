"""Observation keys: short third-person notes the language model writes about a speaker from what they said.

"I hauled my tent up to the ridge last weekend" answers "would Maya enjoy a hiking trip?" only by
inference; the note "Maya enjoys camping and hiking" is near the question's words. Each note is
stored as a derived key of the turn it came from (kind `observation`, with a vector of its own;
memory/key_table.py), so a question near a note lifts that turn (memory/search.py), and
forgetting the turn forgets the note.

Written in the background when the model is idle (idle_gate.py), never on the reply's path; off
unless `memory.observation_keys`. A failed or slow model, or an answer that is no note, stores
nothing: the turn itself is always stored first.
"""

from __future__ import annotations

import asyncio
import logging
import re
from contextlib import aclosing

from convers.contracts.llm import ChatMessage, LanguageModel

log = logging.getLogger(__name__)

OBSERVATION_SYSTEM = (
    "You write short notes about a person from one thing they said. Each note is one short sentence in the "
    "third person that starts with the person's name and says what they like, do, have or are like. "
    "Write one to three notes, one per line."
)
# Two worked examples, as earlier turns of the chat: the packaged 135M model answered the bare
# instruction by repeating the turn ("Maya: I tried shakshuka...") or apologising; with them it
# writes notes of the right form (what they say is another matter: docs/memory.md).
EXAMPLES = (
    ("Ana", "I hauled my tent up to the ridge last weekend, the view was worth it.",
     "Ana enjoys camping and hiking.\nAna likes the outdoors."),
    ("Tom", "My daughter Lily started piano lessons, she practises every evening.",
     "Tom has a daughter named Lily.\nTom's daughter plays the piano."),
)
MAX_TOKENS = 48
MAX_OBSERVATIONS = 3
# A turn of fewer words, or a question, says too little about its speaker to be worth a model call
# ("Oh nice!", "How was your week?"): half the turns of a conversation.
MIN_WORDS = 6
# A note is a short sentence: longer lines are rambling, shorter ones ("Sam has.") say nothing.
NOTE_WORDS = (3, 20)
_FIRST_PERSON = re.compile(r"\b(i|i'm|i've|i'd|me|my|mine|we|our|us)\b", re.IGNORECASE)
_CAPITALISED = re.compile(r"\b[A-Z][a-z'-]+")


def needs_observations(text: str) -> bool:
    """Whether a turn is worth asking the model about."""
    return len(text.split()) >= MIN_WORDS and not text.rstrip().endswith("?")


def messages(speaker: str, text: str) -> list[ChatMessage]:
    """The chat that asks for notes on `speaker` from `text`."""
    chat = [ChatMessage("system", OBSERVATION_SYSTEM)]
    for name, said, notes in EXAMPLES:
        chat += [ChatMessage("user", f"{name} said: {said}"), ChatMessage("assistant", notes)]
    chat.append(ChatMessage("user", f"{speaker} said: {text}"))
    return chat


def parse(answer: str, speaker: str, text: str) -> list[str]:
    """The notes in a model's answer that are notes about `speaker`: at most MAX_OBSERVATIONS lines that
    start with their name, in the third person, of a sensible length, naming no one the turn does not
    (a small model copies the examples' "Lily" into other people's notes), and not the turn itself."""
    said = text.lower()
    allowed = {speaker.lower(), *(w.lower() for w in _CAPITALISED.findall(text))}
    notes: list[str] = []
    for line in answer.splitlines():
        note = " ".join(line.strip().lstrip("-*0123456789. ").split())
        words = note.split()
        if not note.startswith(speaker) or not NOTE_WORDS[0] <= len(words) <= NOTE_WORDS[1]:
            continue
        invented = {w.lower().removesuffix("'s") for w in _CAPITALISED.findall(note[len(speaker):])} - allowed
        if _FIRST_PERSON.search(note) or invented or note.lower().rstrip(".") in said:
            continue
        if note not in notes:
            notes.append(note)
        if len(notes) == MAX_OBSERVATIONS:
            break
    return notes


async def make_observations(llm: LanguageModel, speaker: str, text: str, timeout_s: float = 60.0) -> list[str]:
    """The notes the model writes about `speaker` from `text` ([] when it fails, takes over `timeout_s`
    or writes none).

    Cancellation is not caught: the idle gate cancels a call when a turn starts, and closing the
    stream stops the model.
    """
    parts: list[str] = []

    async def collect() -> None:
        # A low temperature: a note should say what was said, not embroider it.
        async with aclosing(llm.stream(messages(speaker, text), max_tokens=MAX_TOKENS, temperature=0.2)) as stream:
            async for delta in stream:
                if isinstance(delta, str):
                    parts.append(delta)

    try:
        await asyncio.wait_for(collect(), timeout_s)
    except Exception as error:  # noqa: BLE001 - any failure: no notes, the turn is stored anyway
        log.warning("observation keys skipped: %r", error)
        return []
    return parse("".join(parts), speaker, text)

