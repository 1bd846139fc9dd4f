"""Whisper on a short window: encode the utterance plus some padding instead of a 30 s window.

faster-whisper pads every input to 30 s of mel frames (3000), so the encoder costs as much for a
two-second question as for thirty seconds of speech. CTranslate2's Whisper encoder accepts fewer
frames, and its cost is roughly linear in them; but cut to the bare audio, accuracy falls (the model
was trained on 30 s windows that end in silence). The rule here keeps a floor under the window:
`window_frames` gives the utterance plus `pad_s`, and never less than `min_window_s`. The numbers
were chosen by `convers bench stt` (docs/benchmarks.md, "Whisper decode window").

What is decoded is exactly the start of what faster-whisper's own path decodes: the same log-mel
features, padded with the same zeros, the same prompt (sot sequence + no-timestamps) and the same
token suppression; only the zero padding past the window is left out.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

# Whisper's mel frames: 10 ms each, 3000 in the window the model was trained on.
FRAMES_PER_S = 100
FULL_WINDOW_FRAMES = 3000

# A transcript-style prompt full of hesitations, given to Whisper as the "previous text" (the
# `@fillers` condition of `convers bench stt`, and stt.options.prompt = "fillers"). Whisper was
# trained on transcripts that leave fillers out, so a lone "um" before a thinking pause comes out as
# words ("So, one what?", "I am") that look like a finished sentence; after this prompt it writes
# "um", which turn-taking reads as unfinished. Not the default: on clean speech it cost word errors
# (6.9 -> 8.4 % on the 114 clips) and its own words leaked into transcripts ("Let me think once
# moved to Thursday", which would hold a turn); prompts of fillers alone made Whisper loop on a
# lone "um". docs/benchmarks.md, "Whisper decode window".
FILLER_PROMPT = "Umm, let me think like, hmm... Okay, here's what I'm, like, thinking."

# faster-whisper's defaults for when a decode is not to be trusted (transcribe(): compression_ratio_threshold,
# log_prob_threshold, no_speech_threshold). Past the first two its own path retries at higher temperatures;
# we hand such an utterance to the 30 s window instead (`transcribe` says how).
COMPRESSION_RATIO_THRESHOLD = 2.4
LOG_PROB_THRESHOLD = -1.0
NO_SPEECH_THRESHOLD = 0.6


@dataclass(frozen=True)
class WindowRule:
    """How long a window to encode for an utterance of a given length."""

    # Never encode less than this: below it word error rises (docs/benchmarks.md has the table).
    min_window_s: float = 12.0
    # Silence after the utterance's end that must fit inside the window. 3 s with the 12 s window:
    # utterances up to 9 s take it (the measured set went up to 8.5 s), longer ones the full path.
    pad_s: float = 3.0
    # Past this (utterance + pad) faster-whisper's own 30 s path decodes. None: up to 30 s.
    # The default keeps to what was measured: utterances that fit the floor with their pad.
    max_window_s: float | None = 12.0

    def __post_init__(self) -> None:
        if self.min_window_s < 0 or self.pad_s < 0:
            raise ValueError(f"window lengths must not be negative, got min_window_s={self.min_window_s}, pad_s={self.pad_s}")


# The measured default (`convers bench stt`, docs/benchmarks.md): on 114 clips (1077 words, espeak-ng
# in four voices and Piper joe) a 12 s window heard as well as the full 30 s one (72-74 word errors
# against 74-75, in two runs) at 30 % of its decode time. 15 s did as well; 10 s and shorter, and
# 18-20 s, were measurably worse (+9 to +29 errors): the error is not monotonic in the window, so
# keep to a measured one.
DEFAULT_RULE = WindowRule()


def audio_frames(sample_count: int, sample_rate: int = 16000) -> int:
    """Mel frames faster-whisper's feature extractor yields for the audio (one per 10 ms hop)."""
    return sample_count * FRAMES_PER_S // sample_rate


def window_frames(audio_s: float, rule: WindowRule = DEFAULT_RULE) -> int | None:
    """Mel frames to encode for `audio_s` seconds of audio; None when it needs the full 30 s path.

    The full path also handles audio longer than one window (it seeks window by window), so anything
    whose padded window would reach 30 s goes there: a short window only pays off below that anyway.
    """
    if audio_s < 0:
        raise ValueError(f"audio length must not be negative, got {audio_s}")
    needed = math.ceil((audio_s + rule.pad_s) * FRAMES_PER_S)
    if rule.max_window_s is not None and needed > math.ceil(rule.max_window_s * FRAMES_PER_S):
        return None
    frames = max(needed, math.ceil(rule.min_window_s * FRAMES_PER_S))
    return frames if frames < FULL_WINDOW_FRAMES else None


