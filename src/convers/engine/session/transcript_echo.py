"""The echo of a user turn (its transcript sent back), not acoustic echo: the client sees its words come back once memory has committed them.

A client that has seen its turn echoed may rely on it being stored (docs/protocol.md): a kill -9
after the echo loses nothing. The echo waits for the commit, never the reply, which starts at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable

from convers.contracts.events import TranscriptMessage
from convers.contracts.transport import Transport

log = logging.getLogger(__name__)


async def echo_user_turn(
    transport: Transport, turn: int, text: str, stored: Awaitable[bool] | None, wait_s: float
) -> None:
    """Sends `transcript` (final) for `turn` once `stored` is True, or with `stored: false` when it is
    False, fails, or takes longer than `wait_s` (None: no memory, nothing is stored)."""
    committed = False
    if stored is not None:
        try:
            # Shielded: giving up on the wait must not cancel the write itself.
            committed = bool(await asyncio.wait_for(asyncio.shield(stored), wait_s))
        except TimeoutError:
            log.warning("turn %d not committed to memory within %.1f s: echoed as not stored", turn, wait_s)
        except Exception as error:  # noqa: BLE001 - the memory's failure is told, not raised
            log.warning("turn %d could not be stored: %s", turn, error)
    await transport.send_event(TranscriptMessage(text, final=True, turn=turn, stored=committed).to_wire())
