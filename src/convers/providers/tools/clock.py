"""The current local date and time: the one fact a language model can never know on its own."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from convers.contracts.provider import Availability


class ClockTool:
    """Tells the local date, time and time zone."""

    name = "clock"
    description = "Get the current local date, time and time zone."
    parameters: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}

    def __init__(self, now: Callable[[], datetime] | None = None) -> None:
        self._now = now or (lambda: datetime.now().astimezone())

    @classmethod
    def from_settings(cls, settings: Any, **parts: Any) -> ClockTool:
        return cls()

    @classmethod
    def availability(cls, settings: Any) -> Availability:
        return Availability(True, "local clock")

    async def call(self, **arguments: Any) -> str:
        if arguments:
            raise ValueError(f"clock takes no arguments, got {sorted(arguments)}")
        moment = self._now()
        return moment.strftime("%A %d %B %Y, %H:%M (%Z, UTC%z)")
