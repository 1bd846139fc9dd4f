"""The profile: a small, curated, human-editable file of facts about the user (data_dir/profile.json)."""

from __future__ import annotations

import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from convers.private_files import private_dir

PROFILE_FILE_NAME = "profile.json"
# Keys `convers profile set` understands; people.NAME sets one person's note.
SETTABLE_KEYS = ("name", "preferences", "notes", "people.NAME")


class ProfileError(ValueError):
    """profile.json is unreadable or invalid; the message names the file and the problem."""


class Person(BaseModel):
    """Someone in the user's life."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    note: str = ""


class Profile(BaseModel):
    """What the agent knows about the user for sure: the user can read and correct every field."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    version: int = 1
    name: str | None = None
    preferences: list[str] = Field(default_factory=list)
    people: list[Person] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    updated: datetime | None = None

    @field_validator("name")
    @classmethod
    def _name_not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("name must not be blank (use null for unknown)")
        return value.strip() if value else value

    def is_empty(self) -> bool:
        return not (self.name or self.preferences or self.people or self.notes)

    def render(self) -> str:
        """The profile as plain lines for the system prompt ('' when empty)."""
        lines: list[str] = []
        if self.name:
            lines.append(f"Name: {self.name}")
        if self.preferences:
            lines.append("Preferences: " + "; ".join(self.preferences))
        if self.people:
            people = [f"{p.name} ({p.note})" if p.note else p.name for p in self.people]
            lines.append("People in their life: " + "; ".join(people))
        lines.extend(f"Note: {note}" for note in self.notes)
        return "\n".join(lines)

    def with_value(self, key: str, value: str) -> Profile:
        """A copy with `key` set from command-line text (see SETTABLE_KEYS); raises ProfileError."""
        data = self.model_dump()
        value = value.strip()
        if key == "name":
            data["name"] = value or None
        elif key in ("preferences", "notes"):
            data[key] = _as_list(value)
        elif key.startswith("people."):
            person = key.partition(".")[2].strip()
            if not person:
                raise ProfileError("people.NAME needs a name, e.g. `convers profile set people.Ana \"my sister\"`")
            others = [p for p in data["people"] if p["name"].lower() != person.lower()]
            data["people"] = others if value == "" else [*others, {"name": person, "note": value}]
        else:
            raise ProfileError(f"unknown profile key {key!r}; keys are: {', '.join(SETTABLE_KEYS)}")
        data["updated"] = datetime.now(UTC)
        try:
            return Profile.model_validate(data)
        except ValidationError as error:
            raise ProfileError(f"profile {key} = {value!r}: {_first_problem(error)}") from None


def _as_list(value: str) -> list[str]:
    """A JSON list, or items separated by ';' ('' clears the list)."""
    if value.startswith("["):
        try:
            items = json.loads(value)
        except ValueError as error:
            raise ProfileError(f"{value!r} looks like a JSON list but is not valid JSON: {error}") from None
        if not isinstance(items, list):
            raise ProfileError(f"{value!r} is not a list")
        return [str(i).strip() for i in items if str(i).strip()]
    return [part.strip() for part in value.split(";") if part.strip()]


def _first_problem(error: ValidationError) -> str:
    problem = error.errors()[0]
    where = ".".join(str(p) for p in problem["loc"])
    return f"{where}: {problem['msg']}" if where else problem["msg"]


class ProfileFile:
    """Loads and saves the profile; a broken file is an error and is never overwritten."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path).expanduser()

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> ProfileFile:
        return cls(Path(data_dir).expanduser() / PROFILE_FILE_NAME)

    def load(self) -> Profile:
        """The stored profile; an empty one when the file does not exist yet."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return Profile()
        except OSError as error:
            raise ProfileError(f"cannot read profile {self.path}: {error.strerror}") from error
        return parse_profile(text, self.path)

    def save(self, profile: Profile) -> None:
        """Writes atomically (temp file + rename) so a crash never leaves half a profile."""
        if self.path.exists():
            self.load()  # refuses to replace a file the user may be halfway through fixing
        private_dir(self.path.parent)
        text = profile.model_dump_json(indent=2, exclude_none=False) + "\n"
        handle, temp = tempfile.mkstemp(prefix=".profile-", suffix=".json", dir=self.path.parent)
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                out.write(text)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, self.path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise

    def update(self, key: str, value: str) -> Profile:
        profile = self.load().with_value(key, value)
        self.save(profile)
        return profile


def parse_profile(text: str, source: Path | str = "profile") -> Profile:
    """Validates profile JSON text; ProfileError names the source and the first problem."""
    try:
        data: Any = json.loads(text)
    except ValueError as error:
        raise ProfileError(f"profile {source} is not valid JSON: {error}; fix it with `convers profile edit`") from None
    try:
        return Profile.model_validate(data)
    except ValidationError as error:
        raise ProfileError(
            f"profile {source} is invalid: {_first_problem(error)}; fix it with `convers profile edit`"
        ) from None
