"""How much of a transcript is the agent's own words coming back: its echo read by the recogniser.

Whisper, given the agent's echo, writes what it heard of the agent: runs of its words in order ("last
week that you're", "a good question. Most people sleep better"), or one longer word of it ("opens").
A person over the agent says their own words, which meet the agent's only one short word at a time
("the", "you"). So a transcript word counts as the agent's when it lies in a run of two or more of the
agent's words in the same order, or is itself one of the agent's longer words.
"""

from __future__ import annotations

import difflib
import re

from convers.engine.reply.spoken_text import spoken_text

# A single shared word this long is the agent's, not chance ("opens", "kettle"; not "you", "the").
LONG_WORD = 5

_WORD = re.compile(r"[a-z0-9']+")


def _words(text: str) -> list[str]:
    # As said aloud: the recogniser writes "8" for the "eight" of the reply, or the other way round.
    return _WORD.findall(spoken_text(text).lower())


def own_words_share(transcript: str, said: str) -> float:
    """The share of `transcript`'s words that are the agent's words in `said` (1.0 for no words at all)."""
    heard, spoken = _words(transcript), _words(said)
    if not heard:
        return 1.0
    matcher = difflib.SequenceMatcher(a=heard, b=spoken, autojunk=False)
    own: set[int] = set()
    for block in matcher.get_matching_blocks():
        if block.size >= 2 or (block.size == 1 and len(heard[block.a]) >= LONG_WORD):
            own.update(range(block.a, block.a + block.size))
    return len(own) / len(heard)
