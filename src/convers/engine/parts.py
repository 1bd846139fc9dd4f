"""What a session is built from: its providers (`SessionParts`) and its settings (`SessionOptions`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from convers.config import AgentSettings
from convers.contracts.end_of_turn import TurnEndModel
from convers.contracts.llm import LanguageModel
from convers.contracts.memory import ConversationMemory
from convers.contracts.stt import SpeechToText
from convers.contracts.tts import TextToSpeech
from convers.contracts.vad import Vad
from convers.engine.reply.tool_calls import Toolbox
from convers.idle_gate import IdleGate
from convers.policies import (
    ECHO_COMMIT_WAIT_S,
    FALLBACK_LINE,
    BargeInPolicy,
    SpeculationPolicy,
    TurnTiming,
)

if TYPE_CHECKING:
    from convers.recordings import TurnRecorder


@dataclass
class SessionParts:
    """The providers a session talks through. Voice parts are None in a text-only session."""

    llm: LanguageModel
    tts: TextToSpeech | None = None
    stt: SpeechToText | None = None
    vad: Vad | None = None
    memory: ConversationMemory | None = None
    # Judges pauses (engine/listening/end_of_turn.py); None ends every turn by the silence rule.
    turn_end: TurnEndModel | None = None
    # Tools the model may call mid-reply (engine/reply/tool_calls.py); None or empty: no function calling.
    tools: Toolbox | None = None
    # The opt-in recorder (recordings.py): each turn's audio and words to data_dir/recordings/.
    recorder: TurnRecorder | None = None
    # Held while the person speaks and while a reply runs, so that background model work (memory's
    # digests and observation keys) waits for a quiet moment (idle_gate.py); shared with the memory.
    idle: IdleGate | None = None


@dataclass
class SessionOptions:
    """What a session needs from settings, as plain values."""

    # The settings' default, not a second copy of it.
    agent_name: str = AgentSettings.model_fields["name"].default
    speaker_name: str = "user"
    max_tokens: int | None = None
    temperature: float | None = None
    # Recall is context, not a requirement: past this wait the reply goes ahead without it.
    recall_timeout_s: float = 0.35
    greet: bool = True
    # When the client's input ends (Ctrl-D, a closed pipe), finish the reply in flight before leaving;
    # a browser that disconnects gets no such grace, its speaker is gone.
    finish_reply_on_input_end: bool = False
    turns: TurnTiming = TurnTiming()
    barge_in: BargeInPolicy = BargeInPolicy()
    # Off unless asked for (wiring passes settings.speculation, on by default): a session built by
    # hand then makes exactly one STT call per utterance, which scripted tests rely on.
    speculation: SpeculationPolicy = SpeculationPolicy(enabled=False)
    # Decode while the user speaks when the STT can stream (pocketsphinx can): the end of a turn
    # then waits only for the decoder's final step (and speculation finishes the stream at a pause).
    live_transcription: bool = True
    # Longest wait for memory's commit before the user's turn is echoed as not stored.
    echo_commit_wait_s: float = ECHO_COMMIT_WAIT_S
    # Have the model read the prompt so far while the person speaks (a model with a prompt cache).
    read_ahead: bool = True
    # Said when a reply has nothing to say (engine/session/session.py, `_never_silent`).
    fallback_line: str = FALLBACK_LINE
