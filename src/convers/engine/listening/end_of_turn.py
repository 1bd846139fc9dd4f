"""When a pause ends the user's turn: the end-of-turn model's verdict and the transcript's, combined.

The model (smart-turn) hears intonation; the provisional transcript (speculation's, decoded during
the pause) says how the words end. Neither is trusted alone: on synthetic speech smart-turn calls
"I would like to book a table for" complete (0.96) and "my name is alex and i really like jazz
music" incomplete (0.02), so a turn ends early only when the words allow it, and a model's "not
done" never holds a finished sentence longer than the plain silence rule would.

`silence_needed_s` is pure: verdicts in, the silence that ends this pause out.
  - words that cannot end a sentence (a preposition, article, conjunction, possessive, a filler,
    a trailing comma) or that hold the turn ("let me think", "hang on", a lone "wait") -> not done: wait up to
    `thinking_pause_s`;
  - a continuing word that also ends whole sentences (a preposition or "that" at the end of a
    wh-question with Whisper's "?", "so" with its ".") -> the model's "done" ends the turn now;
    else wait up to `thinking_pause_s`;
  - a trailing "..." after other words -> the model's "not done" waits for a thinking pause, else
    the silence rule;
  - a question, or a short complete answer ("Sam.", "Yes.", "Tomorrow at five.") -> done now;
  - a statement -> done now if the model agrees, else the silence rule (`end_of_turn_silence_s`);
  - no transcript yet, one being decoded -> wait for it (within `thinking_pause_s`): the reply
    needs it anyway, and the model alone is not trusted to end a turn;
  - no transcript to come -> the model's "not done" waits for a thinking pause, anything else the silence rule.
A model with no opinion (the silence provider) leaves the silence rule alone in charge.

`TurnEndWatch` is the session's glue: it asks the model once per pause (in a worker, never
blocking the listen loop), takes the transcript from speculation, and tells the TurnTaker how much
silence ends the current pause. With transcripts the model is asked only once the words leave the
outcome open (a statement, or words trailing off).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Sequence
from typing import Literal

from convers.contracts.end_of_turn import TurnEndModel
from convers.contracts.events import EventKind
from convers.engine.listening.turn_taking import (
    SpeechPaused,
    SpeechResumed,
    TurnEvent,
    TurnTaker,
    UserTurnEnded,
)
from convers.events import EventLog
from convers.policies import TurnTiming

log = logging.getLogger(__name__)

Ending = Literal["continues", "stranded", "trails_off", "question", "short_answer", "statement", "no_words"]

# Words after which an English sentence cannot stop: articles, prepositions, conjunctions,
# possessives, subject pronouns, fillers. Auxiliaries ("can", "do") are left out: "Yes, I can." is a
# whole answer.
CONTINUING_WORDS = frozenset({
    # articles and prepositions
    "a", "an", "the", "to", "for", "of", "in", "on", "at", "with", "from", "by", "about", "into", "onto",
    "over", "under", "than", "as", "via", "per",
    # conjunctions
    "and", "or", "but", "nor", "so", "because", "if", "that", "which", "who", "whom", "whose", "when",
    "while", "where", "although", "though", "unless", "until", "since", "whether",
    # possessives and subject pronouns
    "my", "your", "our", "their", "its", "his", "i", "we", "they", "he", "she",
    # fillers (Whisper spells a long one "umm" or "uhh")
    "um", "uh", "erm", "er", "hmm", "mm", "uhm", "umm", "uhh", "mmm",
})
# A copula ends a sentence after a pronoun ("Yes, it is.", "I know where it is.") but not after a
# noun phrase, where it opens the complement: "My favourite film is ...", "The problem was ...".
COPULAS = frozenset({"is", "are", "was", "were", "am"})
ENDS_AFTER_PRONOUN = frozenset({
    "it", "that", "this", "these", "those", "there", "here", "what", "where", "how", "who", "which",
    "whatever", "i", "you", "we", "they", "he", "she", "one",
})
# Phrases that hold the turn while the speaker thinks: "Let me think. ... Maybe on Tuesday." A
# transcript ending on one waits for the thinking pause (bounded, so "Hold on." alone costs at
# most that), whatever the model hears.
HOLDING_PHRASES = (
    ("let", "me", "think"), ("let", "me", "see"), ("let", "me", "check"), ("let", "me", "remember"),
    ("hold", "on"), ("hang", "on"), ("wait", "a", "second"), ("wait", "a", "minute"), ("one", "moment"),
    ("one", "second"), ("give", "me", "a", "second"), ("give", "me", "a", "moment"),
    ("how", "do", "i", "put", "it"), ("what's", "the", "word"), ("what's", "it", "called"),
)
# A word that, said alone, holds the turn: "Wait, what about tomorrow?" over the agent was ended at
# "Wait." (a short answer, ended at once) and its question became a second turn.
HOLDING_WORDS = frozenset({"wait"})
# A contracted subject and verb cannot end an English sentence ("Yes, I am." but never "Yes, I'm."),
# so one at the end is a sentence that goes on; Whisper also writes a lone filler "um" as "I'm".
STRANDED_CONTRACTIONS = frozenset({
    "i'm", "you're", "we're", "they're", "he's", "she's", "it's", "that's", "there's",
    "i'll", "you'll", "we'll", "they'll", "he'll", "she'll", "i'd", "you'd", "we'd", "they'd", "i've", "we've",
})
# "how", "why", "when" or "where" and then an auxiliary cannot end an English sentence ("Could you
# tell me how do...", "I wonder why did..."), unlike "who" or "what", which can be its subject
# ("Who does?"). Whisper turns "how to | [pause] fix" into "how do".
WH_ADVERBS = frozenset({"how", "why", "when", "where"})
AUXILIARIES = frozenset({
    "do", "does", "did", "can", "could", "will", "would", "should", "shall", "may", "might", "must",
    "is", "are", "was", "were", "am", "have", "has", "had",
})
# Continuing words that also end whole sentences: a preposition (or "that") left at the end of a
# wh-question ("Where are you from?", "Who did you go with?", "What did you mean by that?"), and "so"
# in "I think so.". There the words cannot tell, so the model decides ("stranded"). Only with
# Whisper's own "?" after a wh-word, or "." after "so": Whisper also writes "Could you tell me how
# to?" and "My daughter started school in." for sentences cut at a pause, and on synthetic speech
# smart-turn called such cuts done (0.95): outside a wh-question a stranded preposition is nearly
# always a sentence that goes on (docs/benchmarks.md, "End of turn", questions that end on a preposition).
STRANDABLE_IN_QUESTIONS = frozenset({
    "to", "for", "of", "in", "on", "at", "with", "from", "by", "about", "into", "over", "under",
    "that", "which", "who", "whom", "when", "where",
})
WH_WORDS = frozenset({"what", "where", "who", "whom", "whose", "which", "how", "what's", "where's", "who's"})
# The endings where the model's verdict can change when a pause ends a turn (silence_needed_s).
MODEL_DECIDES = frozenset({"statement", "trails_off", "stranded"})
# A short complete answer: this many words or fewer, not ending on a continuing word.
SHORT_ANSWER_WORDS = 3
_WORD = re.compile(r"[a-z0-9']+")


def transcript_ending(text: str) -> Ending:
    """How a provisional transcript ends, as far as turn-taking cares."""
    stripped = text.strip()
    words = _WORD.findall(stripped.lower())
    if not words:
        return "no_words"
    if stripped.endswith((",", "-", "—", ";", ":")) or words[-1] in STRANDED_CONTRACTIONS:
        return "continues"
    if any(tuple(words[-len(phrase):]) == phrase for phrase in HOLDING_PHRASES):
        return "continues"  # before the stranded words: "Hang on." holds the turn
    if set(words) <= HOLDING_WORDS:
        return "continues"  # "Wait." alone, as a barge-in opens: what comes next is the turn
    if words[-1] in CONTINUING_WORDS:
        if stripped.endswith("?") and words[0] in WH_WORDS and words[-1] in STRANDABLE_IN_QUESTIONS:
            return "stranded"
        if words[-1] == "so" and stripped.endswith(".") and not stripped.endswith(("...", "…")):
            return "stranded"
        return "continues"
    if words[-1] in COPULAS and len(words) > 1 and words[-2] not in ENDS_AFTER_PRONOUN:
        return "continues"  # with or without an ellipsis: "My favourite film is..."
    if words[-1] in AUXILIARIES and len(words) > 1 and words[-2] in WH_ADVERBS:
        return "continues"
    if stripped.endswith(("...", "…")):
        # Whisper writes an ellipsis for a voice that trails off, but also after a hesitant
        # "Sure..." that is a whole answer: the model decides, never past the thinking pause.
        return "trails_off"
    if stripped.endswith("?"):
        return "question"
    if len(words) <= SHORT_ANSWER_WORDS:
        return "short_answer"
    return "statement"


def silence_needed_s(
    timing: TurnTiming, model_probability: float | None, transcript: str | None, transcript_coming: bool = False,
    over_agent: bool = False,
) -> float:
    """The silence after the end of speech that ends this pause as a turn (see the module docstring).

    `model_probability` and `transcript` are None until they are known; `transcript_coming` says a
    provisional transcript is being decoded; `over_agent`: the utterance began while the agent spoke.
    `turn_check_pause_s` means "as soon as the pause is checked".
    """
    model_done = model_probability is not None and model_probability >= timing.turn_done_probability
    if transcript is not None:
        ending = transcript_ending(transcript)
        if ending == "continues":
            return timing.thinking_pause_s
        if ending == "stranded":
            # Whole ("Where are you from?") or cut ("What do you think about?"): the model's "done"
            # ends it at once; until it has answered, and after a "not done", the thinking pause.
            return timing.turn_check_pause_s if model_done else timing.thinking_pause_s
        if ending == "trails_off":
            model_not_done = model_probability is not None and not model_done
            return timing.thinking_pause_s if model_not_done else timing.end_of_turn_silence_s
        if ending == "short_answer" and over_agent:
            # A barge-in opens with a word or two and a breath ("Hold on, can you say that again?",
            # "Sorry, what did you mean?"), and over a speakerphone the canceller has thinned that
            # opening into something else ("Oh God.", "All right."): ended at the check pause, the
            # question became a second turn. A short answer over the agent waits the silence rule.
            return timing.end_of_turn_silence_s
        if ending in ("question", "short_answer") or (ending == "statement" and model_done):
            return timing.turn_check_pause_s
        return timing.end_of_turn_silence_s
    if transcript_coming:
        # The reply needs these words anyway: waiting for them costs no time to first audio, and
        # ending without them on a slow machine cut "a table for" at 0.5 s whatever the model said.
        return timing.thinking_pause_s
    if model_probability is not None and not model_done:
        return timing.thinking_pause_s
    return timing.end_of_turn_silence_s


class TurnEndWatch:
    """Judges each pause of one session's listener with the end-of-turn model and the transcript."""

    def __init__(
        self, model: TurnEndModel, timing: TurnTiming, events: EventLog, *, transcripts: bool = False
    ) -> None:
        self.model = model
        # Whether each pause gets a provisional transcript (the session speculates): one is then
        # awaited, within the thinking pause, before the turn may end.
        self.transcripts = transcripts
        self.timing = timing
        self.events = events
        self._pause = 0  # which pause the verdicts belong to
        self._pausing = False
        self._probability: float | None = None
        self._answered = False
        self._transcript: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._turns: TurnTaker | None = None
        # The model has no opinion (the silence rule): it is not asked again.
        self._silent_model = False
        # The utterance under way began while the agent spoke (a barge-in).
        self._over_agent = False

    def observe(self, events: Sequence[TurnEvent], turns: TurnTaker) -> None:
        """Called after every frame the TurnTaker scored, with the events that frame produced."""
        self._turns = turns
        for event in events:
            if isinstance(event, SpeechPaused):
                self._new_pause(pausing=True)
                self._apply()
            elif isinstance(event, (SpeechResumed, UserTurnEnded)):
                self._new_pause(pausing=False)
        self._maybe_ask()

    def utterance_began(self, over_agent: bool) -> None:
        """A new utterance began, over the agent's speech or not (its short answers then wait longer)."""
        self._over_agent = over_agent

    def transcript(self, text: str) -> None:
        """The provisional transcript of the current pause's audio (from speculation)."""
        if not self._pausing:
            return
        self._transcript = text
        self._apply()
        self._maybe_ask()

    def _maybe_ask(self) -> None:
        """Asks the model about this pause once it has lasted the check pause, and only if its answer
        can change the outcome. With transcripts, that is a statement or words trailing off: a question,
        a short answer or words that need more are decided by the words, and the model's ~90 ms of
        CPU would only slow the Whisper decode it runs beside on two cores."""
        turns = self._turns
        if turns is None or not self._pausing or self._task is not None or self._answered or self._silent_model:
            return
        if turns.pause_s + 1e-6 < self.timing.turn_check_pause_s:
            return
        if self.transcripts and (self._transcript is None
                                 or transcript_ending(self._transcript) not in MODEL_DECIDES):
            return
        audio = turns.provisional_audio(with_post_roll=False, through_now=True)
        if audio is None or not audio.pcm:
            return
        self._task = asyncio.create_task(self._ask(self._pause, audio))

    async def aclose(self) -> None:
        self._new_pause(pausing=False)

    def _new_pause(self, *, pausing: bool) -> None:
        self._pause += 1
        self._pausing = pausing
        self._probability = None
        self._answered = False
        self._transcript = None
        if self._task is not None:
            self._task.cancel()  # an inference already in its worker finishes there, unheard
            self._task = None

    async def _ask(self, pause: int, audio: object) -> None:
        try:
            probability = await self.model.done_probability(audio, self._transcript)  # type: ignore[arg-type]
        except asyncio.CancelledError:
            raise
        except Exception as error:  # noqa: BLE001 -- any model failure: the silence rule takes over for this pause
            log.warning("end-of-turn model %s failed: %s", getattr(self.model, "name", "?"), error)
            self.events.emit(EventKind.TURN_MODEL_ERROR, error=str(error))
            probability = None
        if pause != self._pause:
            return
        self._task = None
        self._answered = True
        if probability is None:
            self._silent_model = True
        self._probability = probability
        self.events.emit(EventKind.TURN_MODEL, probability=None if probability is None else round(probability, 3))
        self._apply()

    def _apply(self) -> None:
        if self._turns is None or not self._pausing:
            return
        if self._silent_model:
            needed = self.timing.end_of_turn_silence_s  # no opinion: the silence rule, transcript or not
        else:
            needed = silence_needed_s(self.timing, self._probability, self._transcript, self.transcripts,
                                      over_agent=self._over_agent)
        if needed != self._turns.silence_needed_s:
            # Why a pause ended a turn sooner or later than the silence rule: the log says.
            self.events.emit(
                EventKind.TURN_JUDGED, silence_needed_s=needed, probability=self._probability, transcript=self._transcript,
                pause_s=round(self._turns.pause_s, 3),
            )
        self._turns.silence_needed_s = needed
