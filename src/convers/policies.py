"""Every turn-taking and barge-in default in one place, each with its unit in its name."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ConfigDict


@dataclass(frozen=True)
class TurnTiming:
    """When the user has started and finished speaking."""

    __pydantic_config__ = ConfigDict(extra="forbid")

    # A frame counts as speech above this probability ...
    speech_start_threshold: float = 0.5
    # ... and as silence again only below this lower one (hysteresis: no flapping on a breath).
    speech_stop_threshold: float = 0.35
    # Speech shorter than this is a click or a cough, not the start of a turn.
    min_speech_s: float = 0.15
    # Silence that ends the user's turn. 0.5 s is the usual compromise between cutting people off
    # mid-thought and making them wait.
    end_of_turn_silence_s: float = 0.5
    # With an end-of-turn model (turn_end.provider), a pause is judged once it lasts this long: the
    # model hears the utterance so far and the provisional transcript is read (engine/listening/end_of_turn.py).
    # A turn judged complete ends here, not after end_of_turn_silence_s. Below ~0.2 s the pause is
    # often only the gap before a stressed word, and the model has heard too little silence.
    turn_check_pause_s: float = 0.2
    # The model's "complete" threshold (its sigmoid output; pipecat uses the same 0.5).
    turn_done_probability: float = 0.5
    # The longest silence a turn judged unfinished waits for the user to go on ("I'd like a table
    # for... four"), after which it ends anyway: a wrong "not done" costs at most this, never 3 s.
    thinking_pause_s: float = 1.5
    # Audio kept from before the detected onset so the first syllable reaches STT.
    pre_roll_s: float = 0.3
    # Audio kept after the last speech frame: the fading end of a word, without the whole
    # end-of-turn silence (which only costs STT decode time).
    post_roll_s: float = 0.2
    # An utterance is cut here even if the user keeps talking, so STT never gets minutes of audio.
    max_utterance_s: float = 30.0
    # The VAD hears a soft onset up to ~110 ms late and an end ~45 ms late; onset and end are moved
    # back by up to this much to where the audio's loudness rose or fell (engine/listening/speech_edges.py).
    # The barge-in minimum and the end-of-turn silence are then counted from the voice itself.
    # 0 keeps the VAD's own moments.
    refine_edges_max_s: float = 0.12


# The default `BargeInPolicy.backchannels`.
BACKCHANNELS = ("mm", "mhm", "mm-hm", "mmhm", "uh-huh", "hmm", "uh", "um", "ah", "oh", "huh")


@dataclass(frozen=True)
class BargeInPolicy:
    """When speech over the agent interrupts it."""

    __pydantic_config__ = ConfigDict(extra="forbid")

    enabled: bool = True
    # Speech over the agent must last this long before the reply is cancelled and flushed.
    min_barge_in_speech_s: float = 0.25
    # Playback pauses at speech onset over the agent, before the minimum above is reached.
    pause_on_onset: bool = True
    # A pause that neither a barge-in nor a transcript with words has settled within this time (and
    # while the user is silent and nothing of theirs is being transcribed) was not an interruption:
    # playback resumes. Judged on the session's clock at each inbound frame (engine/barge_in/arbiter.py).
    false_interruption_timeout_s: float = 1.0
    # While an echo canceller is still learning the room (its first seconds of agent speech in a
    # session), what it lets through of the agent's voice sounds like a person to the VAD: speech
    # over the agent then pauses nothing at onset and cuts the reply only once it lasts this long.
    # A person is heard as soon as the canceller has learnt. WebRTC AEC3 let runs of up to 1.3 s
    # through in a room with a 0.5 s reverberation tail; at 1.2 s, 4 sessions in 10 minutes of
    # agent speech still cut themselves (`convers bench echo`, a new room every 4 replies).
    min_barge_in_speech_while_echo_learning_s: float = 2.5
    # Such speech that ends before that cut is echo, unless it lasted `echo_learning_person_min_s`
    # and under `echo_learning_own_words_max` of its transcript's letters are the agent's words
    # (engine/barge_in/own_words.py): then it is a person who spoke over the agent, and it is their
    # turn. Its transcript comes from the linear echo filter's residual, which keeps a person's voice
    # whole (convers.linear_residual). On simulated rooms (a person over a room's first reply in half
    # of them, echo -10..0 dB, other rooms than `convers bench echo`'s), the echo's utterances lasted
    # 0.2-1.7 s, and those of 1 s or more read as the agent's words, misheard ("the whole film
    # tonight"); a person's as their own.
    echo_learning_person_min_s: float = 1.0
    echo_learning_own_words_max: float = 0.3
    # ... and the microphone's own audio of it, transcribed as well, is under this share of the
    # agent's words: the residual holds echo the filter has not yet learnt garbled ("the bill.",
    # "to build connectors." for "old films. Tonight"), the microphone holds it whole. `convers
    # bench echo` (seeds 7 and 11, -10..0 dB, every utterance of 1 s or more over a learning
    # canceller): read from the microphone, the echo's 13 were 0.74-1.0 the agent's words, people's
    # 45 were 0-0.23, one 0.47 (its "Let me see" was the agent's) and one read as nothing.
    echo_learning_microphone_own_words_min: float = 0.6
    # Pieces of such speech this close together are judged as one (from the first piece's start): the
    # learning canceller's suppressor thins a voice over the agent into pieces, and the VAD heard a
    # 1.3 s question spoken over the greeting as 0.22 s and 0.47 s with 0.24 s between.
    echo_learning_join_gap_s: float = 0.6
    # Once the canceller has learnt the room, playback also pauses as soon as it says someone speaks
    # over the agent (it removed little of the microphone, `convers.double_talk`) and the VAD gives
    # that frame at least `double_talk_min_probability`: the canceller's suppressor thins a person's
    # first syllables, so the VAD alone reaches its start threshold late. 0 (no VAD gate) by default:
    # the thinned cleaned audio scores under 0.05 for most of the first 100 ms of a person's voice,
    # so at 0.2 the gate was most of the delay (echo 0 dB: onset to pause p50 146-181 ms with it,
    # docs/benchmarks.md "Speakerphone"), and the cue's own loudness test keeps the echo out. Such a
    # pause that the VAD does not confirm as speech onset within `double_talk_hold_s` of the last
    # such frame resumes (a cup set down over the agent costs it 0.3 s).
    pause_on_double_talk: bool = True
    double_talk_min_probability: float = 0.0
    double_talk_hold_s: float = 0.3
    # After a double-talk pause that nothing confirmed, the cue is not used for this long: when the
    # canceller lets a stretch of echo through, the cue fires again every time its hold ends (one
    # such stretch paused the agent 4 times in a second in `convers bench echo` at -10 dB).
    double_talk_rest_s: float = 2.0
    # Once the canceller has learnt the room, speech over the agent of which the linear echo filter
    # (Speex, the double-talk witness, `convers.double_talk`) explained this much is the agent's own
    # echo, let through by AEC3's suppressor for a moment: it does not pause, cut or answer the
    # reply (engine/barge_in/arbiter.py). `convers bench echo` (rooms of seeds 7 and 11, 10 minutes a
    # level): the filter had removed 21-39 dB at the 11 VAD onsets of such echo, and -0.1 to 6.6 dB at
    # 626 onsets of a person over the agent (p50 0.1-0.3 dB); a person is taken for echo only when the
    # agent's echo is about this much louder than them at the microphone. While the canceller
    # learns, the filter is learning too (it removed -7..11 dB of echo then): not asked.
    echo_witness_removed_db: float = 12.0
    # Utterances that say "I'm listening" rather than "stop": a transcript of only these (lower case,
    # without punctuation) never costs the agent its reply.
    backchannels: tuple[str, ...] = BACKCHANNELS


@dataclass(frozen=True)
class SpeculationPolicy:
    """Whether a turn's work starts during the end-of-turn silence (engine/listening/speculation.py)."""

    __pydantic_config__ = ConfigDict(extra="forbid")

    # STT and recall on the audio so far, once the post-roll of a pause has passed; thrown away if
    # the user speaks again. Measured with `convers bench latency` (docs/benchmarks.md).
    enabled: bool = True
    # Also start the LLM on the provisional transcript (its tokens wait for the confirmation).
    # On: it takes the LLM's time to first token off the critical path (with STT and recall on too,
    # TTFA p50 750 -> 521 ms in `convers bench latency`, docs/benchmarks.md). A pause that is not
    # an end of turn costs a request that is closed as soon as the user speaks on; set false when
    # the model is shared or slow to cancel.
    llm: bool = True
    # With `llm` on, also synthesise the prefetched reply's first speakable chunk, held until the
    # turn is confirmed: the first audio is then ready when the silence ends instead of one TTS call
    # later (Piper: 100-300 ms for a first chunk on 2 cores). A pause that is not an end of turn
    # costs that synthesis, which stops when the user speaks on.
    tts: bool = True
    # Wait for the post-roll before transcribing, so the audio is exactly what the turn ends with.
    # False starts at the first silent frame, `post_roll_s` earlier, on the speech alone and keeps
    # the result when the final audio only adds the post-roll. None (the default) decides by the
    # STT: False for a one-shot decoder (Whisper: a 200-300 ms decode, then the LLM's first token
    # and the first chunk's synthesis, all inside the 0.5 s silence; starting early took TTFA p50
    # 812 -> 628 ms in `convers bench latency`, same transcripts), True for one that decodes live
    # (pocketsphinx: its last step is cheap, while a live stream finished early at a mid-turn pause
    # and then thrown away costs a full decode: TTFA p95 554 -> 1305 ms when it started early).
    wait_for_post_roll: bool | None = None


