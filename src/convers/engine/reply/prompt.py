"""The prompt as an append-only log, so a model's prompt cache keeps all but the newest words.

A model reads a prompt once and keeps what it read (llama.cpp's cache, Ollama's, vLLM's prefix
cache); a request costs only the tokens after the first one that differs from the last request.
So the prompt is laid out to change only at its end:

- the system message (persona, the profile as it was when the session began, and how to take
  recalled memory) is byte-identical for the whole session;
- the conversation follows, each message exactly as it was first sent: the user's words with the
  memory recalled for them in front, the agent's reply as the person heard it;
- the new words come last, with their own recalled memory and, when the profile changed during the
  session, the new profile (the system message is not rewritten for it: that would re-read all);
- when the conversation outgrows its budget it is trimmed to half the budget at once, so the
  cached prefix survives most turns rather than moving one turn each time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from convers.contracts.llm import ChatMessage
from convers.contracts.memory import MemoryHit
from convers.engine.reply.recall import recall_lines
from convers.engine.reply.tool_calls import without_orphans

DEFAULT_PERSONA = """\
You are {name}, a warm, curious companion who talks with one person by voice.
Everything you write is spoken aloud, so:
- answer in one to three short sentences unless asked for more;
- write plain conversational speech: no markdown, no lists, no emoji, no URLs;
- ask at most one question at a time;
- if you are interrupted, do not repeat what you already said.
You remember this person across conversations. Use what you remember naturally, as a friend would."""

PROFILE_HEADER = "What you know about this person (they may correct it):"
# How recalled memory is framed: background to understand, never to recite. It is said once, in
# the system message; each note in a user message then starts with RECALL_NOTE.
RECALL_NOTE = "Remembered from earlier conversations:"
RECALL_FRAMING = (
    f"Some of their messages begin with a note in square brackets, '[{RECALL_NOTE} ...]'. It holds things "
    "from earlier conversations that may relate to what they say next; they did not say it now. It is "
    "for your understanding only: do not quote it, do not restate or list it, and do not say that you "
    "remembered or looked anything up. Use it only where it naturally helps, as a friend who simply "
    "knows these things would. If it does not fit the moment, ignore it."
)
PROFILE_CHANGED_NOTE = "What you know about this person has changed; it is now:"


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
    """The persona and the conversation's budget; one `PromptLog` per session is built from it.

    `rolling_chars` bounds the conversation part of the prompt (the messages before the new one).
    """

    persona: str
    rolling_chars: int = 2000

    def system(self, profile: str = "") -> ChatMessage:
        """The system message: persona, profile, and how recalled memory is framed."""
        sections = [self.persona]
        if profile.strip():
            sections.append(f"{PROFILE_HEADER}\n{profile.strip()}")
        sections.append(RECALL_FRAMING)
        return ChatMessage("system", "\n\n".join(sections))

    def log(self) -> PromptLog:
        """A new session's prompt log."""
        return PromptLog(self)

    def build(
        self,
        user_text: str,
        history: Sequence[ChatMessage] = (),
        profile: str = "",
        recalled: Sequence[MemoryHit] = (),
    ) -> list[ChatMessage]:
        """The prompt of a one-off request (a fresh log): for anything that has no session."""
        return self.log().build(user_text, history, profile, recalled)


@dataclass(frozen=True)
class SentMessage:
    """A user message as the model got it: with its note in front, and the recalled hits in it."""

    content: str
    recalled_ids: frozenset[str] = frozenset()


