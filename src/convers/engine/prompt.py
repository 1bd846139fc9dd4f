"""Builds the messages for one reply: persona, profile, recalled memory, recent turns, the new words."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from convers.contracts.llm import ChatMessage
from convers.contracts.memory import MemoryHit

DEFAULT_PERSONA = """\
You are {name}, a warm, curious companion who talks with one person by voice.
Everything you write is spoken aloud, so:
- answer in one to three short sentences unless asked for more;
- write plain conversational speech: no markdown, no lists, no emoji, no URLs;
- ask at most one question at a time;
- if you are interrupted, do not repeat what you already said.
You remember this person across conversations. Use what you remember naturally, as a friend would."""

RECALL_HEADER = (
    "Background from earlier conversations with this person, for your own understanding only. "
    "Do not quote it, do not list it and do not mention that you looked it up; "
    "bring it in only where it naturally helps the current conversation."
)
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


def frame_recall(hits: Sequence[MemoryHit]) -> str:
    """Recalled turns as background the model must not restate; '' when there is nothing."""
    if not hits:
        return ""
    lines = [RECALL_HEADER]
    for hit in hits:
        turn = hit.turn
        when = turn.time.strftime("%Y-%m-%d")
        lines.append(f"- ({when}, {turn.speaker}) {hit.text}")
    return "\n".join(lines)


def recent_turns(history: Sequence[ChatMessage], budget_chars: int) -> list[ChatMessage]:
    """The newest whole turns whose text fits in `budget_chars` (the rolling buffer)."""
    kept: list[ChatMessage] = []
    used = 0
    for message in reversed(history):
        used += len(message.content)
        if used > budget_chars:
            break
        kept.append(message)
    kept.reverse()
    # A history must not open with an assistant line cut off from the question it answered.
    while kept and kept[0].role == "assistant" and len(kept) < len(history):
        kept.pop(0)
    return kept


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
        background = frame_recall(recalled)
        if background:
            sections.append(background)
        messages = [ChatMessage("system", "\n\n".join(sections))]
        messages.extend(recent_turns(history, self.rolling_chars))
        messages.append(ChatMessage("user", user_text))
        return messages
