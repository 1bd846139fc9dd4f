"""What happened in a session, as a JSONL log with timestamps, and per-turn latency metrics."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from convers.contracts.events import EventKind
from convers.private_files import open_private_append, private_dir

log = logging.getLogger(__name__)

# Marks a turn can carry, in pipeline order. Latencies are measured from `turn_start`
# (end of the user's speech, or the moment typed text arrived). Each stage of the reply has a
# start and an end mark (stt_start/stt_final, recall_start/recall_done, llm_request/
# llm_first_token, tts_start/tts_first_audio), set where the engine does the work, so every
# reader (the `metrics` message, both latency benches: bench/stages.py) times a stage the same way.
# Work done during the end-of-turn silence and replayed by the reply (speculation) carries the
# times it really ran; `llm_first_delta` is then when the prefetched request's first token came.
TURN_MARKS = (
    "speech_start",
    "speech_end",
    "turn_start",
    "turn_confirmed",
    "stt_start",
    "stt_final",
    "recall_start",
    "recall_done",
    "llm_request",
    "llm_first_delta",
    "llm_first_token",
    "first_chunk",
    "tts_start",
    "tts_first_audio",
    "first_audio_out",
    "reply_done",
)


@dataclass
class TurnMetrics:
    """Monotonic timestamps of one agent turn; `latencies()` turns them into milliseconds."""

    turn: int
    marks: dict[str, float] = field(default_factory=dict)
    durations_ms: dict[str, float] = field(default_factory=dict)

    def mark(self, name: str, at: float, *, replace: bool = False) -> None:
        # The first occurrence counts: "first token" stays the first even if marked again.
        # `replace`: a later, truer time (the replayed work's own start, or the chunk that really spoke first).
        if replace:
            self.marks[name] = at
        else:
            self.marks.setdefault(name, at)

    def latencies(self) -> dict[str, float]:
        """Milliseconds from turn start to each later mark, plus measured stage durations."""
        start = self.marks.get("turn_start")
        result: dict[str, float] = {}
        if start is not None:
            for name in TURN_MARKS:
                if name in self.marks and name != "turn_start" and self.marks[name] >= start:
                    result[f"{name}_ms"] = round((self.marks[name] - start) * 1000, 1)
        for name, value in self.durations_ms.items():
            result[name] = round(value, 1)
        return result


class EventLog:
    """Appends one JSON object per line to `path`; a write failure disables the log, never the session."""

    def __init__(self, path: Path | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self._clock = clock
        self._origin = clock()
        self._handle: IO[str] | None = None
        self.listeners: list[Callable[[dict[str, Any]], None]] = []
        if path is not None:
            try:
                # What the user said is in here: private from the first line (0700 folder, 0600 file).
                private_dir(path.parent)
                self._handle = open_private_append(path)
            except OSError as error:
                log.warning("event log %s cannot be opened (%s); continuing without it", path, error)

    def now(self) -> float:
        return self._clock()

    def emit(self, kind: EventKind, **fields: Any) -> dict[str, Any]:
        """Records an event with wall-clock time and seconds since the session began.

        `kind` must be an EventKind: the log's vocabulary is one enum, so a misspelt kind is an
        error here rather than a line no benchmark ever reads.
        """
        if not isinstance(kind, EventKind):
            raise TypeError(f"event kind {kind!r} is not an EventKind (contracts/events.py)")
        event = {"event": kind.value, "time": time.time(), "t": round(self._clock() - self._origin, 4), **fields}
        for listener in self.listeners:
            listener(event)
        if self._handle is not None:
            try:
                self._handle.write(json.dumps(event, default=str) + "\n")
            except OSError as error:
                log.warning("event log %s stopped: %s", self.path, error)
                self._close_quietly()
        return event

    def _close_quietly(self) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            try:
                handle.close()
            except OSError:
                pass

    def close(self) -> None:
        self._close_quietly()


def read_events(path: Path) -> list[dict[str, Any]]:
    """All events of a log file (a torn last line from a crash is skipped)."""
    events = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events