@dataclass
class PromptLog:
    """One session's prompt, kept append-only (see the module docstring).

    `build` is pure given the log's state, so a speculation and the reply it turns into build the
    same messages; `sent` records what a request actually sent for a user message, so that later
    prompts repeat it byte for byte.
    """

    builder: PromptBuilder
    # The profile in the system message: fixed at the session's first prompt.
    pinned_profile: str | None = None
    # The profile the model last saw, in the system message or in a note since.
    seen_profile: str | None = None
    # The user message the conversation part starts at (None: the start of the history).
    first: ChatMessage | None = None
    # What was sent for each user message, by the message object's identity (the history keeps
    # the object; a user message is never replaced, only an assistant one cut by a barge-in).
    notes: dict[int, tuple[ChatMessage, SentMessage]] = field(default_factory=dict)

    def prefix(self, history: Sequence[ChatMessage], profile: str = "") -> list[ChatMessage]:
        """The system message and the conversation: everything the next prompt starts with."""
        return self._prefix_of(self._window(history), profile)

    def _prefix_of(self, window: Sequence[ChatMessage], profile: str) -> list[ChatMessage]:
        system = self.builder.system(self.pinned_profile if self.pinned_profile is not None else profile)
        return [system, *(self._as_sent(m) for m in window)]

    def build(
        self,
        user_text: str,
        history: Sequence[ChatMessage] = (),
        profile: str = "",
        recalled: Sequence[MemoryHit] = (),
    ) -> list[ChatMessage]:
        """The messages for a reply to `user_text`, which is not in `history` yet."""
        if self.pinned_profile is None:
            self.pinned_profile = self.seen_profile = profile.strip()
        window = self._window(history)
        messages = self._prefix_of(window, profile)
        sent = self.message_for(user_text, window, profile, recalled)
        messages.append(ChatMessage("user", sent.content))
        return messages

    def message_for(
        self, user_text: str, window: Sequence[ChatMessage], profile: str, recalled: Sequence[MemoryHit]
    ) -> SentMessage:
        """The new user message: a note (the changed profile, new recalled memory), then the words.
        A hit already noted in `window` (the history's messages the prompt holds), or said in it, is
        left out: the model has it."""
        already = {hit_id for message in window for hit_id in self._recalled_in(message)}
        said = {" ".join(m.content.split()) for m in window}
        fresh = [hit for hit in recalled if hit.id not in already and " ".join(hit.text.split()) not in said]
        notes = []
        if profile.strip() != (self.seen_profile or ""):
            notes.append(f"[{PROFILE_CHANGED_NOTE}\n{profile.strip() or '(nothing)'}]")
        if fresh:
            notes.append("\n".join([f"[{RECALL_NOTE}", *recall_lines(fresh)]) + "]")
        content = "\n\n".join([*notes, user_text])
        return SentMessage(content, frozenset(hit.id for hit in fresh))

    def commit(
        self, message: ChatMessage, prompt: Sequence[ChatMessage], recalled: Sequence[MemoryHit] = (), profile: str = ""
    ) -> None:
        """`message` (the history's entry for the user's words) was sent as the last of `prompt`,
        built with `recalled` and `profile`: later prompts repeat it as sent, the hits in its note
        are not noted again while it stays in the window, and its profile counts as seen."""
        content = prompt[-1].content
        flat = " ".join(content.split())
        ids = frozenset(hit.id for hit in recalled if " ".join(hit.text.split()) in flat)
        self.notes[id(message)] = (message, SentMessage(content, ids))
        if PROFILE_CHANGED_NOTE in content:
            self.seen_profile = profile.strip()

    def _recalled_in(self, message: ChatMessage) -> frozenset[str]:
        entry = self.notes.get(id(message))
        return entry[1].recalled_ids if entry is not None and entry[0] is message else frozenset()

    def _as_sent(self, message: ChatMessage) -> ChatMessage:
        entry = self.notes.get(id(message))
        if entry is None or entry[0] is not message:
            return message
        return ChatMessage("user", entry[1].content)

    def _window(self, history: Sequence[ChatMessage]) -> list[ChatMessage]:
        """The history's messages from the first kept one; trimmed to half the budget once it is over."""
        if self.builder.rolling_chars <= 0:
            return []
        start = 0
        if self.first is not None:
            start = next((i for i, m in enumerate(history) if m is self.first), 0)
        sent = [self._as_sent(m) for m in history]
        budget = self.builder.rolling_chars
        if sum(len(m.content) for m in sent[start:]) > budget:
            start = self._trim_point(history, sent, start, budget // 2)
            self.first = history[start] if start < len(history) else self.first
        return without_orphans(history[start:])

    @staticmethod
    def _trim_point(history: Sequence[ChatMessage], sent: Sequence[ChatMessage], start: int, target: int) -> int:
        """The earliest user message from which the rest fits in `target`; the last user message
        when none does (one long turn is kept whole), `start` when there is none."""
        total = sum(len(m.content) for m in sent[start:])
        last_user = start
        for index in range(start, len(history)):
            if history[index].role == "user":
                if total <= target:
                    return index
                last_user = index
            total -= len(sent[index].content)
        return last_user
