"""`convers bench turns`: when the agent decides the user is done, judged on cut-offs as well as speed.

A set of utterances is spoken into a loopback microphone in real time, each through a real Session
(Silero VAD, the end-of-turn provider under test, Whisper and Piper from settings, the reference LLM
with a one-sentence reply). Classes:

- `finished`: whole questions and statements;
- `short`: short answers ("yes", "Sam", "tomorrow at five");
- `paused`: a sentence with a 0.6-1.2 s thinking pause inside it, after a word that needs more
  ("a table for ... four people") or after a filler ("um ... how do I reset my password").

Every text is spoken by espeak-ng and by Piper (two voices), each at one of two rates, alternating so
that every rate of every voice is heard. A paused utterance is the whole sentence synthesised at once
and cut at the word boundary (Whisper's word timestamps, then the quiet moments near it, kept only
where Whisper hears the first part end on the last word before the pause and the second begin on
the next one), with silence inserted: the words before the pause keep the intonation of a sentence
that goes on, as a person's would. Per utterance it records:

- `decision_ms`: true end of speech (from the audio, not the VAD) to the end-of-turn decision;
- `premature`: the agent took a turn before the user had finished (the contract is the whole
  utterance as one turn), and how many turns the utterance became;
- `ttfa_ms`: true end of speech to the first agent audio frame sent.

The texts are written for this benchmark (everyday requests, not taken from any dataset) and no
constant of the turn-taking was fitted to them. Field descriptions: docs/benchmarks.md.

Over 400 lines: a benchmark script (the utterance set, the cutting of paused sentences, the runs
through a real Session and the report) that nothing in the product imports.
"""

from __future__ import annotations

import asyncio
import dataclasses
import difflib
import re
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from convers.audio import concat, resample, silence
from convers.bench.latency import (
    FRAME_S,
    MIC_RATE,
    describe,
    end_session,
    judged_record,
    machine_info,
    speak,
    speech_span,
    wait_until,
)
from convers.bench.results import write_json_result
from convers.contracts.audio import AudioFrame

SCHEMA_VERSION = 1

QUESTIONS: tuple[str, ...] = (
    "what time does the pharmacy close tonight",
    "can you remind me what we talked about yesterday",
    "how long should I boil an egg",
    "what's a good name for a grey cat",
    "is it going to rain this weekend",
    "could you suggest something easy for dinner",
    "how far is it from here to the coast",
    "do you remember my sister's name",
    "what should I read next",
    "why is the sky blue",
    "when does the next train leave",
    "what do you think about learning piano at forty",
    # Ending on a preposition or "that": the words alone cannot end these (turn_end.STRANDABLE_WORDS).
    "where are you from",
    "what are you looking for",
    "what did you mean by that",
)
STATEMENTS: tuple[str, ...] = (
    "my name is alex and i really like jazz music",
    "i just got back from a long walk with the dog",
    "we are flying to lisbon next month",
    "i finally finished that book you recommended",
    "my brother is visiting on saturday",
    "the meeting went better than i expected",
    "i have been sleeping badly this week",
    "tell me a joke about penguins",
    "remind me to call the dentist tomorrow",
    "i think i will cook pasta tonight",
)
SHORT_ANSWERS: tuple[str, ...] = (
    "yes", "no thanks", "Sam", "tomorrow at five", "sure", "maybe later", "the blue one", "twenty minutes",
    "i hope so",
)
# (before the pause, after it, pause in seconds)
PAUSED: tuple[tuple[str, str, float], ...] = (
    ("i'd like to book a table for", "four people tonight", 0.8),
    ("i was thinking we could go to the", "beach on saturday", 1.0),
    ("can you remind me to", "water the plants", 0.6),
    ("my favourite film is", "probably the one about the whales", 0.9),
    ("so um", "what's the capital of peru", 0.7),
    ("um", "how do i reset my password", 0.6),
    ("the thing i wanted to ask you about is", "my sister's wedding", 1.1),
    ("we went there with my", "parents last summer", 0.8),
    ("i need to buy some bread and", "a few apples", 0.7),
    ("what do you think about", "moving to a smaller flat", 1.2),
    ("uh let me think", "maybe on tuesday", 0.9),
    ("could you tell me how to", "fix a flat tyre", 0.8),
    ("my daughter started school in", "september", 0.6),
    ("i'm not sure but", "i think it was a friday", 1.0),
)
# Two rates per voice, in words per minute.
ESPEAK_RATES = (140, 190)
PIPER_RATES = (150, 200)
REPLY = "Okay, noted."


