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
    PauseMessage,
    ReadyMessage,
    RecordingMessage,
    ReplyMessage,
    ResumeMessage,
    StateMessage,
    StatusMessage,
    TranscriptMessage,
)

ROOT = Path(__file__).resolve().parents[1]

WIRE = [
    (ReadyMessage(24000), {"type": "ready", "audio_out": {"sample_rate": 24000, "format": "pcm16"}}),
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


def test_every_logged_event_kind_is_in_the_vocabulary() -> None:
    emitted: set[str] = set()
    for path in (ROOT / "src" / "convers").rglob("*.py"):
        emitted |= set(re.findall(r'\.emit\(\s*"([a-z_]+)"', path.read_text()))
    assert len(emitted) > 20  # the scan found the engine's emits
    assert emitted <= {kind.value for kind in EventKind}, emitted - {kind.value for kind in EventKind}
