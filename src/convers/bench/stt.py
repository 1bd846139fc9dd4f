"""`convers bench stt`: word error and decode time of faster-whisper per encoder window.

A varied set of sentences (questions and statements, about 1 to 8 s) is spoken by espeak-ng in several
voices and speeds and by the Piper voice, cut to the speech and given the session's pre-roll and
post-roll silence (with a faint noise floor, as a microphone has), then decoded under each condition:
`full` (faster-whisper's own 30 s path) and short windows (min window, padding). Conditions run
interleaved per clip, so a busy machine slows them all alike. Used to choose
providers/stt/whisper_window.DEFAULT_RULE; the table is in docs/benchmarks.md.
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from convers.audio import pcm16_to_float32, read_wav, resample
from convers.bench.results import write_json_result
from convers.contracts.audio import AudioFrame

RATE = 16000

SENTENCES: tuple[str, ...] = (
    "Stop.",
    "Yes, please.",
    "Thank you.",
    "What time is it?",
    "Turn off the lights.",
    "Is it going to snow?",
    "Call my sister.",
    "What is the weather like in Paris today?",
    "Play some quiet music in the kitchen.",
    "How far is the nearest pharmacy?",
    "I need to buy milk, bread and coffee.",
    "Remind me to water the plants tomorrow morning.",
    "Who wrote the novel about the white whale?",
    "My favourite colour is dark green.",
    "Can you explain how a rainbow forms?",
    "The meeting was moved to Thursday afternoon.",
    "Why is the sky blue during the day?",
    "Please read me the last message from Anna.",
    "I think I left my keys at the office.",
    "What should I cook for dinner tonight?",
    "Tell me a short story about a brave little fox.",
    "Do you remember what we talked about yesterday?",
    "The train to London leaves from the second platform.",
    "How do I keep my tomatoes from splitting in the summer?",
    "My brother is visiting next week and he loves hiking in the mountains.",
    "Could you find a recipe for a vegetarian lasagne without mushrooms?",
    "I would like to book a table for dinner on Saturday evening near the river.",
    "What is the difference between a crocodile and an alligator?",
    "Yesterday I went for a long walk along the beach and found a beautiful shell.",
    "Can you tell me which planets you can see in the night sky this month?",
    "The library closes early on Sundays, so we should go there in the morning.",
    "How long should I boil an egg if I want the yolk to stay soft?",
    "Set an alarm for tomorrow.",
    "Where did I park the car?",
    "Explain the rules of chess to me as if I had never played a board game before.",
    "I am not sure whether I should take the bus or ride my bicycle to work today.",
    "When you have a moment, could you look up the opening hours of the museum and tell me whether I need to book tickets in advance?",
    "I have been feeling a bit tired lately, so I would like some ideas for healthy breakfasts that are quick to make before work.",
)

# Answers of a word or a few, said alone: the clips a short decode is least sure of (a retry costs a
# 30 s decode). Written for this set, apart from `convers bench turns`' short answers. `--corpus short`.
SHORT_ANSWERS: tuple[str, ...] = (
    "Ben", "nope", "sounds good", "half past six", "Maya", "pizza", "not really", "about an hour",
    "the blue one", "at seven", "London", "never mind", "thank you", "I think so", "twenty", "my sister",
    "next Tuesday", "Paris", "okay", "Alex", "no", "definitely", "in the kitchen", "coffee, please",
)
CORPORA = ("sentences", "short")

# espeak-ng voices and speeds (words per minute): each sentence is spoken by two of them and by Piper.
ESPEAK_VOICES: tuple[tuple[str, int], ...] = (
    ("en-us", 150),
    ("en-gb", 170),
    ("en-us+f3", 135),
    ("en-gb-x-rp", 190),
)
PRE_ROLL_S = 0.3
POST_ROLL_S = 0.2
NOISE_DBFS = -65.0


@dataclass(frozen=True)
class Clip:
    text: str
    voice: str
    samples: np.ndarray  # float32, 16 kHz

    @property
    def seconds(self) -> float:
        return len(self.samples) / RATE


def normalise(text: str) -> list[str]:
    """Words for scoring: lower case, no punctuation (apostrophes kept), British and American spellings
    as one, and a whole number in digits as its words (Whisper writes "twenty" as "20")."""
    from num2words import num2words

    text = text.lower().replace("favorite", "favourite").replace("color", "colour")
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)  # 1,000
    text = re.sub(r"\b\d+\b", lambda number: " " + num2words(int(number.group()), lang="en") + " ", text)
    text = text.replace("-", " ").replace(",", " ")
    return re.sub(r"[^a-z0-9' ]+", " ", text).split()


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(substitutions + deletions + insertions, reference words): word-level edit distance."""
    ref, hyp = normalise(reference), normalise(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, word in enumerate(ref, 1):
        previous, row[0] = row[0], i
        for j, other in enumerate(hyp, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (word != other))
    return row[-1], len(ref)


def _trimmed(frame: AudioFrame, seed: int) -> np.ndarray:
    """The speech alone, with the session's pre-roll and post-roll around it and a faint noise floor."""
    from convers.bench.latency import speech_span

    frame = resample(frame, RATE)
    start, end = speech_span(frame)
    samples = pcm16_to_float32(frame.pcm)[int(start * RATE) : int(end * RATE)]
    samples = np.concatenate([np.zeros(int(PRE_ROLL_S * RATE), np.float32), samples, np.zeros(int(POST_ROLL_S * RATE), np.float32)])
    noise = np.random.default_rng(seed).normal(0, 10 ** (NOISE_DBFS / 20), len(samples)).astype(np.float32)
    return samples + noise


def espeak_clip(text: str, voice: str, words_per_minute: int, directory: Path, seed: int) -> Clip:
    if shutil.which("espeak-ng") is None:
        raise RuntimeError("espeak-ng is not installed: apt-get install espeak-ng (it speaks the benchmark's sentences)")
    path = directory / f"espeak-{seed}.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(words_per_minute), "-w", str(path), text], check=True, capture_output=True)
    return Clip(text, f"espeak-ng {voice} {words_per_minute}", _trimmed(read_wav(path), seed))


def build_corpus(settings: Any, progress: Callable[[str], None], corpus: str = "sentences") -> list[Clip]:
    """Every sentence by Piper and by two espeak-ng voices (rotating through ESPEAK_VOICES); with
    `corpus` "short", every short answer by Piper and by all four espeak-ng voices."""
    from convers.providers.tts.piper import PiperTts

    if corpus not in CORPORA:
        raise ValueError(f"the corpus is one of {', '.join(CORPORA)}, got {corpus!r}")
    texts = SENTENCES if corpus == "sentences" else SHORT_ANSWERS
    voices_each = 2 if corpus == "sentences" else len(ESPEAK_VOICES)
    piper = PiperTts.from_settings(settings)
    stop = threading.Event()
    clips: list[Clip] = []
    with tempfile.TemporaryDirectory(prefix="convers-bench-stt-") as scratch:
        for index, text in enumerate(texts):
            for k in range(voices_each):
                voice, wpm = ESPEAK_VOICES[(voices_each * index + k) % len(ESPEAK_VOICES)]
                clips.append(espeak_clip(text, voice, wpm, Path(scratch), seed=3 * index + k))
            chunks = list(piper._chunks(text, stop))
            frame = AudioFrame(b"".join(c.pcm for c in chunks), chunks[0].sample_rate)
            clips.append(Clip(text, f"piper {piper.model_path.name}", _trimmed(frame, 3 * index + voices_each)))
    progress(f"{len(clips)} clips, {min(c.seconds for c in clips):.1f}-{max(c.seconds for c in clips):.1f} s")
    return clips


@dataclass(frozen=True)
class Condition:
    """One way to decode: `window` None is faster-whisper's full path, else (min_window_s, pad_s);
    `prompt` is the previous text given to Whisper (None: none); `compute_type` is CTranslate2's
    (None: stt.options.compute_type, int8 by default)."""

    label: str
    window: tuple[float, float] | None
    threads: int = 1
    prompt: str | None = None
    compute_type: str | None = None
    # Every unsure short decode through faster-whisper's whole temperature fallback (the old retry).
    ladder: bool = False


def parse_conditions(spec: str, threads: Sequence[int]) -> list[Condition]:
    """"full,0+0,0+1,5+1,10+1" -> full path and windows "min seconds + pad seconds", for each thread count.

    A condition ending in "@fillers" ("12+3@fillers") decodes with whisper_window.FILLER_PROMPT as the
    previous text; the others decode with none. "~TYPE" ("12+3~int8_float32") decodes with that
    CTranslate2 compute type instead of the configured one. "!ladder" ("12+3!ladder") retries an
    unsure short decode with faster-whisper's temperature fallback instead of one greedy 30 s decode.
    """
    from convers.providers.stt.whisper_window import FILLER_PROMPT

    conditions = []
    for count in threads:
        for part in (p.strip() for p in spec.split(",") if p.strip()):
            part, _, flag = part.partition("!")
            if flag not in ("", "ladder"):
                raise ValueError(f"a condition's retry is '!ladder' or nothing, got {flag!r}")
            part, _, compute_type = part.partition("~")
            part, _, prompt_name = part.partition("@")
            if prompt_name not in ("", "fillers"):
                raise ValueError(f"a condition's prompt is '@fillers' or nothing, got {prompt_name!r}")
            prompt = FILLER_PROMPT if prompt_name else None
            suffix = ((f" x{count}" if len(threads) > 1 else "") + (" @fillers" if prompt else "")
                      + (f" ~{compute_type}" if compute_type else "") + (" !ladder" if flag else ""))
            if part == "full":
                conditions.append(Condition("full 30 s" + suffix, None, count, prompt, compute_type or None))
                continue
            try:
                low, _, pad = part.partition("+")
                window = (float(low), float(pad or 0))
            except ValueError:
                raise ValueError(f"a window is MIN+PAD in seconds (e.g. 10+1) or 'full', got {part!r}") from None
            conditions.append(Condition(f"min {window[0]:g} s + pad {window[1]:g} s{suffix}", window, count, prompt,
                                        compute_type or None, ladder=bool(flag)))
    return conditions


def _model_key(condition: Condition, configured: str) -> tuple[int, str]:
    return condition.threads, condition.compute_type or configured


def run_benchmark(settings: Any, conditions: Sequence[Condition], progress: Callable[[str], None], beam_size: int = 1,
                  limit: int | None = None, corpus: str = "sentences") -> dict[str, Any]:
    from faster_whisper import WhisperModel

    from convers.providers.stt.faster_whisper import FasterWhisperStt
    from convers.providers.stt.whisper_window import WindowRule, transcribe

    stt = FasterWhisperStt.from_settings(settings)
    models = {
        key: WhisperModel(str(stt.model_dir), device="cpu", compute_type=key[1], cpu_threads=key[0],
                          num_workers=1, local_files_only=True)
        for key in sorted({_model_key(c, stt.compute_type) for c in conditions})
    }
    clips = build_corpus(settings, progress, corpus)[:limit]
    warm = clips[0].samples
    for condition in conditions:  # first calls allocate: keep them out of the figures
        rule = None if condition.window is None else WindowRule(*condition.window, max_window_s=None)
        transcribe(models[_model_key(condition, stt.compute_type)], warm, rule, language="en", beam_size=beam_size, prompt=condition.prompt,
                   ladder=condition.ladder)
    rows: dict[str, dict[str, Any]] = {c.label: {"errors": 0, "raw_errors": 0, "words": 0, "ms": [], "paths": {}, "wrong": []} for c in conditions}
    for index, clip in enumerate(clips):
        # Rotate the order per clip so no condition always runs first (caches, other load).
        order = list(conditions[index % len(conditions):]) + list(conditions[: index % len(conditions)])
        for condition in order:
            # MIN+PAD conditions grow past the floor with the utterance (max_window_s None), as measured.
            rule = None if condition.window is None else WindowRule(*condition.window, max_window_s=None)
            started = time.perf_counter()
            heard = transcribe(models[_model_key(condition, stt.compute_type)], clip.samples, rule, language="en", beam_size=beam_size,
                               prompt=condition.prompt, ladder=condition.ladder)
            elapsed = time.perf_counter() - started
            errors, words = word_errors(clip.text, heard.text)
            raw_errors = errors if heard.window_text is None else word_errors(clip.text, heard.window_text)[0]
            row = rows[condition.label]
            row["errors"] += errors
            row["raw_errors"] += raw_errors
            row["words"] += words
            row["ms"].append(elapsed * 1000)
            row["paths"][heard.path] = row["paths"].get(heard.path, 0) + 1
            if errors or raw_errors:
                row["wrong"].append({"voice": clip.voice, "said": clip.text, "heard": heard.text, "window_heard": heard.window_text})
        if index % 20 == 19:
            progress(f"{index + 1}/{len(clips)} clips: " + "; ".join(
                f"{label} {100 * r['errors'] / max(r['words'], 1):.1f}% {statistics.fmean(r['ms']):.0f} ms"
                for label, r in rows.items()))
    table = []
    for condition in conditions:
        row = rows[condition.label]
        ms = sorted(row["ms"])
        table.append({
            "condition": condition.label,
            "window": None if condition.window is None else {"min_window_s": condition.window[0], "pad_s": condition.window[1]},
            "threads": condition.threads,
            "prompt": condition.prompt,
            "compute_type": condition.compute_type,
            "ladder": condition.ladder,
            "wer_percent": round(100 * row["errors"] / max(row["words"], 1), 2),
            "word_errors": row["errors"],
            # The short window's own decode, before a doubtful one is handed to the full path.
            "window_wer_percent": round(100 * row["raw_errors"] / max(row["words"], 1), 2),
            "clips_wrong": sum(1 for w in row["wrong"] if word_errors(w["said"], w["heard"])[0]),
            "ms_mean": round(statistics.fmean(ms), 1),
            "ms_p50": round(ms[len(ms) // 2], 1),
            "ms_p95": round(ms[min(len(ms) - 1, int(0.95 * len(ms)))], 1),
            "paths": row["paths"],
            "wrong": row["wrong"],
        })
    return {
        "kind": "stt",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": stt.model_name,
        "beam_size": beam_size,
        "corpus": corpus,
        "clips": len(clips),
        "words": rows[conditions[0].label]["words"],
        "clip_seconds": {"min": round(min(c.seconds for c in clips), 2), "max": round(max(c.seconds for c in clips), 2),
                         "mean": round(statistics.fmean(c.seconds for c in clips), 2)},
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "conditions": table,
    }


def print_table(result: dict[str, Any], echo: Callable[[str], None]) -> None:
    echo(f"{result['model']}: {result['clips']} clips ({result['clip_seconds']['min']}-{result['clip_seconds']['max']} s), "
         f"{result['words']} words, beam {result['beam_size']}, load {result['load_average']}")
    echo(f"{'condition':<30}{'WER %':>7}{'raw %':>7}{'errors':>7}{'wrong':>6}{'mean ms':>9}{'p50':>7}{'p95':>7}  paths")
    for row in result["conditions"]:
        echo(f"{row['condition']:<30}{row['wer_percent']:>7.2f}{row['window_wer_percent']:>7.2f}{row['word_errors']:>7}{row['clips_wrong']:>6}"
             f"{row['ms_mean']:>9.0f}{row['ms_p50']:>7.0f}{row['ms_p95']:>7.0f}  {row['paths']}")


def write_result(result: dict[str, Any], out: Path | None = None) -> Path:
    """The result as JSON at `out`, or under bench/results/."""
    return write_json_result(result, out, "stt")
