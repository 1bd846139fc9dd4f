"""One vocabulary for what the engine tells the world.

- Wire messages: every server-to-client JSON message of docs/protocol.md, one small dataclass each,
  with `to_wire()` giving the JSON object a transport sends (`Transport.send_event` takes that dict).
  The client-to-server messages reach the engine as `InboundAudio`, `InboundText` and `InboundPlayed`
  (contracts/transport.py); binary audio frames are encoded by the transport itself.
- Event-log kinds (`EventKind`): the `event` field of each line `EventLog.emit` writes, which the
  benchmarks read back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

PCM_FORMAT = "pcm16"

AgentState = Literal["listening", "thinking", "speaking"]


@dataclass(frozen=True)
class ReadyMessage:
    """The answer to a hello: the rate of all agent audio on this connection, and, to a client that
    cancelled no echo, whether the server does ("server") or cannot ("unavailable"); to one that
    named its `echo_room`, whether its canceller was kept from before ("kept") or starts anew ("new")."""

    sample_rate: int
    aec: str | None = None
    echo_room: str | None = None

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"type": "ready", "audio_out": {"sample_rate": self.sample_rate, "format": PCM_FORMAT}}
        if self.aec is not None:
            wire["aec"] = self.aec
        if self.echo_room is not None:
            wire["echo_room"] = self.echo_room
        return wire


@dataclass(frozen=True)
class StateMessage:
    """What the agent is doing now."""

    state: AgentState

    def to_wire(self) -> dict[str, Any]:
        return {"type": "state", "state": self.state}


@dataclass(frozen=True)
class TranscriptMessage:
    """The user's words, partial or final."""

    text: str
    final: bool = True
    # On the echo of a user turn (final): the agent turn that answers it, and whether memory has
    # committed it (engine/session/transcript_echo.py; what that promises is in docs/protocol.md).
    turn: int | None = None
    stored: bool | None = None

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"type": "transcript", "text": self.text, "final": self.final}
        if self.turn is not None:
            wire["turn"] = self.turn
        if self.stored is not None:
            wire["stored"] = self.stored
        return wire


@dataclass(frozen=True)
class ReplyMessage:
    """Agent text of `turn` as it is generated."""

    turn: int
    delta: str

    def to_wire(self) -> dict[str, Any]:
        return {"type": "reply", "turn": self.turn, "delta": self.delta}


@dataclass(frozen=True)
class RecordingMessage:
    """This session's audio is recorded (the page shows a dot)."""

    on: bool = True

    def to_wire(self) -> dict[str, Any]:
        return {"type": "recording", "on": self.on}


@dataclass(frozen=True)
class FlushMessage:
    """Drop every queued or late frame of `turn` and older."""

    turn: int

    def to_wire(self) -> dict[str, Any]:
        return {"type": "flush", "turn": self.turn}


@dataclass(frozen=True)
class PauseMessage:
    """Stop playing `turn`, keep its buffer."""

    turn: int

    def to_wire(self) -> dict[str, Any]:
        return {"type": "pause", "turn": self.turn}


@dataclass(frozen=True)
class ResumeMessage:
    """Continue `turn` where it paused."""

    turn: int

    def to_wire(self) -> dict[str, Any]:
        return {"type": "resume", "turn": self.turn}


@dataclass(frozen=True)
class MetricsMessage:
    """Per-turn latencies in ms (`TurnMetrics.latencies()`)."""

    turn: int
    latencies: dict[str, float] = field(default_factory=dict)

    def to_wire(self) -> dict[str, Any]:
        return {"type": "metrics", "turn": self.turn, **self.latencies}


@dataclass(frozen=True)
class StatusMessage:
    """Something to show while the user waits: `llm_slow`, the model has sent nothing for `waited_ms`;
    `reply_fallback`, the reply had nothing to say (`message` says why) and a short line is said instead."""

    code: str
    turn: int
    waited_ms: int
    message: str

    def to_wire(self) -> dict[str, Any]:
        return {"type": "status", "code": self.code, "turn": self.turn, "waited_ms": self.waited_ms, "message": self.message}


@dataclass(frozen=True)
class NoticeMessage:
    """Something the person should know that is not a failure of what they asked: `memory` (long-term
    memory does not work now, the conversation goes on), `memory_restored` (it works again)."""

    code: str
    message: str

    def to_wire(self) -> dict[str, Any]:
        return {"type": "notice", "code": self.code, "message": self.message}


@dataclass(frozen=True)
class ErrorMessage:
    """Something failed; `code` is one of docs/protocol.md's error codes."""

    code: str
    message: str

    def to_wire(self) -> dict[str, Any]:
        return {"type": "error", "code": self.code, "message": self.message}


OutboundMessage = (
    ReadyMessage
    | StateMessage
    | TranscriptMessage
    | ReplyMessage
    | RecordingMessage
    | FlushMessage
    | PauseMessage
    | ResumeMessage
    | MetricsMessage
    | StatusMessage
    | NoticeMessage
    | ErrorMessage
)


class EventKind(StrEnum):
    """The kinds of event-log line the engine writes (each member is its own string)."""

    SESSION_START = "session_start"
    SESSION_END = "session_end"
    SPEECH_START = "speech_start"
    SPEECH_END = "speech_end"
    STT_FINAL = "stt_final"
    USER_TURN = "user_turn"
    RECALL_TIMEOUT = "recall_timeout"
    LLM_FIRST_TOKEN = "llm_first_token"
    LLM_ERROR = "llm_error"
    FIRST_CHUNK = "first_chunk"
    TTS_FIRST_AUDIO = "tts_first_audio"
    FIRST_AUDIO_OUT = "first_audio_out"
    REPLY_DONE = "reply_done"
    REPLY_ERROR = "reply_error"
    REPLY_CUT = "reply_cut"
    REPLY_RESTART = "reply_restart"
    GREETING = "greeting"
    PLAYED = "played"
    PLAYBACK_PAUSED = "playback_paused"
    PLAYBACK_RESUMED = "playback_resumed"
    BARGE_IN = "barge_in"
    # Speech over the agent while the echo canceller learnt, ended before the cut: a person or echo.
    LEARNING_SPEECH = "learning_speech"
    # Speech over the agent that the linear echo filter explained as the agent's own echo: ignored.
    ECHO_HEARD = "echo_heard"
    SPECULATION_START = "speculation_start"
    SPECULATION_COMMIT = "speculation_commit"
    SPECULATION_DISCARD = "speculation_discard"
    TURN_MODEL = "turn_model"
    TURN_MODEL_ERROR = "turn_model_error"
    TURN_JUDGED = "turn_judged"
    TOOL_CALL = "tool_call"
    TOOL_RESULT = "tool_result"
    TOOL_ERROR = "tool_error"
    TOOL_CALLS_IGNORED = "tool_calls_ignored"
    LLM_PROMPT = "llm_prompt"
    REPLY_FALLBACK = "reply_fallback"
