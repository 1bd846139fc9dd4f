"""A person who comes back: a profile and a long multi-session memory, for timing replies on a real model.

The memory is one generated conversation of `bench memory`'s corpus (bench/memory_corpus.py) in its
earlier shape (EARLIER_SHAPE, so timings stay comparable across versions of the corpus): 20
evening sessions over months, about 380 turns between the person and the agent (the corpus's
"friend" becomes the agent). The person's profile holds their name and the people in their life,
as `convers profile set` would. The questions they ask are the corpus's questions about themselves
("What sort of animal did I adopt?"), so recall finds real evidence and the prompt carries it, as
it does for someone who talks to the agent every week.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from convers.bench.memory_corpus import EARLIER_SHAPE, BenchConversation, build_conversation
from convers.memory.profile import Person, Profile, ProfileFile

# Which conversation of the corpus and its seed: fixed, so runs compare.
CONVERSATION = 0
SEED = 13


@dataclass(frozen=True)
class ReturningPerson:
    """What was seeded: the person's name, the agent's, how many turns, and the questions to ask."""

    name: str
    agent_name: str
    turns: int
    questions: tuple[str, ...]


def returning_conversation() -> BenchConversation:
    return build_conversation(CONVERSATION, SEED, EARLIER_SHAPE)


def first_person_questions(conversation: BenchConversation) -> tuple[str, ...]:
    """The questions the person asks about their own life, in the corpus's order."""
    asked = []
    for question in conversation.questions:
        words = set(question.text.lower().replace("?", " ").split())
        if words & {"i", "my", "me"} and question.text not in asked:
            asked.append(question.text)
    return tuple(asked)


def seed_returning_person(data_dir: Path, store: object) -> ReturningPerson:
    """Writes the profile into `data_dir` and the conversation into `store` (a SqliteMemoryStore,
    with its embedder: the turns are embedded as `convers memory import` would)."""
    conversation = returning_conversation()
    agent = conversation.friend
    turns = [replace(turn, speaker=agent) if turn.role == "assistant" else turn for turn in conversation.turns]
    import io

    from convers.memory.jsonl import write_turns

    buffer = io.StringIO()
    write_turns(turns, buffer)
    buffer.seek(0)
    store.import_jsonl(buffer, embed=True)  # type: ignore[attr-defined]
    people = _people(conversation)
    ProfileFile.in_data_dir(data_dir).save(Profile(name=conversation.user, people=people))
    return ReturningPerson(conversation.user, agent, len(turns), first_person_questions(conversation))


def _people(conversation: BenchConversation) -> list[Person]:
    """A few names the person mentioned in the first sessions, as a profile would list them."""
    from convers.bench.memory_corpus import KIN

    said = " ".join(turn.text for turn in conversation.turns if turn.role == "user")
    return [Person(name=name) for name in KIN if f" {name} " in f" {said} "][:3]
