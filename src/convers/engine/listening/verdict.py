"""What a transcript of speech over the agent says: words, only "mm-hm", or nothing."""

from __future__ import annotations

from typing import Literal

from convers.policies import BargeInPolicy

# "failed": the transcription itself failed (the barge-in arbiter's timeout then decides).
Verdict = Literal["words", "backchannel", "nothing", "failed"]


def verdict_of(text: str, policy: BargeInPolicy) -> Verdict:
    """What a transcript says about an interruption: words, only "mm-hm", or nothing."""
    words = [w.strip(".,!?").lower() for w in text.split()]
    if not words:
        return "nothing"
    if all(w in policy.backchannels for w in words):
        return "backchannel"
    return "words"
