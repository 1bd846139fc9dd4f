"""MemoryOptions: the knobs of a session's CompanionMemory, and how settings fill them."""

from __future__ import annotations

from dataclasses import dataclass

from convers.config import MemorySettings

_SETTINGS_DEFAULTS = MemorySettings()


@dataclass(frozen=True)
class MemoryOptions:
    """Knobs for CompanionMemory; every time is in seconds."""

    # Defaults are the settings' own (documented and measured in config.MemorySettings).
    recall_k: int = _SETTINGS_DEFAULTS.recall_k
    recall_floor: float = _SETTINGS_DEFAULTS.recall_floor
    digest_min_words: int = _SETTINGS_DEFAULTS.digest_min_words
    # Characters of this session already in the rolling buffer: recall skips those turns.
    rolling_chars: int = _SETTINGS_DEFAULTS.rolling_chars
    # Longest wait for the query's vector; after it recall uses words only. MiniLM needs ~10 ms
    # for a sentence once loaded, so this only bites when the embedder is cold, busy or remote.
    embed_deadline_s: float = 0.15
    # How long after a failed embedding to try the backfill again.
    backfill_retry_s: float = 30.0
    # How long turns a failing store held back wait for the next try when no new turn comes first.
    write_retry_s: float = 30.0
    backfill_batch: int = 32
    # Re-embedding stored turns after an upgrade (or an embedder change): this many per batch, then a
    # pause at least as long as the batch took, so it never takes more than half a core from a reply.
    upgrade_batch: int = 32
    upgrade_pause_min_s: float = 0.05
    greeting_llm_timeout_s: float = 4.0
    # aclose waits this long for queued digests and reflection before giving up on them.
    close_timeout_s: float = 60.0
    reflection: bool = _SETTINGS_DEFAULTS.reflection
    observation_keys: bool = _SETTINGS_DEFAULTS.observation_keys
    # Longest wait for one model call in the background (a digest, a turn's observations).
    note_timeout_s: float = 60.0


def memory_options(settings: MemorySettings) -> MemoryOptions:
    """The knobs of CompanionMemory that settings hold."""
    return MemoryOptions(
        recall_k=settings.recall_k,
        recall_floor=settings.recall_floor,
        digest_min_words=settings.digest_min_words,
        rolling_chars=settings.rolling_chars,
        reflection=settings.reflection,
        observation_keys=settings.observation_keys,
    )