def parse_prompt(value: Any) -> str | None:
    """settings.stt.options["prompt"]: "none" (the default) or "", "fillers" (FILLER_PROMPT), or a text of
    one's own (names and words the user says often, as Whisper's initial prompt)."""
    if value is None:
        return None
    if value == "fillers":
        return FILLER_PROMPT
    if not isinstance(value, str):
        raise ValueError(f'stt.options.prompt must be "fillers", "none" or a text, got {value!r}')
    return None if value.strip() in ("", "none") else value.strip()


def parse_window(value: Any) -> WindowRule | None:
    """settings.stt.options["window"]: "auto" (the measured rule), "full" (always 30 s), or a window in seconds.

    Returns None for "full". A number N is a window of N seconds for utterances up to N minus the
    default padding (longer ones take the full path), like the default with another length.
    """
    if value is None or value == "auto":
        return DEFAULT_RULE
    if value == "full":
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ValueError(
            f'stt.options.window must be "auto", "full" or a minimum window in seconds, got {value!r}'
        ) from None
    if not 0 <= seconds <= 30:
        raise ValueError(f"stt.options.window in seconds must be between 0 and 30, got {seconds:g}")
    return WindowRule(min_window_s=seconds, pad_s=DEFAULT_RULE.pad_s, max_window_s=seconds)


def compression_ratio(text: str) -> float:
    """How repetitive a transcript is (faster-whisper's get_compression_ratio): high means a loop."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


@dataclass(frozen=True)
class WindowDecode:
    """One short-window decode: the text, and whether faster-whisper's own path would have retried it."""

    text: str
    avg_logprob: float
    no_speech_prob: float
    compression: float
    # The decode ran into its token limit: a loop, not speech (nobody says that much in the window).
    truncated: bool = False

    @property
    def silent(self) -> bool:
        """faster-whisper would drop this segment as no speech.

        Also bare punctuation that the model thinks is no speech: on a short window, digital silence
        decodes to "." with a log-probability just above the threshold (-0.9 where the 30 s window
        gives below -1, so faster-whisper's own path returns "").
        """
        if self.no_speech_prob <= NO_SPEECH_THRESHOLD:
            return False
        return self.avg_logprob < LOG_PROB_THRESHOLD or not any(c.isalnum() for c in self.text)

    @property
    def looping(self) -> bool:
        """The decode repeats itself (or ran into its token limit): a failure mode, not speech."""
        return self.truncated or (not self.silent and self.compression > COMPRESSION_RATIO_THRESHOLD)

    @property
    def doubtful(self) -> bool:
        """faster-whisper would retry at a higher temperature (and this is not silence)."""
        if self.looping:
            return True
        if self.silent:
            return False
        return self.avg_logprob < LOG_PROB_THRESHOLD


def token_limit(frames: int) -> int:
    """Most tokens a window of `frames` can hold: fast speech is ~4 words (~6 tokens) a second.

    faster-whisper allows 448 whatever the window; on a window cut short the decoder sometimes loops
    (one phrase over and over), and running such a loop to 448 tokens costs seconds. Past this limit
    the decode is treated as a loop and the full path decides.
    """
    return 16 + math.ceil(12 * frames / FRAMES_PER_S)


def decode_window(model: Any, samples: np.ndarray, frames: int, *, language: str, beam_size: int = 1,
                  prompt: str | None = None) -> WindowDecode:
    """Greedy (or beam) decode of `samples` (float32, 16 kHz) on a window of `frames` mel frames.

    `model` is a faster_whisper.WhisperModel. Blocking; the caller serialises calls on one model.
    `prompt` is given as the previous text, as faster-whisper's `initial_prompt` is.
    """
    from faster_whisper.tokenizer import Tokenizer
    from faster_whisper.transcribe import get_suppressed_tokens

    features = model.feature_extractor(samples)
    # Like generate_segments: the last frame is the extractor's padding, the rest zero-padded to the window.
    content = features[:, : max(features.shape[-1] - 1, 0)][:, :frames]
    window = np.pad(content, ((0, 0), (0, frames - content.shape[-1])))
    encoder_output = model.encode(np.ascontiguousarray(window, dtype=np.float32))
    tokenizer = Tokenizer(model.hf_tokenizer, model.model.is_multilingual, task="transcribe", language=language)
    previous = [tokenizer.sot_prev, *tokenizer.encode(" " + prompt.strip())] if prompt else []
    prompt_tokens = [*previous, *tokenizer.sot_sequence, tokenizer.no_timestamps]
    limit = min(token_limit(frames), model.max_length - len(prompt_tokens))
    result = model.model.generate(
        encoder_output,
        [prompt_tokens],
        beam_size=beam_size,
        patience=1,
        length_penalty=1,
        repetition_penalty=1,
        no_repeat_ngram_size=0,
        max_length=len(prompt_tokens) + limit,
        return_scores=True,
        return_no_speech_prob=True,
        suppress_blank=True,
        suppress_tokens=get_suppressed_tokens(tokenizer, [-1]),
        max_initial_timestamp_index=int(round(1.0 / model.time_precision)),
    )[0]
    tokens = result.sequences_ids[0]
    text = tokenizer.decode(tokens).strip()
    # As generate_with_fallback recovers it: the score is length-normalised with length_penalty 1.
    avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
    return WindowDecode(text, avg_logprob, result.no_speech_prob, compression_ratio(text), truncated=len(tokens) >= limit)


