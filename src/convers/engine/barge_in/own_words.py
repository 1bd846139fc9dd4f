"""How much of a transcript is the agent's own words coming back: its echo, as the recogniser read it.

Whisper, given the agent's echo, writes what it heard of the agent, often misheard: "the whole film
tonight" for "old films. Tonight", "a good question. Most people sleep better". A person over the
agent says their own words, which meet the agent's only in short common pieces ("the", "you"). So
the two are compared letter by letter, as said aloud (numbers as words, no spaces or punctuation):
the share of the transcript's letters that lie in a run of `MIN_RUN` or more letters of the agent's
text in the same order. On simulated first replies (a person over a learning canceller in half of
them; not `convers bench echo`'s rooms) the echo's transcripts of 1 s or more had 0.33-1.0 of their
letters in such runs and people's 0-0.44 (all but 4 of 214 under 0.3). Whole words matched instead
let "the whole film tonight" (one word in four, "tonight") pass for a person, and runs of five
letters "of the sun and the deep green" (for "plenty of sun and a deep drink": 0.26, with four 0.43).
"""

from __future__ import annotations

import difflib
import re

from num2words import num2words

from convers.engine.reply.spoken_text import spoken_text

# Runs shorter than this are chance ("the", "you", "ing"); "deep", "film", "night" are not.
MIN_RUN = 4

_NOT_LETTER = re.compile(r"[^a-z]")
_NUMBER = re.compile(r"\d+")


def _letters(text: str) -> str:
    # As said aloud: the recogniser writes "8" for the "eight" of the reply, or the other way round
    # (spoken_text reads times, money and units; plain numbers are read here).
    said = _NUMBER.sub(lambda number: " " + num2words(int(number.group())) + " ", spoken_text(text))
    return _NOT_LETTER.sub("", said.lower())


def own_words_share(transcript: str, said: str) -> float:
    """The share of `transcript`'s letters that are the agent's words in `said` (1.0 for no letters at all)."""
    heard = _letters(transcript)
    if not heard:
        return 1.0
    # Not autojunk: in a reply of 200 letters or more it would drop the commonest letters from matching.
    matcher = difflib.SequenceMatcher(a=heard, b=_letters(said), autojunk=False)
    own = sum(block.size for block in matcher.get_matching_blocks() if block.size >= MIN_RUN)
    return own / len(heard)
