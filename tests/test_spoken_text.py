"""Spoken-text normalisation: what the voice says for a chunk, and that only speech is normalised."""

from __future__ import annotations

import asyncio

import pytest

from convers.contracts.audio import AudioFrame
from convers.engine.reply.spoken_text import SpokenTextTts, spoken_text


@pytest.mark.parametrize(
    ("text", "spoken"),
    [
        # What espeak-ng (and so Piper) already says well is left alone.
        ("I have 42 apples and 3.5 pears.", "I have 42 apples and 3.5 pears."),
        ("It is 50% off, the 3rd time.", "It is 50% off, the 3rd time."),
        ("Salt & pepper, 2 + 2 = 4.", "Salt & pepper, 2 + 2 = 4."),
        ("About 1,234,567 people.", "About 1,234,567 people."),
        ("Meet at 10:30.", "Meet at 10:30."),
        ("Bring fruit, e.g. apples, from the U.S.A.", "Bring fruit, e.g. apples, from the U.S.A."),
        # Money: the unit after the amount, cents as cents.
        ("It costs $12.50 today.", "It costs 12 dollars and 50 cents today."),
        ("Only $1.", "Only 1 dollar."),
        ("That's $3 million.", "That's 3 million dollars."),
        ("A $5k budget.", "A 5 thousand dollars budget."),
        ("Pay €5 or £20.50.", "Pay 5 euros or 20 pounds and 50 pence."),
        # Units and temperatures.
        ("It's 5km away and weighs 3 kg.", "It's 5 kilometers away and weighs 3 kilograms."),
        ("Drive at 60 mph, or 100 km/h.", "Drive at 60 miles per hour, or 100 kilometers per hour."),
        ("It is 25°C outside, 77°F.", "It is 25 degrees Celsius outside, 77 degrees Fahrenheit."),
        ("A 1 kg bag and 16 GB of RAM.", "A 1 kilogram bag and 16 gigabytes of RAM."),
        # Years, dates, times.
        ("Back in 1999 it was new.", "Back in nineteen ninety-nine it was new."),
        ("Since 2008, and in the 1990s.", "Since two thousand and eight, and in the nineteen nineties."),
        ("Due on 2024-05-01.", "Due on May first, twenty twenty-four."),
        ("Meet at 10:05 or 9:00.", "Meet at 10 oh 5 or 9 o'clock."),
        # Phone numbers digit by digit, fractions, ranges, signs.
        ("Call 555-123-4567 now.", "Call five five five, one two three, four five six seven now."),
        ("Call (555) 123-4567.", "Call five five five, one two three, four five six seven."),
        ("Add 1/2 cup and 3/4 spoon.", "Add one half cup and three quarters spoon."),
        ("It was -5 degrees, 5-10 people.", "It was minus 5 degrees, 5 to 10 people."),
        # Arithmetic that markdown cleaning left alone.
        ("2 * 3 is 6, 5**2 is 25, x*y.", "2 times 3 is 6, 5 squared is 25, x times y."),
        ("E = mc^2, x^3. And 2^10 or 2^3.5.", "E = mc squared, x cubed. And 2 to the power of 10 or 2 to the power of 3.5."),
        # Abbreviations espeak-ng reads badly; the ones it says well stay.
        ("It weighs approx. 5 kg, i.e. light.", "It weighs approximately 5 kilograms, that is light."),
        ("Apples vs. oranges, cats vs dogs.", "Apples versus oranges, cats versus dogs."),
        ("Room No. 12, ext. 34, Apt. 4B, Fig. 2.", "Room number 12, extension 34, apartment 4B, figure 2."),
        ("No. I said no.", "No. I said no."),
        ("St. Louis is on Main St. now, near Mt. Hood.", "Saint Louis is on Main St. now, near Mount Hood."),
        ("Due Jan. 15 or Sept. 3.", "Due January 15 or September 3."),
        # URLs, e-mail addresses and file names.
        ("Visit https://www.example.com/docs?x=1 now.", "Visit example dot com slash docs now."),
        ("Mail ana.lopez@example.com please.", "Mail ana dot lopez at example dot com please."),
        ("Open config.json in Node.js.", "Open config dot json in Node dot js."),
        # Symbols and emoji.
        ("Use and/or, w/ care, yes/no.", "Use and or, with care, yes or no."),
        ("Set PATH=$HOME/bin:$PATH in /usr/local/bin.", "Set PATH=$HOME/bin:$PATH in /usr/local/bin."),
        ("Item #3 \u2192 done.", "Item number 3 to done."),
        ("Great! \U0001f389", "Great!"),
        # Emoji: named only where they stand for a word between words, else dropped; faces, hands,
        # hearts and marks are always dropped; a keycap is its digit; text symbols are left alone.
        ("I'd love some \U0001f355 tonight.", "I'd love some pizza tonight."),
        ("I walked my \U0001f436 today.", "I walked my dog today."),
        ("Flying to \U0001f1eb\U0001f1f7 tomorrow.", "Flying to France tomorrow."),
        ("I \u2764\ufe0f you, thanks \u2764\ufe0f", "I love you, thanks"),
        ("Have a nice day \u2600\ufe0f", "Have a nice day"),
        ("Let me know \U0001f60a \U0001f44d\U0001f3fd", "Let me know"),
        ("That was \U0001f602 funny.", "That was funny."),
        ("Hi \U0001f44b there, ready? \U0001f680 Go \u2728", "Hi there, ready? Go"),
        ("\u2705 Done \u274c Not yet \u2b50 \u2713 \u2605", "Done Not yet"),
        ("\u0031\ufe0f\u20e3 Install it", "1 Install it"),
        ("The \U0001f468\u200d\U0001f469\u200d\U0001f467 family.", "The family."),
        ("Copyright \u00a9 2024 Acme\u2122", "Copyright \u00a9 2024 Acme\u2122"),
        ("Call my_function now.", "Call my function now."),
        ("", ""),
    ],
)
def test_spoken_text(text: str, spoken: str) -> None:
    assert spoken_text(text) == spoken


class RecordingTts:
    name = "recording"
    sample_rate = 16000

    def __init__(self) -> None:
        self.texts: list[str] = []

    async def synthesize(self, text: str):
        self.texts.append(text)
        yield AudioFrame(b"\x00\x00" * 160, self.sample_rate)


async def _frames(tts: SpokenTextTts, text: str) -> list[AudioFrame]:
    return [frame async for frame in tts.synthesize(text)]


def test_the_voice_says_the_normalised_text() -> None:
    inner = RecordingTts()
    voice = SpokenTextTts(inner)
    assert len(asyncio.run(_frames(voice, "It costs $5."))) == 1
    assert inner.texts == ["It costs 5 dollars."]
    assert (voice.name, voice.sample_rate) == ("recording", 16000)


def test_nothing_to_say_is_not_sent_to_the_voice() -> None:
    inner = RecordingTts()
    assert asyncio.run(_frames(SpokenTextTts(inner), "\U0001f389")) == []
    assert inner.texts == []


def test_a_voice_is_wrapped_once() -> None:
    inner = RecordingTts()
    voice = SpokenTextTts.around(inner)
    assert SpokenTextTts.around(voice) is voice
    assert SpokenTextTts.around(None) is None
    assert voice.texts is inner.texts  # provider extras stay reachable
