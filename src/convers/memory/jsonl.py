"""The JSONL exchange format of `convers memory export` / `import`: one raw turn per line."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import IO, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from convers.contracts.memory import MemoryTurn


class TurnRecord(BaseModel):
    """One line of a JSONL export."""

    model_config = ConfigDict(extra="ignore")

    id: str
    session: str
    time: datetime
    speaker: str
    role: Literal["user", "assistant"]
    text: str

    def turn(self) -> MemoryTurn:
        # A time without a zone is read as UTC, the zone exports have always been written in.
        moment = self.time if self.time.tzinfo is not None else self.time.replace(tzinfo=UTC)
        return MemoryTurn(self.id, self.session, moment, self.speaker, self.role, self.text)


def write_turns(turns: Iterable[MemoryTurn], out: IO[str]) -> int:
    """Writes each raw turn as one JSON object per line (digests are derived: leave them out). Returns the count."""
    count = 0
    for turn in turns:
        record = {"id": turn.id, "session": turn.session, "time": turn.time.isoformat(),
                  "speaker": turn.speaker, "role": turn.role, "text": turn.text}
        out.write(json.dumps(record, ensure_ascii=False) + "\n")
        count += 1
    return count


def read_turns(lines: Iterable[str]) -> list[MemoryTurn]:
    """Every turn of an export, validated; ValueError naming the line and field of the first bad one."""
    turns: list[MemoryTurn] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = TurnRecord.model_validate_json(line)
        except ValidationError as error:
            problem = error.errors()[0]
            where = ".".join(str(p) for p in problem["loc"]) or "line"
            raise ValueError(f"line {number}: {where}: {problem['msg']}") from None
        turns.append(record.turn())
    return turns
