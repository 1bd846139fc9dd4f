"""Reflection (off by default): after each session, a journal entry and an updated relationship memo.

Both are plain Markdown under data_dir/journal/, written by the language model in the background
after the session ends, so the user can read, edit or delete them like any other file. The memo is
the agent's own running understanding of the relationship and goes into later system prompts.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from convers.contracts.llm import LanguageModel
from convers.contracts.memory import MemoryTurn
from convers.memory.ask import ask
from convers.private_files import private_dir

log = logging.getLogger(__name__)

JOURNAL_FOLDER = "journal"
MEMO_FILE = "relationship.md"
# Long sessions are cut to their newest turns so the prompt fits a small context window.
TRANSCRIPT_CHARS = 6000

JOURNAL_SYSTEM = (
    "You are {agent}. Write a short private journal entry (at most 120 words) about the conversation "
    "below: what mattered to {user}, anything to follow up next time, how they seemed. First person, "
    "plain prose."
)
MEMO_SYSTEM = (
    "You are {agent}. Below is your current memo about your relationship with {user}, and your journal "
    "entry for today's conversation. Rewrite the memo to include what is new: who they are to you, "
    "what they care about, open threads, how to talk with them. At most 200 words, plain prose. "
    "Answer with the memo only."
)


def transcript(turns: Sequence[MemoryTurn]) -> str:
    lines = [f"{t.speaker}: {t.text}" for t in turns if t.kind == "turn"]
    text = "\n".join(lines)
    return text[-TRANSCRIPT_CHARS:]


class Reflection:
    """Writes journal/<date>-<session>.md and rewrites journal/relationship.md after a session."""

    def __init__(self, llm: LanguageModel, data_dir: Path, agent_name: str, timeout_s: float = 120.0) -> None:
        self.llm = llm
        self.folder = Path(data_dir).expanduser() / JOURNAL_FOLDER
        self.agent_name = agent_name
        self.timeout_s = timeout_s

    def memo(self) -> str:
        try:
            return (self.folder / MEMO_FILE).read_text(encoding="utf-8").strip()
        except OSError:
            return ""

    async def after_session(self, session: str, turns: Sequence[MemoryTurn], user_name: str | None) -> Path | None:
        """Journal entry plus memo update; returns the entry's path, or None when there was nothing to say."""
        if not any(t.role == "user" for t in turns):
            return None
        user = user_name or "the user"
        entry = await ask(
            self.llm, JOURNAL_SYSTEM.format(agent=self.agent_name, user=user), transcript(turns),
            max_tokens=220, timeout_s=self.timeout_s,
        )
        if not entry:
            return None
        day = datetime.now(UTC).strftime("%Y-%m-%d")
        path = self.folder / f"{day}-{session}.md"
        _write_atomic(path, f"# {day}, session {session}\n\n{entry}\n")
        memo = await ask(
            self.llm, MEMO_SYSTEM.format(agent=self.agent_name, user=user),
            f"Current memo:\n{self.memo() or '(none yet)'}\n\nToday's journal entry:\n{entry}",
            max_tokens=320, timeout_s=self.timeout_s,
        )
        if memo:
            _write_atomic(self.folder / MEMO_FILE, memo + "\n")
        return path


def _write_atomic(path: Path, text: str) -> None:
    private_dir(path.parent)
    handle, temp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
