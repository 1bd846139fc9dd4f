"""own_words_share: how much of a transcript is the agent's own words coming back."""

from __future__ import annotations

import pytest

from convers.engine.barge_in.own_words import own_words_share

FILMS = "I remember you love old films. Tonight there is a Hitchcock on channel four at nine."
TRAIN = "Let me see. If you leave at half past eight, you should reach the station with time to spare."


@pytest.mark.parametrize(("transcript", "said", "echo"), [
    # Echo as Whisper reads it from the residual: the agent's words, misheard.
    ("the whole film tonight.", FILMS, True),
    ("the old belt, the night there.", FILMS, True),
    ("have passed 8.", TRAIN, True),  # "half past eight", numbers as said
    ("If you leave it have past date.", TRAIN, True),
    ("of the sun and the deep green", "Tomatoes like plenty of sun and a deep drink twice a week.", True),
    # People: their own words, sharing only short pieces with the agent's.
    ("What time did you say it was?", TRAIN, False),
    ("Sorry, can you say the first part again?", FILMS, False),
    ("Hold on, that is not what I asked.", FILMS, False),
])
def test_the_agents_words_misheard_are_told_from_a_persons_own(transcript: str, said: str, echo: bool) -> None:
    assert (own_words_share(transcript, said) >= 0.3) is echo


def test_a_transcript_without_letters_counts_as_all_echo() -> None:
    assert own_words_share("...", FILMS) == 1.0
    assert own_words_share("", FILMS) == 1.0
