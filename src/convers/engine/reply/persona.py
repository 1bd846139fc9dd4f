"""The persona in layers: a core persona, named overlays, and the agent's own newest journal entry.

Order, most general first: the core (`agent.persona_file`, or the built-in persona), then each
overlay named in `agent.overlays` or chosen by the page for one connection (data_dir/persona/
<name>.md, for a project or a context: "work", "language practice"), then, when reflection is on,
the newest journal entry. The relationship memo that reflection writes reaches the prompt with the
profile (memory/conversation.py), so it is not repeated here. Every layer is a file the user can
read and edit; `convers profile prompt` prints the composed result.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from convers.engine.reply.prompt import PersonaError, load_persona

PERSONA_FOLDER = "persona"
JOURNAL_FOLDER = "journal"  # memory/reflection.py writes it
MEMO_FILE = "relationship.md"
# An overlay's name is a file name, never a path: the page may choose one, and must not reach outside.
OVERLAY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,39}$")
OVERLAY_SUFFIXES = (".md", ".txt")
# A journal entry is a short paragraph (reflection asks for 120 words); more is cut so the prompt stays small.
MAX_JOURNAL_CHARS = 1200
JOURNAL_HEADER = "Your journal entry from your last conversation with them (your own notes, private):"


def overlay_path(data_dir: Path, name: str) -> Path:
    """The overlay file for `name`; PersonaError when the name is not allowed or there is no such file."""
    if not OVERLAY_NAME.match(name):
        raise PersonaError(f"persona overlay name {name!r} is not allowed: use letters, digits, '-' and '_' (at most 40)")
    folder = Path(data_dir).expanduser() / PERSONA_FOLDER
    for suffix in OVERLAY_SUFFIXES:
        path = folder / f"{name}{suffix}"
        if path.is_file():
            return path
    available = sorted(p.stem for p in folder.glob("*") if p.suffix in OVERLAY_SUFFIXES) if folder.is_dir() else []
    raise PersonaError(
        f"persona overlay {name!r} not found: create {folder / (name + '.md')}"
        + (f" (overlays there: {', '.join(available)})" if available else "")
    )


def newest_journal_entry(data_dir: Path) -> str:
    """The newest journal entry's text ('' when there is none), without its heading line."""
    folder = Path(data_dir).expanduser() / JOURNAL_FOLDER
    if not folder.is_dir():
        return ""
    entries = sorted((p for p in folder.glob("*.md") if p.name != MEMO_FILE), key=lambda p: (p.stat().st_mtime, p.name))
    if not entries:
        return ""
    try:
        lines = entries[-1].read_text(encoding="utf-8").strip().splitlines()
    except OSError:
        return ""
    if lines and lines[0].startswith("#"):
        lines = lines[1:]
    return "\n".join(lines).strip()[:MAX_JOURNAL_CHARS]


def compose_persona(
    core_file: Path | None,
    agent_name: str,
    data_dir: Path,
    overlays: Sequence[str] = (),
    journal: bool = False,
) -> str:
    """The system prompt's persona part: core, then overlays, then (with `journal`) the newest entry.

    A missing core file or overlay is a PersonaError naming the file; it is the user's own setting,
    so it is reported, not silently skipped.
    """
    layers = [load_persona(core_file, agent_name)]
    for name in dict.fromkeys(overlays):
        path = overlay_path(data_dir, name)
        try:
            text = path.read_text(encoding="utf-8").replace("{name}", agent_name).strip()
        except OSError as error:
            raise PersonaError(f"persona overlay {path} cannot be read: {error.strerror}") from error
        if text:
            layers.append(text)
    if journal:
        entry = newest_journal_entry(data_dir)
        if entry:
            layers.append(f"{JOURNAL_HEADER}\n{entry}")
    return "\n\n".join(layers)
