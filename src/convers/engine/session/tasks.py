"""What a session does with its tasks once they are done: report failures, let go of their frames."""

from __future__ import annotations

import asyncio
import logging
import traceback
from typing import Any

log = logging.getLogger(__name__)


def clear_frames(task: asyncio.Task[Any]) -> None:
    """Clears the frames a finished task's exception still holds.

    A cancelled reply's CancelledError keeps its traceback, whose frames hold the session and the
    exception itself (an `__aexit__` on the way out holds it as a local): a cycle that only a full
    garbage collection would free, keeping a closed session's memory until then.
    """
    if not task.done():
        return
    try:
        task.result()
    except BaseException as error:  # noqa: BLE001 - only its frames are wanted
        chained: BaseException | None = error
        seen: set[int] = set()
        while chained is not None and id(chained) not in seen:
            seen.add(id(chained))
            traceback.clear_frames(chained.__traceback__)
            chained = chained.__context__


def log_failure(task: asyncio.Task[Any]) -> None:
    """A background task that failed is logged, never silently dropped."""
    if not task.cancelled() and task.exception() is not None:
        log.error("session task failed", exc_info=task.exception())