@dataclass
class TurnsConfig:
    """What one `convers bench turns` run does."""

    # Providers to compare: each is a turn_end.provider value.
    providers: tuple[str, ...] = ("smart-turn", "silence")
    voices: tuple[str, ...] = ("espeak-ng", "piper")
    # At most this many utterances per provider (0: all).
    limit: int = 0
    # Only these classes (empty: all): finished, short, paused.
    kinds: tuple[str, ...] = ()
    ttft_s: float = 0.15
    tokens_per_s: float = 30.0
    # Silence after the agent has finished before the next utterance.
    gap_s: float = 0.7
    turn_timeout_s: float = 15.0


@dataclass(frozen=True)
class SpokenItem:
    """One utterance of the set: its audio and where its speech (and its pause) lie in it."""

    kind: str  # finished | short | paused
    text: str
    voice: str
    words_per_minute: int
    frame: AudioFrame
    speech_start_s: float
    speech_end_s: float
    pause_s: float = 0.0
    # Where the first part's speech ends and the second part's starts (paused only).
    pause_from_s: float | None = None


def texts() -> list[tuple[str, str, str, float]]:
    """(kind, text before any pause, text after it, pause) for the whole set."""
    rows = [("finished", t, "", 0.0) for t in (*QUESTIONS, *STATEMENTS)]
    rows += [("short", t, "", 0.0) for t in SHORT_ANSWERS]
    rows += [("paused", a, b, p) for a, b, p in PAUSED]
    return rows


# --------------------------------------------------------------------- making the audio


class Speakers:
    """espeak-ng and Piper, each at any rate, as 16 kHz PCM; Whisper for the word boundaries."""

    def __init__(self, settings: Any, scratch: Path) -> None:
        self.settings = settings
        self.scratch = scratch
        self._piper: dict[int, Any] = {}
        self._whisper: Any = None

    def say(self, voice: str, text: str, words_per_minute: int) -> AudioFrame:
        if voice == "espeak-ng":
            return speak(text, self.scratch, words_per_minute).frame
        if voice == "piper":
            return resample(asyncio.run(self._piper_say(text, words_per_minute)), MIC_RATE)
        raise ValueError(f"unknown voice {voice!r}; the benchmark speaks with espeak-ng or piper")

    async def _piper_say(self, text: str, words_per_minute: int) -> AudioFrame:
        from convers.providers.tts.piper import PiperTts

        if words_per_minute not in self._piper:
            settings = self.settings.model_copy(deep=True)
            settings.tts.words_per_minute = words_per_minute
            self._piper[words_per_minute] = PiperTts.from_settings(settings)
        tts = self._piper[words_per_minute]
        return concat([frame async for frame in tts.synthesize(text)])

    def _model(self) -> Any:
        if self._whisper is None:
            from faster_whisper import WhisperModel

            from convers.providers.stt.faster_whisper import FasterWhisperStt

            stt = FasterWhisperStt.from_settings(self.settings)
            self._whisper = WhisperModel(str(stt.model_dir), device="cpu", compute_type="int8", cpu_threads=2)
        return self._whisper

    def _words(self, samples: np.ndarray, timestamps: bool = False) -> list[Any]:
        segments, _info = self._model().transcribe(samples, language="en", beam_size=1, word_timestamps=timestamps)
        return [w for s in segments for w in (s.words or [])] if timestamps else [s.text for s in segments]

    def split_s(self, frame: AudioFrame, before: str, after: str) -> float | None:
        """Where to cut `frame` (the whole sentence) so that it says `before`, then `after`; None if no cut does.

        Whisper's word timestamps give a first guess; the quiet moments near it are tried, quietest
        first, and a cut is kept only when Whisper hears the first part end on the last word of
        `before` and the second begin on the first word of `after`. Without that check a cut fell
        inside the next word ("remind me to w|ater": "Can you remind me to walk?"), which is not a
        pause a person makes.
        """
        samples = np.frombuffer(frame.pcm, dtype="<i2").astype(np.float32) / 32768.0
        words = self._words(samples, timestamps=True)
        count = len(before.split())
        if len(words) <= count:
            return None
        guess = (words[count - 1].end + words[count].start) / 2
        last, first = _plain(before.split()[-1]), _plain(after.split()[0])
        for cut_s in _quiet_moments(samples, guess, window_s=0.01, reach_s=0.15)[:6]:
            cut = round(cut_s * MIC_RATE)
            heard_before = _plain(" ".join(self._words(samples[:cut]))).split()
            heard_after = _plain(" ".join(self._words(samples[cut:]))).split()
            ends_right = last in FILLERS or (bool(heard_before) and _same_word(heard_before[-1], last))
            if ends_right and heard_after and _same_word(heard_after[0], first):
                return cut_s
        return None