@dataclass(frozen=True)
class ToolTiming:
    """How long a tool call inside a reply may take, and when the agent fills the wait."""

    __pydantic_config__ = ConfigDict(extra="forbid")

    # A call still running after this long is abandoned; the model is told it timed out. A SearXNG
    # on the LAN answers in 0.3-1.5 s (it asks its engines in parallel); 4 s leaves room for one slow
    # engine without leaving the user in silence much longer than a person looking something up.
    call_timeout_s: float = 4.0
    # Past this wait the agent says a short filler once per reply ("Let me look that up."): about
    # the pause after which a silence on a voice line starts to feel like a dropped call.
    filler_after_s: float = 0.7
    # Rounds of calls per reply: a model that keeps calling tools is stopped after this many.
    max_rounds: int = 3


# The user's turn is echoed to the client (`transcript`, final) once memory has committed it, which
# takes 13-20 ms on 2 cores; a store slower than this (a locked or busy database) gets the echo
# anyway, marked `stored: false`, so the page never waits on the disk. The reply never waits at all.
ECHO_COMMIT_WAIT_S = 2.0

# Past this wait for the language model's next token (the first one too), the client is told the
# model is slow (a `status` event, again at every further multiple) instead of a silent "thinking".
# A local model's first token takes 0.2-1.5 s on 2 cores with our prompts (`convers bench latency`).
LLM_SLOW_NOTICE_S = 3.0

# What the agent says when a reply came out empty or the model failed before its first word.
FALLBACK_LINE = "Sorry, I lost my words there. Could you say that again?"
