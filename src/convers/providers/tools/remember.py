"""Storing a fact in the profile when the user asks ("remember that Maya starts at the bakery in May")."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from convers.contracts.provider import Availability
from convers.memory.profile import ProfileFile

# A note is one fact, not a transcript: longer text is refused so the profile stays readable.
MAX_FACT_CHARS = 300


class RememberTool:
    """Adds a note (or a note about a person) to data_dir/profile.json; returns what it stored."""

    name = "remember"
    description = (
        "Store a fact about this person in their profile, only when they ask you to remember it. "
        "Afterwards tell them in a few words what you stored."
    )
    parameters: dict[str, Any] = {
        "type": "object",
        "properties": {
            "fact": {"type": "string", "description": "the fact, as one short sentence"},
            "person": {"type": "string", "description": "the name of the person the fact is about, if not the user"},
        },
        "required": ["fact"],
        "additionalProperties": False,
    }

    def __init__(self, profile: ProfileFile) -> None:
        self.profile = profile

    @classmethod
    def from_settings(cls, settings: Any, **parts: Any) -> RememberTool:
        return cls(ProfileFile.in_data_dir(Path(settings.data_path)))

    @classmethod
    def availability(cls, settings: Any) -> Availability:
        return Availability(True, f"writes notes to {ProfileFile.in_data_dir(Path(settings.data_path)).path}")

    async def call(self, fact: str, person: str | None = None) -> str:
        fact = " ".join(fact.split())
        if not fact:
            raise ValueError("remember needs a fact to store")
        if len(fact) > MAX_FACT_CHARS:
            raise ValueError(f"the fact is {len(fact)} characters; store at most {MAX_FACT_CHARS} (one short sentence)")
        # The profile is a file: reading and writing it must not hold up the event loop.
        return await asyncio.to_thread(self._store, fact, (person or "").strip())

    def _store(self, fact: str, person: str) -> str:
        profile = self.profile.load()
        if person:
            notes = [p.note for p in profile.people if p.name.lower() == person.lower() and p.note]
            note = "; ".join([*notes, fact]) if fact not in notes else "; ".join(notes)
            self.profile.update(f"people.{person}", note)
            return f"Stored about {person}: {fact}"
        if fact not in profile.notes:
            self.profile.update("notes", json.dumps([*profile.notes, fact]))
        return f"Stored in the profile: {fact}"