FILLERS = frozenset({"um", "uh", "erm", "er"})


def _plain(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9']+", text.lower()))


def _same_word(heard: str, said: str) -> bool:
    """Whisper's spelling of a word: the same, close (favourite/favorite), or a number written in digits."""
    if heard == said or difflib.SequenceMatcher(None, heard, said).ratio() >= 0.75:
        return True
    return heard.isdigit() and said in NUMBER_WORDS


NUMBER_WORDS = frozenset("one two three four five six seven eight nine ten twenty thirty forty fifty".split())


def _quiet_moments(samples: np.ndarray, at_s: float, window_s: float, reach_s: float) -> list[float]:
    """Middles of `window_s` stretches within `reach_s` of `at_s`, quietest first (local minima only)."""
    step = round(window_s * MIC_RATE)
    lo = max(0, round((at_s - reach_s) * MIC_RATE))
    hi = min(len(samples) - step, round((at_s + reach_s) * MIC_RATE))
    if hi <= lo:
        return [at_s]
    starts = np.arange(lo, hi, step // 2 or 1)
    energy = np.array([float(np.mean(samples[s : s + step] ** 2)) for s in starts])
    minima = [i for i in range(len(energy)) if (i == 0 or energy[i] <= energy[i - 1]) and (i == len(energy) - 1 or energy[i] <= energy[i + 1])]
    minima.sort(key=lambda i: energy[i])
    return [(int(starts[i]) + step / 2) / MIC_RATE for i in minima]


def _quietest_near(samples: np.ndarray, at_s: float, window_s: float, reach_s: float) -> float:
    """The middle of the quietest `window_s` stretch within `reach_s` of `at_s` (a cut there splits no sound)."""
    return _quiet_moments(samples, at_s, window_s, reach_s)[0]


def build_items(speakers: Speakers, config: TurnsConfig, progress: Callable[[str], None]) -> list[SpokenItem]:
    """The whole set, spoken (see the module docstring); a paused text Whisper cannot align is left out."""
    items: list[SpokenItem] = []
    plan = [
        (index, row, voice_index, voice)
        for index, row in enumerate(texts())
        for voice_index, voice in enumerate(config.voices)
        if not config.kinds or row[0] in config.kinds
    ]
    if config.limit and config.limit < len(plan):
        # Spread the limit over the classes and voices instead of taking the first rows.
        plan = [plan[round(i * len(plan) / config.limit)] for i in range(config.limit)]
    for index, (kind, before, after, pause), voice_index, voice in plan:
        rates = ESPEAK_RATES if voice == "espeak-ng" else PIPER_RATES
        rate = rates[(index + voice_index) % len(rates)]
        whole = f"{before} {after}".strip()
        spoken = speakers.say(voice, whole, rate)
        lead = silence(0.3, MIC_RATE)
        if kind != "paused":
            frame = concat([lead, spoken, silence(0.2, MIC_RATE)])
            start, end = speech_span(frame)
            items.append(SpokenItem(kind, whole, voice, rate, frame, start, end))
            continue
        cut_s = speakers.split_s(spoken, before, after)
        if cut_s is None:
            progress(f"  left out (no cut of it is heard as {before!r} + {after!r}): {whole!r} ({voice})")
            continue
        cut = round(cut_s * MIC_RATE) * 2
        first = AudioFrame(spoken.pcm[:cut], MIC_RATE)
        second = AudioFrame(spoken.pcm[cut:], MIC_RATE)
        frame = concat([lead, first, silence(pause, MIC_RATE), second, silence(0.2, MIC_RATE)])
        start, end = speech_span(frame)
        _, first_end = speech_span(concat([lead, first]))
        items.append(SpokenItem(kind, whole, voice, rate, frame, start, end, pause, first_end))
    return items


# --------------------------------------------------------------------- running them


async def run_provider(
    settings: Any, provider: str, items: Sequence[SpokenItem], config: TurnsConfig, progress: Callable[[str], None]
) -> dict[str, Any]:
    """Every item through one Session whose end-of-turn provider is `provider`."""
    from convers.app import wiring
    from convers.engine.session import SessionParts
    from convers.transports.loopback import LoopbackTransport

    settings = settings.model_copy(deep=True)
    settings.turn_end.provider = provider
    llm = wiring.build("llm", settings)
    vad, stt, tts = wiring.build_voice(settings)
    turn_end = wiring.build_turn_end(settings)
    await wiring.warm_up(llm, stt, tts, vad, turn_end)
    transport = LoopbackTransport(input_rate=MIC_RATE)
    parts = SessionParts(llm=llm, tts=tts, stt=stt, vad=vad, turn_end=turn_end)
    session = wiring.make_session(settings, transport, parts, session_id=f"bench-turns-{int(time.time())}", greet=False)
    user_turns: list[int] = []
    heard: dict[int, str] = {}
    metrics: dict[int, Any] = {}
    # What each pause was judged on: the model's probability and the provisional transcript.
    judged: list[dict[str, Any]] = []

    def on_event(event: dict[str, Any]) -> None:
        if event["event"] == "user_turn":
            user_turns.append(int(event["turn"]))
            heard[int(event["turn"])] = str(event.get("text", ""))
        elif event["event"] == "turn_judged":
            judged.append(judged_record(event))
        elif event["event"] in ("llm_first_token", "first_chunk", "first_audio_out"):
            current = session.current
            if current is not None and current.turn == event.get("turn"):
                metrics.setdefault(current.turn, current.metrics)

    session.events.listeners.append(on_event)
    runner = asyncio.create_task(session.run())
    rows: list[dict[str, Any]] = []

    def quiet() -> bool:
        current = session.current
        return current is None or current.settled

    try:
        await wait_until(lambda: transport.mic_started_at is not None, 10)
        await asyncio.sleep(0.5)
        for number, item in enumerate(items):
            await wait_until(quiet, config.turn_timeout_s)
            at_s = transport.mic_time_s + config.gap_s
            frame_index = round(at_s / FRAME_S)
            assert transport.mic_started_at is not None
            begins = transport.mic_started_at + frame_index * FRAME_S
            true_end = begins + item.speech_end_s
            seen = len(user_turns)
            judged_before = len(judged)
            await transport.say(item.frame, at_s=frame_index * FRAME_S)

            def answered(seen: int = seen, true_end: float = true_end) -> bool:
                # A turn that ended with the utterance (not one cut off inside it) has started to answer.
                for turn in user_turns[seen:]:
                    confirmed = metrics[turn].marks.get("turn_confirmed") if turn in metrics else None
                    if confirmed is not None and confirmed >= true_end - 0.05 and any(s.turn == turn for s in transport.sent):
                        return True
                return False

            await wait_until(answered, config.turn_timeout_s)
            await asyncio.sleep(0.05)
            rows.append(_row(item, begins, true_end, user_turns[seen:], metrics, transport))
            rows[-1]["heard"] = [heard.get(t, "") for t in user_turns[seen:]]
            rows[-1]["judged"] = judged[judged_before:]
            row = rows[-1]
            progress(
                f"  {provider} {number + 1}/{len(items)} {item.kind:8} {item.voice:9} "
                f"decision {row['decision_ms']} ms, ttfa {row['ttfa_ms']} ms"
                f"{' PREMATURE' if row['premature'] else ''}: {item.text}"
            )
        await wait_until(quiet, config.turn_timeout_s)
    finally:
        await end_session(transport, runner)
    return {"provider": provider, "built": getattr(turn_end, "name", "silence rule"), "utterances": rows,
            "summary": summarize(rows)}


def _row(
    item: SpokenItem, begins: float, true_end: float, turns: list[int], metrics: dict[int, Any], transport: Any
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "kind": item.kind, "text": item.text, "voice": item.voice, "words_per_minute": item.words_per_minute,
        "pause_s": item.pause_s, "turns": len(turns), "premature": False,
        "decision_ms": None, "ttfa_ms": None, "error": None,
    }
    if not turns:
        row["error"] = "no turn (STT heard nothing?)"
        return row
    confirmed = [metrics[t].marks.get("turn_confirmed") for t in turns if t in metrics]
    # A turn confirmed before the utterance's speech was over cut the user off.
    row["premature"] = len(turns) > 1 or any(c is not None and c < true_end - 0.05 for c in confirmed)
    last = turns[-1]
    marks = metrics[last].marks if last in metrics else {}
    if "turn_confirmed" in marks:
        row["decision_ms"] = round((marks["turn_confirmed"] - true_end) * 1000, 1)
    sent = [s.at for s in transport.sent if s.turn == last]
    if sent:
        row["ttfa_ms"] = round((min(sent) - true_end) * 1000, 1)
    else:
        row["error"] = "no audio"
    return row


def summarize(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per class and overall: decision and TTFA (p50/p95/max), premature cuts, errors."""
    out: dict[str, Any] = {}
    for kind in ("finished", "short", "paused", "all"):
        chosen = [r for r in rows if kind == "all" or r["kind"] == kind]
        if not chosen:
            continue
        premature = sum(1 for r in chosen if r["premature"])
        out[kind] = {
            "utterances": len(chosen),
            "decision_ms": describe([r["decision_ms"] for r in chosen if not r["premature"]]),
            "ttfa_ms": describe([r["ttfa_ms"] for r in chosen if not r["premature"]]),
            "premature": premature,
            "premature_rate": round(premature / len(chosen), 3),
            "errors": sum(1 for r in chosen if r["error"]),
            "longest_wait_ms": max((r["decision_ms"] or 0.0 for r in chosen), default=None),
        }
    return out


GOALS = {
    "finished_decision_p50_ms": 250.0,
    "finished_ttfa_p50_ms": 500.0,
    "finished_ttfa_p95_ms": 700.0,
    "paused_premature_rate": 0.05,
    "longest_wait_ms": 1500.0 + 100.0,  # the bound, plus a frame and the decision's own hop
}


def check_goals(summary: dict[str, Any]) -> dict[str, bool | None]:
    def value(kind: str, figure: str, stat: str) -> float | None:
        found = summary.get(kind, {}).get(figure, {})
        return found.get(stat) if isinstance(found, dict) else None

    def at_most(found: float | None, goal: float) -> bool | None:
        return None if found is None else bool(found <= goal)

    return {
        "finished_decision_p50": at_most(value("finished", "decision_ms", "p50"), GOALS["finished_decision_p50_ms"]),
        "finished_ttfa_p50": at_most(value("finished", "ttfa_ms", "p50"), GOALS["finished_ttfa_p50_ms"]),
        "finished_ttfa_p95": at_most(value("finished", "ttfa_ms", "p95"), GOALS["finished_ttfa_p95_ms"]),
        "paused_premature_rate": at_most(summary.get("paused", {}).get("premature_rate"), GOALS["paused_premature_rate"]),
        "longest_wait": at_most(summary.get("all", {}).get("longest_wait_ms"), GOALS["longest_wait_ms"]),
    }


def run_benchmark(settings: Any, config: TurnsConfig, progress: Callable[[str], None] = lambda _t: None) -> dict[str, Any]:
    """Speaks the set, runs it through each provider; the whole artifact as a dict."""
    from convers.bench.reference_llm import ReferenceLlmServer, ReferenceTiming

    runs = []
    with tempfile.TemporaryDirectory(prefix="convers-bench-turns-") as scratch:
        scratch_path = Path(scratch)
        progress("speaking the utterances (espeak-ng and Piper) ...")
        items = build_items(Speakers(settings, scratch_path), config, progress)
        reference = ReferenceLlmServer(ReferenceTiming(config.ttft_s, config.tokens_per_s), replies=(REPLY,))
        with reference.running_in_thread():
            for provider in config.providers:
                run_settings = settings.model_copy(deep=True)
                run_settings.data_dir = scratch_path / f"data-{provider}"
                run_settings.events.enabled = False
                run_settings.memory.enabled = False
                run_settings.llm.provider = "openai"
                run_settings.llm.base_url = reference.base_url
                run_settings.llm.model = None
                progress(f"turn_end.provider = {provider}: {len(items)} utterances")
                run = asyncio.run(run_provider(run_settings, provider, items, config, progress))
                run["goals"] = check_goals(run["summary"])
                runs.append(run)
    return {
        "schema": SCHEMA_VERSION,
        "kind": "turns",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "config": dataclasses.asdict(config),
        "settings": {"turns": dataclasses.asdict(settings.turns), "speculation": dataclasses.asdict(settings.speculation)},
        "goals": GOALS,
        "runs": runs,
    }


def print_table(result: dict[str, Any], echo: Callable[[str], None]) -> None:
    def fmt(value: Any) -> str:
        return "-" if value is None else f"{value:.0f}"

    for run in result["runs"]:
        echo(f"turn_end.provider = {run['provider']}")
        echo(f"  {'class':9} {'n':>3} {'decision p50/p95':>17} {'ttfa p50/p95':>14} {'premature':>10} {'longest wait':>13}")
        for kind, figures in run["summary"].items():
            decision, ttfa = figures["decision_ms"], figures["ttfa_ms"]
            echo(
                f"  {kind:9} {figures['utterances']:>3} {fmt(decision['p50']):>8} / {fmt(decision['p95']):<6}"
                f" {fmt(ttfa['p50']):>6} / {fmt(ttfa['p95']):<6} {figures['premature']:>4} ({figures['premature_rate']:.0%})"
                f" {fmt(figures['longest_wait_ms']):>10}"
            )
        goals = ", ".join(f"{name} {'ok' if ok else 'MISSED' if ok is False else '-'}" for name, ok in run["goals"].items())
        echo(f"  goals: {goals}")


def write_result(result: dict[str, Any], out: Path | None = None) -> Path:
    return write_json_result(result, out, "turns")
