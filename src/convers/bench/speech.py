"""`convers bench speech`: what the listener hears, judged by ear-proxy (Piper speaks, Whisper listens).

Each case is a piece of reply as an LLM writes it ("$12.50", "**Bold**", a URL, an emoji). It goes the
way a reply goes to the voice: the SentenceSplitter's chunks, each through `spoken_text`, each
synthesised by the Piper voice (joe, packaged), joined with a short pause. Whisper tiny.en listens and
the transcript is judged on key words: the words a listener must hear ("twelve", "dollars", "fifty",
"cents"), with the spellings Whisper may write them in ("12", "$"), and the words that betray text read
as garbage ("asterisk", "slash", "colon", "popper"). Whisper writes what it hears in its own style
("$12.50", "example.com", "1999"), so the judge compares words, not strings.

Piper samples noise for each synthesis; `deterministic=True` turns both noise scales to 0 so the same
text always gives the same audio (what the test uses); the default is the voice as the user hears it.
The `raw` run speaks each case's text as it is, without the normaliser: the difference is what the
normaliser is worth, and shows the judge can tell.
"""

from __future__ import annotations

import asyncio
import difflib
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from convers.audio import concat, silence
from convers.bench.results import write_json_result
from convers.contracts.audio import AudioFrame
from convers.engine.reply.sentences import SentenceSplitter
from convers.engine.reply.spoken_text import spoken_text

# Between two chunks, as the session's audio has them one after the other.
PAUSE_S = 0.2
# The share of a case's key words that must be heard: Whisper tiny.en drops or bends a word now and
# then ("at" for "Add" in "Add one half cup"), which is not what is being judged.
MIN_KEYS_HEARD = 0.75
# A key word is heard when it is written so, or (five letters or more) nearly so ("kilometres").
FUZZY_RATIO = 0.8
FUZZY_MIN_LETTERS = 5


@dataclass(frozen=True)
class EarCase:
    """A piece of reply, the key words a listener must hear in it, and the words that betray garbage.

    A key lists its spellings with "|": "12|twelve" is heard as "12" or as "twelve". A key that starts
    with "!" must be heard: it is the word the normaliser is there for ("!dollars|$" in "$12.50").
    """

    name: str
    text: str
    keys: tuple[str, ...]
    garbage: tuple[str, ...] = ()


EAR_CASES: tuple[EarCase, ...] = (
    EarCase("money", "It costs $12.50 today.", ("costs|cost", "12|twelve", "!dollars|$", "50|fifty", "today")),
    EarCase("money scale", "The budget is $3 million.", ("budget", "3|three", "million", "dollars|$")),
    EarCase("percent", "Prices rose 15% this year.", ("prices", "rose", "15|fifteen", "percent|%", "year")),
    EarCase("ordinal", "She finished 3rd out of 21.", ("finished", "3rd|third", "21|twenty", "out")),
    EarCase("units", "The station is 5km away.", ("station", "5|five", "!kilometers|kilometres|km", "away"), ("k", "m")),
    EarCase("temperature", "It is 25°C outside.", ("25|twenty", "degrees|°", "!celsius", "outside"), ("c",)),
    EarCase("year", "Back in 1999 it was new.", ("back", "1999|nineteen", "new"), ("hundred",)),
    EarCase("iso date", "It is due on 2024-05-01.", ("due", "!may", "1|first|1st", "!2024|twenty|20")),
    EarCase("time", "Meet me at 9:00 tomorrow.", ("meet", "9|nine|900", "clock|00", "tomorrow")),
    EarCase("phone", "Call 555-123-4567 now.", ("call", "555|five", "123|one", "4567|seven", "now")),
    EarCase("url", "Visit https://www.example.com/docs now.", ("visit", "example", "com|dot", "docs", "now"),
            ("https", "colon", "www")),
    EarCase("e-mail", "Write to help@example.com today.", ("write", "help", "!at|@", "example", "com|dot", "today")),
    EarCase("file name", "Open the config.json file.", ("open", "config", "json", "file")),
    EarCase("ampersand", "Salt & pepper, please.", ("salt", "and|&", "pepper", "please"), ("ampersand",)),
    EarCase("abbreviations", "It weighs approx. 5 kg, i.e. it is light.", ("weighs", "!approximately", "5|five", "!that", "light"),
            ("prox",)),
    EarCase("versus", "It is apples vs. oranges.", ("apples", "!versus", "oranges"), ("bs", "b")),
    EarCase("numbered", "Go to Room No. 12 and call ext. 34.", ("room", "!number", "12|twelve", "!extension", "34|thirty"),
            ("now", "x")),
    EarCase("and/or", "Use and/or with care.", ("use", "and", "or", "care"), ("slash",)),
    EarCase("arithmetic", "So 2 + 2 = 4 and 2 * 3 is 6.", ("2|two", "plus|+", "equals|=|is", "!times|x", "6|six"),
            ("asterisk", "star")),
    EarCase("fraction", "Add 1/2 cup of sugar.", ("one|1", "!half|½", "cup", "sugar"), ("slash",)),
    EarCase("emoji", "Great job! \U0001f389 Let me know \U0001f60a", ("great", "job", "let", "know"),
            ("party", "popper", "smiling", "face", "eyes")),
    EarCase("emoji named", "I'd love some \U0001f355 tonight, then a \U0001f436 walk.", ("love", "!pizza", "tonight", "!dog", "walk"),
            ("slice", "face")),
    EarCase("markdown", "**Bold** move.\n\n## Next steps\n\n- Pack the bags", ("bold", "move", "!next", "!steps", "pack", "bags"),
            ("asterisk", "hash", "pound", "dash")),
    EarCase("code block", "Try this.\n\n```python\nimport os\nprint(os.getcwd())\n```\n\nIt prints the folder.",
            ("try", "this", "!code", "prints", "folder"), ("import", "print", "getcwd", "os")),
    EarCase("inline code", "Call `my_function` from `main.py` first.", ("call", "!my", "!function", "main", "first"),
            ("underscore",)),
)


