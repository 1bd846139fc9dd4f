"""Builds the messages for one reply: persona, profile, recalled memory, recent turns, the new words."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from convers.contracts.llm import ChatMessage
from convers.contracts.memory import MemoryHit
from convers.engine.tool_calls import without_orphans
from convers.memory.recall import render_recall
from convers.memory.rolling import recent_turns

DEFAULT_PERSONA = """\
You are {name}, a warm, curious companion who talks with one person by voice.
Everything you write is spoken aloud, so:
- answer in one to three short sentences unless asked for more;
- write plain conversational speech: no markdown, no lists, no emoji, no URLs;
- ask at most one question at a time;
- if you are interrupted, do not repeat what you already said.
You remember this person across conversations. Use what you remember naturally, as a friend would."""

PROFILE_HEADER = "What you know about this person (they may correct it):"


class PersonaError(ValueError):
    """The persona file is missing or unreadable."""


def load_persona(path: Path | None, agent_name: str) -> str:
    """Persona text from `path` (with `{name}` filled in), or the built-in persona."""
    if path is None:
        return DEFAULT_PERSONA.format(name=agent_name)
    try:
        text = path.expanduser().read_text(encoding="utf-8")
    except OSError as error:
        raise PersonaError(f"persona file {path} cannot be read: {error.strerror}; fix agent.persona_file") from error
    return text.replace("{name}", agent_name).strip()


@dataclass(frozen=True)
class PromptBuilder:
    """Assembles the chat messages for one reply from the three memory layers and the persona."""

    persona: str
    rolling_chars: int = 2000

    def build(
        self,
        user_text: str,
        history: Sequence[ChatMessage] = (),
        profile: str = "",
        recalled: Sequence[MemoryHit] = (),
    ) -> list[ChatMessage]:
        sections = [self.persona]
        if profile.strip():
            sections.append(f"{PROFILE_HEADER}\n{profile.strip()}")
        background = render_recall(recalled)
        if background:
            sections.append(background)
        messages = [ChatMessage("system", "\n\n".join(sections))]
        messages.extend(without_orphans(recent_turns(history, self.rolling_chars)))
        messages.append(ChatMessage("user", user_text))
        return messages
