"""The silence rule as an end-of-turn provider: no opinion, so the turn ends after `end_of_turn_silence_s`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from convers.contracts.audio import AudioFrame
from convers.contracts.provider import RANK_FALLBACK, AutoChoice, Availability

if TYPE_CHECKING:
    from convers.config import Settings


class SilenceRule:
    """Ends every turn by silence alone (turns.end_of_turn_silence_s); always available."""

    name = "silence"

    @classmethod
    def from_settings(cls, settings: Settings) -> SilenceRule:
        return cls()

    @classmethod
    def availability(cls, settings: Settings) -> Availability:
        return Availability(True, "the turn ends after turns.end_of_turn_silence_s of silence")

    @classmethod
    def auto_choice(cls, settings: Settings) -> AutoChoice:
        return AutoChoice(RANK_FALLBACK, True, "silence rule (no end-of-turn model)")

    async def done_probability(self, audio: AudioFrame, transcript: str | None = None) -> float | None:
        return None