def voice_chunks(reply: str) -> list[str]:
    """What the voice says for `reply`: the splitter's chunks, each in spoken text."""
    splitter = SentenceSplitter()
    chunks = splitter.push(reply) + splitter.flush()
    return [spoken for spoken in (spoken_text(chunk) for chunk in chunks) if any(ch.isalnum() for ch in spoken)]


_SYMBOL_WORDS = {"&": "and", "+": "plus", "=": "equals", "%": "percent", "@": "at", "°": "degrees", "$": "$"}


def heard_words(transcript: str) -> list[str]:
    """The transcript as lower-case words, digit runs and symbols ("$12.50" is "$", "12", "50")."""
    text = re.sub(r"(?<=\d),(?=\d{3})", "", transcript.lower())
    return re.findall(r"[a-z]+|\d+(?:st|nd|rd|th)?|[$&+=%@°/*#]", text)


def _heard(spellings: str, words: Sequence[str]) -> bool:
    for spelling in spellings.split("|"):
        for word in words:
            if word == spelling or _SYMBOL_WORDS.get(word) == spelling:
                return True
            if (
                len(spelling) >= FUZZY_MIN_LETTERS
                and spelling.isalpha()
                and difflib.SequenceMatcher(None, word, spelling).ratio() >= FUZZY_RATIO
            ):
                return True
    return False


@dataclass(frozen=True)
class Verdict:
    """Which key words were heard and which were missed, and any garbage heard."""

    heard: tuple[str, ...]
    missed: tuple[str, ...]
    garbage: tuple[str, ...]

    @property
    def passed(self) -> bool:
        share = len(self.heard) / max(len(self.heard) + len(self.missed), 1)
        essential_missed = any(key.startswith("!") for key in self.missed)
        return not self.garbage and not essential_missed and share >= MIN_KEYS_HEARD


def judge(case: EarCase, transcript: str) -> Verdict:
    """How well `transcript` carries the case's key words."""
    words = heard_words(transcript)
    heard = tuple(key for key in case.keys if _heard(key.removeprefix("!"), words))
    missed = tuple(key for key in case.keys if key not in heard)
    garbage = tuple(word for word in case.garbage if word in words)
    return Verdict(heard, missed, garbage)


