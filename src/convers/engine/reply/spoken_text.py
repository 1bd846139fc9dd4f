"""What a voice should say for a chunk of reply text: numbers, money, units, URLs and symbols in words.

The splitter hands over speakable chunks (markdown and emoji gone); this turns what the TTS reads
badly into words, and leaves alone what Piper and espeak-ng (Piper phonemises through espeak-ng)
already say well: plain integers and decimals, "1,234", "50%", "3rd", "10:30", "&", "+", "=", "°".
What espeak-ng gets wrong, and so is rewritten here: "$12.50" ("dollar twelve point five zero"),
"5km" ("five K M"), "25°C" ("degrees C"), "1999" ("nineteen hundred ninety nine"), "2024-05-01",
phone numbers (read as one big number), "1/2" ("one slash two"), "x*y", URLs and e-mail addresses.

Only speech is normalised: the history and the transcript keep the model's own text. The TTS wrapper
`SpokenTextTts` does it inside `synthesize`, so every path to the voice (the reply, a speculative
first chunk, a greeting) says the same text the same way.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator
from typing import Any

import emoji
from num2words import num2words

from convers.contracts.audio import AudioFrame
from convers.contracts.tts import TextToSpeech

_DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)
_CURRENCIES = {"$": ("dollar", "cent"), "€": ("euro", "cent"), "£": ("pound", "penny"), "¥": ("yen", "")}
_SCALES = {"k": "thousand", "K": "thousand", "m": "million", "M": "million", "bn": "billion", "b": "billion", "B": "billion"}
# Units after a number, as the voice should say them (singular, plural). espeak-ng spells these out.
_UNITS: dict[str, tuple[str, str]] = {
    "km/h": ("kilometer per hour", "kilometers per hour"),
    "kph": ("kilometer per hour", "kilometers per hour"),
    "mph": ("mile per hour", "miles per hour"),
    "km": ("kilometer", "kilometers"),
    "cm": ("centimeter", "centimeters"),
    "mm": ("millimeter", "millimeters"),
    "kg": ("kilogram", "kilograms"),
    "mg": ("milligram", "milligrams"),
    "g": ("gram", "grams"),
    "lb": ("pound", "pounds"),
    "lbs": ("pounds", "pounds"),
    "oz": ("ounce", "ounces"),
    "ml": ("milliliter", "milliliters"),
    "mL": ("milliliter", "milliliters"),
    "L": ("liter", "liters"),
    "ms": ("millisecond", "milliseconds"),
    "KB": ("kilobyte", "kilobytes"),
    "MB": ("megabyte", "megabytes"),
    "GB": ("gigabyte", "gigabytes"),
    "TB": ("terabyte", "terabytes"),
    "GHz": ("gigahertz", "gigahertz"),
    "MHz": ("megahertz", "megahertz"),
    "kW": ("kilowatt", "kilowatts"),
    "kWh": ("kilowatt hour", "kilowatt hours"),
    "°C": ("degree Celsius", "degrees Celsius"),
    "°F": ("degree Fahrenheit", "degrees Fahrenheit"),
    "ºC": ("degree Celsius", "degrees Celsius"),
    "ºF": ("degree Fahrenheit", "degrees Fahrenheit"),
}
_NUMBER = r"\d+(?:,\d{3})*(?:\.\d+)?"

_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")
_URL = re.compile(r"\b(?:https?://|www\.)[^\s<>\"')\]]+[^\s<>\"')\].,;:!?]")
# "example.com", "config.json", "Node.js": a "." between letters inside a word (not "e.g.", "U.S.A.").
_DOTTED_WORD = re.compile(r"\b[A-Za-z][\w-]*(?:\.[A-Za-z][\w-]+)+\b")
_ISO_DATE = re.compile(r"\b(\d{4})-(\d{2})-(\d{2})\b")
_PHONE = re.compile(r"(?<![\w+])(\+\d{1,3}[\s.-]?)?(\(\d{3}\)\s?|\d{3}[\s.-])\d{3}[\s.-]\d{4}\b")
_MONEY = re.compile(r"([$€£¥])\s?(\d+(?:,\d{3})*)(?:\.(\d{1,2}))?(?:\s?(bn|[kKmMbB])\b|\s(thousand|million|billion|trillion)\b)?")
_UNIT = re.compile(
    r"(" + _NUMBER + r")\s?("
    + "|".join(re.escape(unit) for unit in sorted(_UNITS, key=len, reverse=True))
    + r")(?![\w/])"
)
_TIME = re.compile(r"\b([01]?\d|2[0-3]):([0-5]\d)\b(?!:)")
_YEAR_AFTER = re.compile(
    r"\b((?:in|since|by|from|of|until|till|before|after|around|circa|year|during|early|late|mid|to|and)\s+)"
    r"(1[1-9]\d\d|20\d\d)(s?)\b(?![.,]\d)",
    re.IGNORECASE,
)
_DECADE = re.compile(r"\b(1[1-9]\d0|20\d0)s\b")
_FRACTION = re.compile(r"(?<![\d/])(\d{1,2})/(\d{1,2})(?![\d/])")
_RANGE = re.compile(r"(?<![\d.,:-])(" + _NUMBER + r")\s?[\u2013-]\s?(" + _NUMBER + r")(?![\d:-])")
_NEGATIVE = re.compile(r"(?<![\w)])[-\u2212](?=\d)")
_SQUARED = re.compile(r"(?<=[\w)])\s*(?:\*\*|\^)\s*([23])(?![\w(]|\.\d)")
_POWER = re.compile(r"(?<=[\w)])\s*(?:\*\*|\^)\s*(?=[\w(])")
# Abbreviations espeak-ng reads badly, heard through Piper and Whisper: "approx." ("a prox"), "i.e."
# ("I. A."), "vs." ("B.S."), "No. 12" ("now 12"), "ext. 12" ("X 12"). What it says well is left
# alone: "e.g." ("for example"), "etc.", "Dr.", "p.m.", "U.S.A.".
_MONTH_ABBREVIATIONS = {month[:3]: month for month in _MONTHS} | {"Sept": "September"}
_ABBREVIATIONS = (
    (re.compile(r"\bapprox\.(?=\s|$)", re.IGNORECASE), "approximately"),
    (re.compile(r"\bi\.e\.(?=[\s,]|$)", re.IGNORECASE), "that is"),
    (re.compile(r"\bvs\.?(?=\s)", re.IGNORECASE), "versus"),
    (re.compile(r"\bNo\.\s?(?=\d)"), "number "),
    (re.compile(r"\bNos\.\s?(?=\d)"), "numbers "),
    (re.compile(r"\bext\.\s?(?=\d)", re.IGNORECASE), "extension "),
    (re.compile(r"\bApt\.\s?(?=\w)"), "apartment "),
    (re.compile(r"\bFigs?\.\s?(?=\d)"), "figure "),
    (re.compile(r"\bSt\.\s(?=[A-Z])"), "Saint "),  # "St. Louis"; "Main St." stays (espeak says "street")
    (re.compile(r"\bMt\.\s(?=[A-Z])"), "Mount "),
)
_MONTH_ABBREVIATION = re.compile(r"\b(" + "|".join(_MONTH_ABBREVIATIONS) + r")\.(?=\s\d)")
_TIMES = re.compile(r"(?<=[\w)])\s*[*\u00d7]\s*(?=[\w(])")
# "yes/no", not a path ("$HOME/bin", "/usr/bin", "src/app").
_SLASH_WORDS = re.compile(r"(?<![\w$/.~-])([A-Za-z]+)/([A-Za-z]+)(?![\w/]|\.\w)")
_HASH_NUMBER = re.compile(r"#(?=\d)")
_SYMBOLS = (
    (re.compile(r"\bw/(?=\s)"), "with"),
    (re.compile(r"\s*(?:\u2192|->|=>)\s*"), " to "),
    (re.compile(r"\s*\u2190\s*"), " from "),
    (re.compile(r"[~\u2248](?=\s?\d)"), "about "),
    (re.compile(r"\s*\u00f7\s*"), " divided by "),
    (re.compile(r"\s*\u00b1\s*"), " plus or minus "),
    (re.compile(r"\s*(?:\u2264|<=)\s*"), " less than or equal to "),
    (re.compile(r"\s*(?:\u2265|>=)\s*"), " greater than or equal to "),
    (re.compile(r"\s*\u2260\s*"), " is not equal to "),
    (re.compile(r"(?<=\d)\s*<\s*(?=\d)"), " is less than "),
    (re.compile(r"(?<=\d)\s*>\s*(?=\d)"), " is greater than "),
    (re.compile(r"(?<=\w)_(?=\w)"), " "),  # snake_case identifiers in inline code
)
_SPACES = re.compile(r"[ \t]+")

# Emoji (found and named by the `emoji` package, CLDR names). A listener hears an emoji's name only
# where it stands for a word between two words ("some \U0001f355 tonight": "some pizza tonight"); at
# the end of a sentence, at the start of a line or after punctuation it is decoration and is dropped
# ("Great job! \U0001f389"). Some are dropped wherever they are: faces, hands, hearts and people carry
# tone, which the voice already does, and marks (check marks, arrows, sparkles, stars, fire, rockets,
# light bulbs) are bullets and emphasis; naming them ("smiling face with smiling eyes", "party
# popper") is the garbage a listener must never hear. A plain heart between words is "love"
# ("I \u2764\ufe0f you"). A keycap is its digit ("1\ufe0f\u20e3 Install": "1 Install").
_MAYBE_EMOJI = re.compile("[\u00a9\u00ae\u203c-\u3299\ufe0f\u20e3\U0001f000-\U0001faff]")
_FACE_BLOCKS = ((0x1F600, 0x1F64F), (0x1F910, 0x1F92F), (0x1F970, 0x1F97F), (0x1F9D0, 0x1F9D0), (0x1FAE0, 0x1FAEF),
                (0x2639, 0x263A))
_DROPPED_EMOJI_WORDS = frozenset(
    {
        "face", "hand", "hands", "heart", "hearts", "thumbs", "clapping", "finger", "fingers", "fist", "person",
        "man", "woman", "men", "women", "people", "family", "kiss", "couple", "eyes", "tone", "sparkles", "star",
        "fire", "rocket", "pushpin", "bulb", "warning", "popper", "confetti", "mark", "diamond", "circle",
        "square", "button", "collision", "voltage", "dizzy", "arrow", "pointing", "points", "memo", "bookmark",
    }
)
# A plain heart between words is the verb: "I love NY".
_LOVE_HEART = re.compile(r"^(?:red |orange |yellow |green |blue |purple |black |white |brown |pink )?heart(?: suit)?$")
# "dog face" is a dog, "sun with face" a sun: the face of an animal or thing is not a face that smiles.
_THING_FACE = re.compile(r"(?: with)? face$")
# Pictographs and marks the `emoji` package does not name (☐ ★ ✓ ♪), variation selectors and joiners.
_EMOJI_LEFTOVER = re.compile(
    "["
    "\U0001f000-\U0001faff"  # pictographs, emoticons, transport, symbols and pictographs ext.
    "\U00002600-\U000027bf"  # misc symbols, dingbats
    "\U0000fe0f\U0000200d\U000020e3"  # variation selector, zero-width joiner, keycap
    "\U00002b00-\U00002bff"
    "]+"
)


def _number_value(text: str) -> float | int:
    text = text.replace(",", "")
    return float(text) if "." in text else int(text)


def _plural(count: str, singular: str, plural: str) -> str:
    return singular if count.replace(",", "") in ("1", "1.0") else plural


def _address(text: str) -> str:
    """A URL, domain or file name as it is read out: "example dot com slash docs"."""
    text = re.sub(r"^(?:https?://)?(?:www\.)?", "", text)
    text = re.split(r"[?#]", text, maxsplit=1)[0].rstrip("/")
    text = text.replace(".", " dot ").replace("/", " slash ").replace("@", " at ")
    text = text.replace("-", " dash ").replace("_", " underscore ")
    return _SPACES.sub(" ", text).strip()


def _money(match: re.Match[str]) -> str:
    symbol, whole, cents, short_scale, scale = match.groups()
    unit, subunit = _CURRENCIES[symbol]
    scale = scale or (_SCALES[short_scale] if short_scale else None)
    if scale:
        amount = whole + (f".{cents}" if cents else "")
        return f"{amount} {scale} {unit}s" if unit != "yen" else f"{amount} {scale} yen"
    spoken = f"{whole} {_plural(whole, unit, unit + 's') if unit != 'yen' else unit}"
    if cents and int(cents) and subunit:
        cents = cents.ljust(2, "0")
        sub = subunit if int(cents) == 1 else ("pence" if subunit == "penny" else subunit + "s")
        spoken += f" and {int(cents)} {sub}"
    return spoken


def _unit(match: re.Match[str]) -> str:
    number, unit = match.groups()
    singular, plural = _UNITS[unit]
    return f"{number} {_plural(number, singular, plural)}"


def _time(match: re.Match[str]) -> str:
    hours, minutes = int(match.group(1)), int(match.group(2))
    if minutes == 0:
        return f"{hours} o'clock" if hours <= 12 else f"{hours} hundred"
    if minutes < 10:
        return f"{hours} oh {minutes}"
    return match.group(0)  # "10:30" espeak-ng says "ten thirty" itself


def _year(year: str) -> str:
    return num2words(int(year), lang="en", to="year")


def _year_after(match: re.Match[str]) -> str:
    before, year, plural = match.groups()
    if plural:
        return before + _decade(year)
    return before + _year(year)


def _decade(year: str) -> str:
    words = _year(year)
    return (words[:-1] + "ies") if words.endswith("y") else words + "s"


def _iso_date(match: re.Match[str]) -> str:
    year, month, day = (int(part) for part in match.groups())
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return match.group(0)
    return f"{_MONTHS[month - 1]} {num2words(day, lang='en', to='ordinal')}, {_year(str(year))}"


def _phone(match: re.Match[str]) -> str:
    groups = [group for group in re.split(r"[^\d+]+", match.group(0)) if group]
    spoken = []
    for group in groups:
        prefix = "plus " if group.startswith("+") else ""
        spoken.append(prefix + " ".join(_DIGIT_WORDS[int(d)] for d in group.lstrip("+")))
    return ", ".join(spoken)


def _fraction(match: re.Match[str]) -> str:
    numerator, denominator = int(match.group(1)), int(match.group(2))
    if denominator == 0 or denominator > 16 or numerator >= 100:
        return f"{numerator} over {denominator}" if denominator else match.group(0)
    if denominator == 2:
        name = "half" if numerator == 1 else "halves"
    elif denominator == 4:
        name = "quarter" if numerator == 1 else "quarters"
    else:
        name = num2words(denominator, lang="en", to="ordinal") + ("" if numerator == 1 else "s")
    return f"{num2words(numerator, lang='en')} {name}"


def _emoji_name(chars: str) -> tuple[str, bool] | None:
    """What an emoji is called and whether it is always dropped; None for a symbol left to the voice (©, ™)."""
    data = emoji.EMOJI_DATA.get(chars)
    if data is None:
        return "", True
    first = ord(chars[0])
    if data.get("status", emoji.STATUS["fully_qualified"]) > emoji.STATUS["minimally_qualified"] and first < 0x2600:
        return None  # text symbols such as © ® ™ ‼: espeak-ng says them
    name = data["en"].strip(":").replace("_", " ")
    if name.startswith("keycap "):
        return name.removeprefix("keycap "), False
    if _LOVE_HEART.match(name.lower()):
        return "love", False  # "I \u2764\ufe0f you"; at a sentence's end it is dropped like any other
    if any(low <= first <= high for low, high in _FACE_BLOCKS):
        return "", True  # a smiling, crying, winking face
    name = _THING_FACE.sub("", name)
    if not _DROPPED_EMOJI_WORDS.isdisjoint(name.lower().split()):
        return "", True
    return name, False


def _emoji_said(text: str) -> str:
    """Emoji named where they stand for a word, dropped elsewhere (see _DROPPED_EMOJI_WORDS)."""
    if not _MAYBE_EMOJI.search(text):
        return text
    parts: list[str] = []
    done = 0
    for found in emoji.emoji_list(text):
        start, end, chars = found["match_start"], found["match_end"], found["emoji"]
        named = _emoji_name(chars)
        if named is None:
            continue
        name, dropped = named
        parts.append(text[done:start])
        done = end
        if name and name[0].isdigit():
            parts.append(f" {name} ")  # a keycap, wherever it is
        elif name and not dropped and text[:start].rstrip()[-1:].isalnum() and text[end:].lstrip()[:1].isalnum():
            parts.append(f" {name} ")
        else:
            parts.append(" ")
    parts.append(text[done:])
    return _EMOJI_LEFTOVER.sub(" ", "".join(parts))


def spoken_text(text: str) -> str:
    """`text` as a voice should say it; text that already reads well comes back unchanged."""
    if not text:
        return text
    text = _emoji_said(text)
    for pattern, words in _ABBREVIATIONS:
        text = pattern.sub(words, text)
    text = _MONTH_ABBREVIATION.sub(lambda m: _MONTH_ABBREVIATIONS[m.group(1)], text)
    text = _EMAIL.sub(lambda m: _address(m.group(0)), text)
    text = _URL.sub(lambda m: _address(m.group(0)), text)
    text = _DOTTED_WORD.sub(lambda m: _address(m.group(0)), text)
    text = _ISO_DATE.sub(_iso_date, text)
    text = _PHONE.sub(_phone, text)
    text = _MONEY.sub(_money, text)
    text = _UNIT.sub(_unit, text)
    text = _TIME.sub(_time, text)
    text = _DECADE.sub(lambda m: _decade(m.group(1)), text)
    text = _YEAR_AFTER.sub(_year_after, text)
    text = _FRACTION.sub(_fraction, text)
    text = _RANGE.sub(r"\1 to \2", text)
    text = _NEGATIVE.sub("minus ", text)
    text = _SQUARED.sub(lambda m: " squared" if m.group(1) == "2" else " cubed", text)
    text = _POWER.sub(" to the power of ", text)
    text = _TIMES.sub(" times ", text)
    text = _SLASH_WORDS.sub(lambda m: f"{m.group(1)} {'' if m.group(1).lower() == 'and' else 'or '}{m.group(2)}", text)
    text = _HASH_NUMBER.sub("number ", text)
    for pattern, words in _SYMBOLS:
        text = pattern.sub(words, text)
    return _SPACES.sub(" ", text).strip()


class SpokenTextTts:
    """A TextToSpeech that says `spoken_text(text)` through `tts`: the one place speech is normalised."""

    def __init__(self, tts: TextToSpeech) -> None:
        self.tts = tts
        self.name = tts.name
        self.sample_rate = tts.sample_rate

    @classmethod
    def around(cls, tts: TextToSpeech | None) -> TextToSpeech | None:
        """`tts` wrapped once (None stays None, an already wrapped voice is not wrapped again)."""
        if tts is None or isinstance(tts, cls):
            return tts
        return cls(tts)

    def synthesize(self, text: str) -> AsyncGenerator[AudioFrame, None]:
        spoken = spoken_text(text)
        if not any(ch.isalnum() for ch in spoken):
            return _silence()
        return self.tts.synthesize(spoken)

    def __getattr__(self, name: str) -> Any:
        # Provider extras (a Piper voice's config, a test double's record) stay reachable.
        return getattr(self.tts, name)


async def _silence() -> AsyncGenerator[AudioFrame, None]:
    return
    yield  # an async generator that yields nothing
