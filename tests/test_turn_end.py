"""End of turn by meaning: the transcript's ending, the model's verdict, and how long a pause may last.

The decision table is pure (`silence_needed_s`); `TurnEndWatch` is driven here with a real
TurnTaker on a scripted timeline and a scripted model, so each row is exact.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np
import pytest

from convers.contracts.audio import AudioFrame
from convers.engine.listening.end_of_turn import TurnEndWatch, silence_needed_s, transcript_ending
from convers.engine.listening.turn_taking import TurnTaker, UserTurnEnded
from convers.events import EventLog
from convers.policies import TurnTiming

TIMING = TurnTiming()
CHECK, SILENCE, THINK = TIMING.turn_check_pause_s, TIMING.end_of_turn_silence_s, TIMING.thinking_pause_s


@pytest.mark.parametrize(
    ("text", "ending"),
    [
        ("What's the weather like tomorrow?", "question"),
        ("I'd like to book a table for", "continues"),
        ("I'd like to book a table for...", "continues"),
        ("Sure...", "trails_off"),
        ("So I was thinking...", "trails_off"),
        ("I was thinking that, um", "continues"),
        ("Um.", "continues"),
        ("My favourite colour is, ", "continues"),
        ("Can you remind me to", "continues"),
        ("I went there with my", "continues"),
        ("Yes.", "short_answer"),
        ("Sam", "short_answer"),
        ("Tomorrow at five.", "short_answer"),
        # Whisper writes numbers as digits: "at 5" ends on the number, not on "at".
        ("Tomorrow at 5.", "short_answer"),
        ("What do you think about learning piano at 40?", "question"),
        ("I was born in 1985 and", "continues"),
        ("My name is Alex and I really like jazz music.", "statement"),
        ("Yes, I can.", "short_answer"),
        # A contracted subject and verb cannot end a sentence; the full form can.
        ("I'm", "continues"),
        ("Well, I think it's", "continues"),
        ("Yes, I am.", "short_answer"),
        ("I think that's John's.", "statement"),
        # A subject pronoun or a copula after a noun phrase needs what follows.
        ("I'm not sure but I", "continues"),
        ("My favorite film is", "continues"),
        ("My favorite film is...", "continues"),
        ("It is...", "trails_off"),
        ("The thing I wanted to ask you about is", "continues"),
        ("I know where it is.", "statement"),
        ("Yes it is.", "short_answer"),
        ("I wonder what that is", "statement"),
        # Phrases that hold the turn while the speaker thinks.
        ("Uh, let me think.", "continues"),
        ("Hmm, let me see...", "continues"),
        ("Hang on.", "continues"),
        ("Wait.", "continues"),
        ("Wait, wait.", "continues"),
        ("What's the word", "continues"),
        # ... but not the same words inside a finished sentence.
        ("Let me think about it tonight.", "statement"),
        ("Hold on to your hat.", "statement"),
        ("I can't wait.", "short_answer"),
        # A wh-adverb and an auxiliary need the rest of the question; a subject wh-word does not.
        ("Could you tell me how do", "continues"),
        ("So, umm...", "continues"),
        ("I wonder why did", "continues"),
        ("Somebody has to. Who does?", "question"),
        # A preposition or "that" ending a wh-question, "so" ending a sentence: the model decides.
        ("Where are you from?", "stranded"),
        ("What did you mean by that?", "stranded"),
        ("Who did you go with?", "stranded"),
        ("I think so.", "stranded"),
        # ... not outside a wh-question (Whisper writes these for sentences cut at a pause) ...
        ("Can you remind me to?", "continues"),
        ("Could you tell me how to?", "continues"),
        ("My daughter started school in.", "continues"),
        # ... nor without Whisper's stop, nor after an ellipsis, nor on words that never end a sentence.
        ("Tell me about", "continues"),
        ("Where are you from", "continues"),
        ("I think so...", "continues"),
        ("I was thinking we could go to the...", "continues"),
        ("We went there with my.", "continues"),
        ("I need to buy some bread and.", "continues"),
        ("Is it the?", "continues"),
        ("That is how it is.", "statement"),
        ("", "no_words"),
        ("  ...  ", "no_words"),
    ],
)
def test_transcript_ending(text: str, ending: str) -> None:
    assert transcript_ending(text) == ending


@pytest.mark.parametrize(
    ("probability", "transcript", "needed"),
    [
        # Nothing known yet: the silence rule.
        (None, None, SILENCE),
        # The model alone: "done" is not trusted to end early, "not done" waits for a thinking pause.
        (0.97, None, SILENCE),
        (0.10, None, THINK),
        # Words that cannot end a sentence win over a model that hears a falling tone.
        (0.97, "I would like to book a table for", THINK),
        (None, "so what I wanted to ask is, um", THINK),
        # An ellipsis after a word that can end: the model decides between a thinking pause and the rule.
        (0.1, "So I was thinking...", THINK),
        (0.9, "Sure...", SILENCE),
        (None, "Sure...", SILENCE),
        # A question or a short answer ends the turn at the check.
        (None, "What time is it?", CHECK),
        (0.05, "What time is it?", CHECK),
        (0.30, "Sam.", CHECK),
        # A statement ends early only when the model agrees; else it waits as the silence rule would,
        # never longer: a wrong "not done" never costs a finished sentence more than today.
        (0.80, "My name is Alex and I really like jazz music.", CHECK),
        (0.02, "My name is Alex and I really like jazz music.", SILENCE),
        (None, "My name is Alex and I really like jazz music.", SILENCE),
        # A stranded word: the model's "done" ends it at the check; "not done", or no verdict yet, waits.
        (0.80, "Where are you from?", CHECK),
        (0.10, "Where are you from?", THINK),
        (None, "What are you looking for?", THINK),
        # No words (a noise): the silence rule, and STT will find no turn in it.
        (0.9, "", SILENCE),
    ],
)
def test_silence_needed(probability: float | None, transcript: str | None, needed: float) -> None:
    assert silence_needed_s(TIMING, probability, transcript) == needed


@pytest.mark.parametrize("probability", [None, 0.05, 0.97])
def test_a_transcript_on_its_way_is_waited_for_whatever_the_model_says(probability: float | None) -> None:
    assert silence_needed_s(TIMING, probability, None, transcript_coming=True) == THINK
    # ... and once it is there, it decides as above.
    assert silence_needed_s(TIMING, probability, "What time is it?", transcript_coming=True) == CHECK


def test_a_short_answer_over_the_agent_waits_the_silence_rule() -> None:
    # A barge-in opens with a word or two and a breath; its question follows.
    assert silence_needed_s(TIMING, 0.9, "Oh God.", over_agent=True) == SILENCE
    assert silence_needed_s(TIMING, 0.9, "Oh God.") == CHECK
    # A question over the agent still ends at the check.
    assert silence_needed_s(TIMING, 0.2, "Can you say that again?", over_agent=True) == CHECK


def test_the_thinking_pause_is_bounded_and_the_check_comes_first() -> None:
    assert CHECK < SILENCE < THINK <= 1.5


# --------------------------------------------------------------------- the watch on a timeline

RATE = 16000
FRAME_S = 0.032


class ScriptedModel:
    """Answers a fixed probability (None: no opinion), after `delay_s`, and records what it heard."""

    name = "scripted-turn"

    def __init__(self, probability: float | None, delay_s: float = 0.0, fail: bool = False) -> None:
        self.probability = probability
        self.delay_s = delay_s
        self.fail = fail
        self.heard: list[float] = []

    async def done_probability(self, audio: AudioFrame, transcript: str | None = None) -> float | None:
        self.heard.append(audio.duration_s)
        await asyncio.sleep(self.delay_s)
        if self.fail:
            raise RuntimeError("model exploded")
        return self.probability


def frame(loud: bool) -> AudioFrame:
    samples = round(RATE * FRAME_S)
    return AudioFrame(np.full(samples, 8000 if loud else 0, dtype="<i2").tobytes(), RATE)


async def run_timeline(
    model: ScriptedModel,
    script: Sequence[tuple[bool, float]],
    transcript: str | None = None,
    transcript_after_s: float = 0.0,
    transcripts: bool = False,
    over_agent: bool = False,
) -> tuple[list[UserTurnEnded], list[float]]:
    """Feeds (loud, seconds) spans frame by frame; the transcript of each pause arrives `transcript_after_s` into it.

    Returns the turns that ended and, for each, how long its pause had lasted when it ended.
    """
    turns = TurnTaker(TIMING, sample_rate=RATE)
    events_log = EventLog(None)
    watch = TurnEndWatch(model, TIMING, events_log, transcripts=transcripts)
    watch.utterance_began(over_agent)
    ended: list[UserTurnEnded] = []
    pauses: list[float] = []
    at = 0.0
    told = False
    for loud, seconds in script:
        for _ in range(round(seconds / FRAME_S)):
            at += FRAME_S
            pause_before = turns.pause_s
            events = turns.feed(0.9 if loud else 0.05, at, frame(loud))
            watch.observe(events, turns)
            for event in events:
                if isinstance(event, UserTurnEnded):
                    ended.append(event)
                    pauses.append(pause_before + FRAME_S)
            if turns.state != "pausing":
                told = False
            elif transcript is not None and not told and turns.pause_s >= transcript_after_s:
                told = True
                watch.transcript(transcript)
            await asyncio.sleep(0)  # the model's task runs between frames, as on the event loop
            await asyncio.sleep(0)
    await watch.aclose()
    return ended, pauses


async def test_a_question_ends_at_the_check_not_after_the_silence() -> None:
    model = ScriptedModel(0.2)
    ended, pauses = await run_timeline(model, [(True, 1.0), (False, 1.0)], "What time is it?", transcript_after_s=0.1)
    assert len(ended) == 1
    assert CHECK <= pauses[0] < CHECK + 2 * FRAME_S


async def test_a_statement_the_model_calls_done_ends_early() -> None:
    model = ScriptedModel(0.9)
    ended, pauses = await run_timeline(model, [(True, 1.0), (False, 1.0)], "I really like jazz music.")
    assert len(ended) == 1 and pauses[0] < SILENCE - FRAME_S
    # Asked once, at the check, on the utterance with its pause so far.
    assert len(model.heard) == 1 and 1.0 + CHECK - FRAME_S <= model.heard[0] < 1.0 + CHECK + 0.3 + 2 * FRAME_S


async def test_a_statement_the_model_doubts_waits_as_the_silence_rule() -> None:
    ended, pauses = await run_timeline(ScriptedModel(0.1), [(True, 1.0), (False, 1.0)], "I really like jazz music.")
    assert len(ended) == 1 and SILENCE <= pauses[0] < SILENCE + 2 * FRAME_S


@pytest.mark.parametrize("over_agent", [True, False])
async def test_a_barge_in_that_opens_with_a_word_and_a_breath_stays_one_turn(over_agent: bool) -> None:
    # "Hold on, [0.3 s] can you say that again?" over the agent, its opening heard as "Oh God.".
    script = [(True, 0.5), (False, 0.3), (True, 1.0), (False, 1.0)]
    ended, _ = await run_timeline(ScriptedModel(0.9), script, "Oh God.", transcript_after_s=0.05, over_agent=over_agent)
    assert len(ended) == (1 if over_agent else 2)


async def test_a_thinking_pause_after_for_keeps_one_turn() -> None:
    # "I'd like to book a table for ... [1.2 s] ... four people": one turn, not two.
    script = [(True, 1.0), (False, 1.2), (True, 0.6), (False, 2.0)]
    ended, _ = await run_timeline(ScriptedModel(0.95), script, "I'd like to book a table for")
    assert len(ended) == 1
    assert ended[0].speech_s > 2.5


async def test_a_thinking_pause_never_waits_past_its_bound() -> None:
    ended, pauses = await run_timeline(ScriptedModel(0.05), [(True, 1.0), (False, 3.0)], "and then I, um")
    assert len(ended) == 1 and THINK <= pauses[0] < THINK + 2 * FRAME_S


async def test_a_model_that_fails_leaves_the_silence_rule() -> None:
    ended, pauses = await run_timeline(ScriptedModel(0.9, fail=True), [(True, 1.0), (False, 1.0)])
    assert len(ended) == 1 and SILENCE <= pauses[0] < SILENCE + 2 * FRAME_S


async def test_a_model_without_opinion_ignores_the_transcript() -> None:
    # The silence provider: exactly today's rule, even for a question.
    ended, pauses = await run_timeline(ScriptedModel(None), [(True, 1.0), (False, 1.0)], "What time is it?", 0.25)
    assert len(ended) == 1 and SILENCE <= pauses[0] < SILENCE + 2 * FRAME_S


async def test_a_verdict_for_an_old_pause_is_ignored() -> None:
    # The model answers "not done" after the user has resumed: the next pause starts afresh.
    slow = ScriptedModel(0.01, delay_s=0.3)
    script = [(True, 1.0), (False, 0.25), (True, 0.5), (False, 1.0)]
    ended, pauses = await run_timeline(slow, script)
    assert len(ended) == 1 and pauses[0] < THINK


async def test_a_slow_transcript_that_continues_is_waited_for_not_cut_at_the_silence_rule() -> None:
    # On a loaded machine the provisional transcript takes 0.7 s; the model (wrongly) hears a
    # finished sentence. The turn waits for the words, which say "for": one turn, not two.
    script = [(True, 1.0), (False, 1.0), (True, 0.6), (False, 2.0)]
    ended, _ = await run_timeline(
        ScriptedModel(0.97), script, "I'd like to book a table for", transcript_after_s=0.7, transcripts=True
    )
    assert len(ended) == 1 and ended[0].speech_s > 2.5


async def test_a_slow_transcript_of_a_question_ends_the_turn_when_it_arrives() -> None:
    ended, pauses = await run_timeline(
        ScriptedModel(0.2), [(True, 1.0), (False, 2.0)], "Is it raining?", transcript_after_s=0.7, transcripts=True
    )
    assert len(ended) == 1 and 0.7 <= pauses[0] < 0.7 + 2 * FRAME_S


@pytest.mark.parametrize(
    ("transcript", "asked"),
    [
        ("Is it raining?", False),  # a question ends at the check whatever the model says
        ("Sure.", False),  # so does a short answer
        ("I'd like to book a table for", False),  # words that need more wait whatever the model says
        ("I really like jazz music.", True),  # a statement: the model decides between now and 0.5 s
        ("Well, I guess...", True),  # trailing off: the model decides between 0.5 s and a thinking pause
    ],
)
async def test_with_transcripts_the_model_is_asked_only_when_its_verdict_matters(transcript: str, asked: bool) -> None:
    model = ScriptedModel(0.9)
    await run_timeline(model, [(True, 1.0), (False, 2.0)], transcript, transcript_after_s=0.3, transcripts=True)
    assert (len(model.heard) == 1) is asked
    if asked:
        # Asked when the words arrived (past the check), on the audio up to then.
        assert 1.0 + 0.3 - FRAME_S <= model.heard[0] < 1.0 + 0.3 + 2 * FRAME_S


async def test_a_statement_whose_words_come_first_ends_when_the_model_agrees() -> None:
    # The words arrive at 0.3 s; the model, asked then, agrees: the turn ends there, not at 0.5 s.
    ended, pauses = await run_timeline(ScriptedModel(0.9), [(True, 1.0), (False, 1.0)],
                                       "I really like jazz music.", transcript_after_s=0.3, transcripts=True)
    assert len(ended) == 1 and 0.3 <= pauses[0] < 0.3 + 2 * FRAME_S < SILENCE


# --------------------------------------------------------------------- the benchmark's arithmetic


def test_bench_turns_counts_premature_cuts_and_judges_the_goals() -> None:
    from convers.bench.end_of_turn import check_goals, summarize

    def row(kind: str, decision: float | None, ttfa: float | None, premature: bool = False) -> dict:
        return {"kind": kind, "decision_ms": decision, "ttfa_ms": ttfa, "premature": premature, "error": None}

    rows = [row("finished", 220, 480), row("finished", 240, 520), row("paused", 1400, 1700),
            row("paused", 510, 800, premature=True), row("short", 230, 470)]
    summary = summarize(rows)
    assert summary["paused"]["premature"] == 1 and summary["paused"]["premature_rate"] == 0.5
    # A cut-off utterance is counted as a cut, not as a fast decision.
    assert summary["paused"]["decision_ms"]["n"] == 1
    assert summary["all"]["longest_wait_ms"] == 1400
    goals = check_goals(summary)
    assert goals["finished_decision_p50"] is True and goals["paused_premature_rate"] is False
    assert goals["longest_wait"] is True


def test_bench_turns_cuts_a_sentence_where_it_is_quietest() -> None:
    from convers.bench.end_of_turn import _quietest_near

    rate = 16000
    loud = np.full(rate, 0.5, dtype=np.float32)
    loud[int(0.62 * rate) : int(0.64 * rate)] = 0.0  # a 20 ms gap between two words
    assert _quietest_near(loud, 0.55, window_s=0.01, reach_s=0.1) == pytest.approx(0.63, abs=0.011)