# faster-whisper's own temperatures: greedy first, then sampling ever more freely while a decode
# fails the thresholds above.
TEMPERATURE_LADDER = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


def full_transcribe(model: Any, samples: np.ndarray, *, language: str | None, beam_size: int = 1,
                    prompt: str | None = None,
                    temperatures: tuple[float, ...] = TEMPERATURE_LADDER) -> tuple[str, str | None]:
    """faster-whisper's own path: 30 s windows, its temperature fallback. Returns (text, language)."""
    segments, info = model.transcribe(
        samples,
        language=language,
        beam_size=beam_size,
        temperature=list(temperatures),
        initial_prompt=prompt or None,
        vad_filter=False,  # our own VAD already cut the utterance
        condition_on_previous_text=False,
        without_timestamps=True,
    )
    # The segments are a lazy generator: decoding happens while it is consumed.
    return " ".join(segment.text.strip() for segment in segments).strip(), info.language


@dataclass(frozen=True)
class WindowedTranscript:
    """What `transcribe` heard, and how: `path` is "window", "full" (too long for a short window, no
    rule, or a language to detect), "retry" (the short decode was unsure, so the 30 s window decided,
    greedy) or "ladder" (the short decode looped, so faster-whisper's own path with its temperature
    fallback decided). `window_text` is the short decode's text even where it was not used (what
    `convers bench stt` scores the window on)."""

    text: str
    language: str | None
    path: str
    window_text: str | None = None


def transcribe(
    model: Any, samples: np.ndarray, rule: WindowRule | None, *, language: str | None, beam_size: int = 1,
    prompt: str | None = None, ladder: bool = False,
) -> WindowedTranscript:
    """A short window where the rule allows it, else faster-whisper's full path; `prompt` as the previous text.

    `ladder` sends every unsure short decode through faster-whisper's whole temperature fallback
    (what this did before; `convers bench stt` compares the two with a "!ladder" condition).
    """
    frames = None if rule is None or language is None else window_frames(len(samples) / 16000, rule)
    # A model without faster-whisper's encode step (a stand-in that only transcribes) takes its own path.
    if frames is None or not hasattr(model, "encode"):
        return WindowedTranscript(*full_transcribe(model, samples, language=language, beam_size=beam_size,
                                                   prompt=prompt), "full")
    assert language is not None  # `frames` is None without a language
    decoded = decode_window(model, samples, frames, language=language, beam_size=beam_size, prompt=prompt)
    if decoded.looping or (decoded.doubtful and ladder):
        text, detected = full_transcribe(model, samples, language=language, beam_size=beam_size, prompt=prompt)
        return WindowedTranscript(text, detected, "ladder", decoded.text)
    if decoded.doubtful:
        # Unsure, mostly a word or two said alone ("Sam", "pizza", "at seven"): the 30 s window the
        # model was trained on, greedy, once. faster-whisper's sampling temperatures after that are
        # each another 30 s decode: on 120 short answers (20 retried) the whole ladder took p95
        # 1.8-1.9 s against 0.75-0.8 and heard 3 words fewer (`convers bench stt --corpus short`,
        # docs/benchmarks.md). Sampling is what breaks a loop, so loops still take the ladder.
        text, detected = full_transcribe(model, samples, language=language, beam_size=beam_size, prompt=prompt,
                                         temperatures=(0.0,))
        return WindowedTranscript(text, detected, "retry", decoded.text)
    text = "" if decoded.silent else decoded.text
    return WindowedTranscript(text, language, "window", text)
