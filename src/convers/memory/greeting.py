"""What the agent says first: an introduction on a first visit, a welcome back by name after."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from convers.contracts.llm import LanguageModel
from convers.contracts.memory import MemoryTurn
from convers.memory.ask import ask, one_paragraph
from convers.memory.names import find_name

log = logging.getLogger(__name__)

WELCOME_SYSTEM = (
    "You are {agent}, greeting {name}, someone you have talked with before, as they come back. "
    "Write one or two short, warm spoken sentences: welcome them back by name and, if it fits, ask "
    "lightly about one thing from last time. Plain speech only: no lists, no quotes, no emoji. "
    "Do not recite what they said."
)


def first_visit(agent_name: str) -> str:
    return f"Hi, I'm {agent_name}. It's nice to meet you! What's your name?"


def returning_without_name(agent_name: str) -> str:
    return f"Hello again, it's {agent_name}. I'm afraid I never caught your name. What should I call you?"


def welcome_back(name: str) -> str:
    return f"Welcome back, {name}! It's good to hear from you again. How have you been?"


def name_from_turns(turns: Sequence[MemoryTurn]) -> str | None:
    """The most recent name the user gave with certainty ("my name is", "call me"), newest turns first."""
    for turn in turns:
        if turn.role != "user" or turn.kind != "turn":
            continue
        mention = find_name(turn.text)
        if mention is not None and mention.certain:
            return mention.name
    return None


async def compose_welcome(
    agent_name: str,
    name: str,
    last_time: Sequence[MemoryTurn],
    llm: LanguageModel | None,
    timeout_s: float = 4.0,
) -> str:
    """A welcome back by name that may pick up a thread from `last_time` (the previous session's
    user turns, oldest first). Uses the model when there is one and it answers in time; else a template."""
    if llm is None or not last_time:
        return welcome_back(name)
    notes = "\n".join(f"- {t.text}" for t in last_time[-6:])
    try:
        answer = await ask(
            llm,
            WELCOME_SYSTEM.format(agent=agent_name, name=name),
            f"Things {name} said last time:\n{notes}\n\nYour greeting:",
            max_tokens=60,
            timeout_s=timeout_s,
        )
    except Exception as error:  # noqa: BLE001 - a plain welcome is fine
        log.info("greeting falls back to the template: %r", error)
        return welcome_back(name)
    text = one_paragraph(answer, max_chars=240)
    # The point of this greeting is the name; a model that drops it gets the template instead.
    return text if name.split()[0].lower() in text.lower() else welcome_back(name)