class EarProxy:
    """The Piper voice speaks, Whisper listens: `await proxy.hear(chunks)` is what a listener would write down."""

    def __init__(self, tts: Any, stt: Any, *, deterministic: bool = False) -> None:
        self.tts = tts
        self.stt = stt
        self.deterministic = deterministic

    @classmethod
    def from_settings(cls, settings: Any, *, deterministic: bool = False) -> EarProxy:
        """The packaged (or configured) Piper voice and faster-whisper model, as `auto` would choose them."""
        from convers.providers.stt.faster_whisper import FasterWhisperStt
        from convers.providers.tts.piper import PiperTts

        return cls(PiperTts.from_settings(settings), FasterWhisperStt.from_settings(settings), deterministic=deterministic)

    def _noiseless(self, text: str) -> AudioFrame:
        from piper import SynthesisConfig

        # noise_scale and noise_w_scale 0: no sampled noise, so the same text is the same audio.
        voice = self.tts.load()  # first: loading times the voice and sets its length scale
        config = SynthesisConfig(length_scale=self.tts.length_scale, noise_scale=0.0, noise_w_scale=0.0)
        return concat((AudioFrame(chunk.audio_int16_bytes, self.tts.sample_rate) for chunk in voice.synthesize(text, config)),
                      self.tts.sample_rate)

    async def speak(self, text: str) -> AudioFrame:
        if self.deterministic:
            return await asyncio.to_thread(self._noiseless, text)
        return concat([frame async for frame in self.tts.synthesize(text)], self.tts.sample_rate)

    async def hear(self, chunks: Sequence[str]) -> str:
        """Whisper's transcript of the chunks spoken one after the other."""
        rate = self.tts.sample_rate
        parts: list[AudioFrame] = [silence(PAUSE_S, rate)]
        for chunk in chunks:
            parts += [await self.speak(chunk), silence(PAUSE_S, rate)]
        return (await self.stt.transcribe(concat(parts, rate))).text.strip()


async def run_cases(proxy: EarProxy, cases: Sequence[EarCase], *, raw: bool, progress: Callable[[str], None]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for case in cases:
        chunks = voice_chunks(case.text)
        started = time.perf_counter()
        heard = await proxy.hear(chunks)
        verdict = judge(case, heard)
        row: dict[str, Any] = {
            "name": case.name,
            "text": case.text,
            "spoken": chunks,
            "heard": heard,
            "passed": verdict.passed,
            "keys_missed": list(verdict.missed),
            "garbage_heard": list(verdict.garbage),
            "seconds": round(time.perf_counter() - started, 2),
        }
        if raw:
            raw_heard = await proxy.hear([case.text])
            raw_verdict = judge(case, raw_heard)
            row.update(raw_heard=raw_heard, raw_passed=raw_verdict.passed, raw_keys_missed=list(raw_verdict.missed),
                       raw_garbage_heard=list(raw_verdict.garbage))
        progress(f"{case.name}: {'ok' if verdict.passed else 'MISHEARD'}: {heard!r}")
        rows.append(row)
    return rows


def run_benchmark(settings: Any, progress: Callable[[str], None], *, deterministic: bool = False, raw: bool = True,
                  names: Sequence[str] | None = None) -> dict[str, Any]:
    """Every case (or those named) spoken and heard; the result as a JSON-ready dict."""
    cases = [case for case in EAR_CASES if not names or case.name in names]
    unknown = sorted(set(names or ()) - {case.name for case in EAR_CASES})
    if unknown:
        raise ValueError(f"unknown case {', '.join(unknown)}: choose from {', '.join(case.name for case in EAR_CASES)}")
    proxy = EarProxy.from_settings(settings, deterministic=deterministic)
    rows = asyncio.run(run_cases(proxy, cases, raw=raw, progress=progress))
    result: dict[str, Any] = {
        "kind": "speech",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "voice": str(proxy.tts.model_path.name),
        "stt_model": getattr(proxy.stt, "model_name", None),
        "deterministic": deterministic,
        "min_keys_heard": MIN_KEYS_HEARD,
        "cases": len(rows),
        "passed": sum(row["passed"] for row in rows),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "rows": rows,
    }
    if raw:
        result["raw_passed"] = sum(row["raw_passed"] for row in rows)
    return result


def print_table(result: dict[str, Any], echo: Callable[[str], None]) -> None:
    raw = "raw_passed" in result
    echo(f"{result['voice']} heard by {result['stt_model']}: {result['passed']}/{result['cases']} cases heard right"
         + (f" (text as written: {result['raw_passed']}/{result['cases']})" if raw else "")
         + f", deterministic {result['deterministic']}, load {result['load_average']}")
    for row in result["rows"]:
        mark = "ok " if row["passed"] else "BAD"
        echo(f"{mark} {row['name']:<12} said  {' / '.join(row['spoken'])}")
        echo(f"    {'':<12} heard {row['heard']}" + (f"   missed {row['keys_missed']}" if row["keys_missed"] else "")
             + (f"   garbage {row['garbage_heard']}" if row["garbage_heard"] else ""))
        if raw:
            echo(f"    {'':<12} raw   {row['raw_heard']}   ({'ok' if row['raw_passed'] else 'misheard'})")


def write_result(result: dict[str, Any], out: Path | None = None) -> Path:
    """The result as JSON at `out`, or under bench/results/."""
    return write_json_result(result, out, "speech")
