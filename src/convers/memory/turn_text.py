"""What a stored turn is indexed with besides its text: who said it, when (in the user's zone), what it answers.

A bare "I start there on Monday" cannot be found by "what did Maya say about her new job". The
store adds the speaker label's vector to the text's (SqliteMemoryStore.turn_vectors), spells the
local date and the question answered into the word index, and keeps each vector's time for
questions that name one. Dates are in the user's local zone, so an evening turn is indexed under
the day the user lived it, not the UTC day.
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from convers.contracts.memory import MemoryTurn

log = logging.getLogger(__name__)

# Bump when what a stored vector is made of changes: rows with an older version are re-embedded
# in the background (SqliteMemoryStore.backfill). 0: the bare text's vector (schema 1);
# 1: the text's vector + SPEAKER_WEIGHT x the speaker label's vector; 2: the same vector, and the
# turn's derived keys (memory/derived_keys.py) written with it; 3: and its part vectors
# (memory/turn_parts.py). A turn whose parts could not be embedded is stored at the version before,
# so the backfill makes them later.
EMBED_TEXT_VERSION = 3
# The question a turn answers is kept up to this many characters: enough for "what about your job?".
ANSWERED_CHARS = 160


def local_zone(name: str | None = None) -> tzinfo:
    """The named IANA zone, else $TZ, else the system's (/etc/localtime), else UTC."""
    for candidate in (name, os.environ.get("TZ")):
        if candidate:
            try:
                return ZoneInfo(candidate.removeprefix(":"))
            except (ZoneInfoNotFoundError, ValueError):
                log.warning("time zone %r is unknown; using the system zone", candidate)
    try:
        target = str(Path("/etc/localtime").resolve())
        if "zoneinfo/" in target:
            return ZoneInfo(target.split("zoneinfo/", 1)[1])
    except (OSError, ZoneInfoNotFoundError, ValueError):
        pass
    return datetime.now().astimezone().tzinfo or UTC


def in_zone(moment: datetime, zone: tzinfo) -> datetime:
    """`moment` in `zone`; naive times (imported without an offset) are taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(zone)


def part_of_day(hour: int) -> str:
    if 5 <= hour < 12:
        return "morning"
    if 12 <= hour < 17:
        return "afternoon"
    if 17 <= hour < 22:
        return "evening"
    return "night"


def spoken_date(moment: datetime, zone: tzinfo) -> str:
    """'Tuesday 3 May 2026 evening', in `zone`."""
    local = in_zone(moment, zone)
    return f"{local:%A} {local.day} {local:%B} {local.year} {part_of_day(local.hour)}"


def when_words(moment: datetime, zone: tzinfo) -> str:
    """The date for the word index: 'tuesday 3 may 2026 evening may' (local day, short month too)."""
    local = in_zone(moment, zone)
    return f"{spoken_date(moment, zone)} {local:%b}".lower()


def answered(turn: MemoryTurn, previous: MemoryTurn | None) -> str:
    """The question `turn` answers ('' when the previous turn is not someone else's question)."""
    if previous is None or previous.speaker == turn.speaker or previous.session != turn.session:
        return ""
    asked = " ".join(previous.text.split())
    if not asked.endswith("?"):
        return ""
    return asked[-ANSWERED_CHARS:]


def speaker_label(turn: MemoryTurn) -> str:
    """'Sam (user)', 'Juniper (assistant)'; just the role when the speaker has no name."""
    if not turn.speaker or turn.speaker.lower() == turn.role:
        return turn.role
    return f"{turn.speaker} ({turn.role})"
