"""One event vocabulary: the wire messages match docs/protocol.md, and every logged kind is an EventKind."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from convers.contracts.events import (
    ErrorMessage,
    EventKind,
    FlushMessage,
    MetricsMessage,
    NoticeMessage,
    PauseMessage,
    ReadyMessage,
    RecordingMessage,
    ReplyMessage,
    ResumeMessage,
    StateMessage,
    StatusMessage,
    TranscriptMessage,
)
from convers.events import EventLog

ROOT = Path(__file__).resolve().parents[1]

WIRE = [
    (ReadyMessage(24000), {"type": "ready", "audio_out": {"sample_rate": 24000, "format": "pcm16"}}),
    (ReadyMessage(24000, "server", "kept"),
     {"type": "ready", "audio_out": {"sample_rate": 24000, "format": "pcm16"}, "aec": "server", "echo_room": "kept"}),
    (StateMessage("thinking"), {"type": "state", "state": "thinking"}),
    (TranscriptMessage("hi there"), {"type": "transcript", "text": "hi there", "final": True}),
    (TranscriptMessage("hi", final=False), {"type": "transcript", "text": "hi", "final": False}),
    (TranscriptMessage("hi", turn=3, stored=True), {"type": "transcript", "text": "hi", "final": True, "turn": 3, "stored": True}),
    (StatusMessage("llm_slow", 3, 3000, "waiting"), {"type": "status", "code": "llm_slow", "turn": 3, "waited_ms": 3000, "message": "waiting"}),
    (ReplyMessage(3, "Hello"), {"type": "reply", "turn": 3, "delta": "Hello"}),
    (RecordingMessage(), {"type": "recording", "on": True}),
    (FlushMessage(2), {"type": "flush", "turn": 2}),
    (PauseMessage(2), {"type": "pause", "turn": 2}),
    (ResumeMessage(2), {"type": "resume", "turn": 2}),
    (MetricsMessage(4, {"stt_final_ms": 120.5}), {"type": "metrics", "turn": 4, "stt_final_ms": 120.5}),
    (NoticeMessage("memory", "memory is off"), {"type": "notice", "code": "memory", "message": "memory is off"}),
    (ErrorMessage("stt_failed", "decoder crashed"), {"type": "error", "code": "stt_failed", "message": "decoder crashed"}),
]


@pytest.mark.parametrize(("message", "wire"), WIRE, ids=[type(m).__name__ for m, _ in WIRE])
def test_a_wire_message_is_the_documented_json(message: object, wire: dict[str, object]) -> None:
    assert message.to_wire() == wire  # type: ignore[attr-defined]


def test_every_server_message_of_the_protocol_has_a_type() -> None:
    doc = (ROOT / "docs" / "protocol.md").read_text()
    server = doc.split("## Server to client", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r'`\{"type":"([a-z_]+)"', server))
    built = {m.to_wire()["type"] for m, _ in WIRE}  # type: ignore[attr-defined]
    assert documented == built


def test_the_log_takes_only_kinds_of_the_vocabulary() -> None:
    log = EventLog(None)
    assert log.emit(EventKind.USER_TURN, turn=1)["event"] == "user_turn"
    with pytest.raises(TypeError, match="'user_turm' is not an EventKind"):
        log.emit("user_turm", turn=1)  # type: ignore[arg-type]  # what a misspelt kind looked like
