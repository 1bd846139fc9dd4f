"""The browser wire format (docs/protocol.md) as pure functions: one WebSocket message in, one decision out.

Nothing here touches a socket, so every malformed case is a row in a table test.
"""

from __future__ import annotations

import json
import re
import reprlib
import struct
from dataclasses import dataclass
from typing import Any, TypeGuard

from convers.contracts.audio import AudioFrame
from convers.contracts.events import PCM_FORMAT, ErrorMessage, ReadyMessage
from convers.contracts.transport import (
    InboundAudio,
    InboundEvent,
    InboundPlayed,
    InboundText,
)

# Past this a message is refused (and answered with an error) rather than parsed.
MAX_MESSAGE_BYTES = 1024 * 1024
# Telephone-band to studio: anything outside is a client bug, not a microphone.
MIN_SAMPLE_RATE = 8000
MAX_SAMPLE_RATE = 48000
# Typed messages longer than this are not conversation; they would only flood the LLM context.
MAX_TEXT_CHARS = 4000
# Our messages are flat objects; deeper nesting is only an attack on the JSON parser's recursion.
MAX_JSON_DEPTH = 16
# Error messages quote at most this much of a client's value, so a 1 MB field costs 1 MB once, not twice.
MAX_ECHOED_CHARS = 64
# A lone UTF-16 surrogate (JSON "\ud800", what JSON.stringify writes for half an emoji) cannot be
# encoded as UTF-8: in the history it would break every later LLM request and memory write.
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
AUDIO_HEADER = struct.Struct("<II")  # turn id, sequence number


@dataclass(frozen=True)
class Hello:
    """The client's first message: the rate of the microphone audio that follows, and optionally
    the persona overlays (engine/reply/persona.py) this connection asks for."""

    sample_rate: int
    overlays: tuple[str, ...] = ()
    # False: the client cancelled no echo of the agent's voice (a speakerphone whose browser
    # cancellation fails); the server then cancels it, with what the client played as the reference.
    aec: bool = True
    # With `aec` false: each microphone message carries a second channel, what the client played at
    # the same instant (sample-aligned, the exact reference). Without it, its `played` reports.
    echo_reference: bool = False
    # With `aec` false: an opaque id of the page (one per browser tab) under which the server keeps
    # its learned echo canceller for a while after the connection ends (`echo_rooms.py`).
    echo_room: str | None = None


@dataclass(frozen=True)
class ProtocolError:
    """A message the server refused; sent back as an `error` event, the connection stays open."""

    code: str
    message: str

    def event(self) -> dict[str, Any]:
        return ErrorMessage(self.code, self.message).to_wire()


Parsed = Hello | InboundEvent | ProtocolError | None


def parse_text(text: str) -> Hello | InboundText | InboundPlayed | ProtocolError:
    """A JSON control message; any text at all gives a decision, never an exception."""
    if len(text) > MAX_MESSAGE_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_MESSAGE_BYTES:
        return ProtocolError("message_too_large", f"text message over {MAX_MESSAGE_BYTES} bytes dropped")
    try:
        data = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        # json.loads recurses once per level: "[" * 100000 raised this past `except ValueError`,
        # which escaped the handshake and closed a running session with 1011.
        data = _TOO_DEEP
    except ValueError as error:
        # The parser's own messages are short and fixed ("Expecting value: line 1 column 1 (char 0)").
        return ProtocolError("bad_json", f"message is not JSON ({error}); send one JSON object per text message")
    if data is _TOO_DEEP or _nesting_depth(data) > MAX_JSON_DEPTH:
        return ProtocolError(
            "too_deep", f"JSON nested more than {MAX_JSON_DEPTH} levels deep; send one flat JSON object per message"
        )
    if not isinstance(data, dict):
        return ProtocolError("bad_message", f"expected a JSON object, got {type(data).__name__}")
    kind = data.get("type")
    if kind == "hello":
        return _parse_hello(data)
    if kind == "text":
        value = data.get("text")
        if not isinstance(value, str) or not value.strip():
            return ProtocolError("bad_message", "text message needs a non-empty string field 'text'")
        if len(value) > MAX_TEXT_CHARS:
            return ProtocolError("text_too_long", f"typed text of {len(value)} characters; the limit is {MAX_TEXT_CHARS}")
        # Replaced, not refused: the rest of a pasted text with half an emoji is still what the user said.
        return InboundText(_LONE_SURROGATE.sub("\ufffd", value))
    if kind == "played":
        turn, ms = data.get("turn"), data.get("ms")
        if not _non_negative_int(turn) or not _non_negative_int(ms):
            return ProtocolError(
                "bad_message", f"played needs integer turn and ms >= 0, got turn={shown(turn)} ms={shown(ms)}"
            )
        return InboundPlayed(int(turn), int(ms))
    return ProtocolError("unknown_type", f"unknown message type {shown(kind)}; expected hello, text or played")


def shown(value: Any) -> str:
    """`value` as an error message may quote it: a repr cut to MAX_ECHOED_CHARS, never built in full."""
    try:
        text = _SHORT_REPR.repr(value)
    except (RecursionError, ValueError):  # a huge int has no repr past 4300 digits
        text = f"<{type(value).__name__}>"
    if len(text) > MAX_ECHOED_CHARS:
        text = f"{text[:MAX_ECHOED_CHARS]}..."
    # ASCII only: the message itself must never carry a lone surrogate back out.
    return text.encode("ascii", "backslashreplace").decode("ascii")


_SHORT_REPR = reprlib.Repr()
_SHORT_REPR.maxlevel = 3
_SHORT_REPR.maxdict = _SHORT_REPR.maxlist = 4
_SHORT_REPR.maxstring = _SHORT_REPR.maxlong = _SHORT_REPR.maxother = MAX_ECHOED_CHARS


def _nesting_depth(data: Any) -> int:
    """How deep lists and objects nest in parsed JSON, counted without recursion, up to MAX_JSON_DEPTH + 1."""
    deepest = 0
    pending = [(data, 1)]
    while pending:
        value, depth = pending.pop()
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        if deepest > MAX_JSON_DEPTH:
            break
        pending.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


_TOO_DEEP = object()


def _refuse_constant(name: str) -> Any:
    # NaN and Infinity are not JSON; Python's parser accepts them unless told otherwise.
    raise ValueError(f"{name} is not a JSON number")


# A hello's `echo_room`: an opaque id, long enough to be unguessable when random, short enough to log.
ECHO_ROOM = re.compile(r"[A-Za-z0-9_-]{16,64}")

# Persona overlays a hello may name: names only (files under data_dir/persona/), a handful at most.
MAX_OVERLAYS = 4
OVERLAY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,39}$")


def _parse_hello(data: dict[str, Any]) -> Hello | ProtocolError:
    rate, fmt = data.get("sample_rate"), data.get("format", PCM_FORMAT)
    if fmt != PCM_FORMAT:
        return ProtocolError("bad_hello", f"audio format {shown(fmt)} is not supported; send {PCM_FORMAT!r}")
    if not _non_negative_int(rate) or not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        return ProtocolError(
            "bad_sample_rate",
            f"sample_rate {shown(rate)} is out of range; send an integer from {MIN_SAMPLE_RATE} to {MAX_SAMPLE_RATE} (16000 recommended)",
        )
    overlays = data.get("overlays", [])
    if not isinstance(overlays, list) or len(overlays) > MAX_OVERLAYS or not all(
        isinstance(name, str) and OVERLAY_NAME.match(name) for name in overlays
    ):
        return ProtocolError(
            "bad_hello",
            f"overlays {shown(overlays)} must be a list of at most {MAX_OVERLAYS} names of letters, digits, '-' and '_'",
        )
    aec, reference = data.get("aec", True), data.get("echo_reference", False)
    if not isinstance(aec, bool):
        return ProtocolError("bad_hello", f"aec {shown(aec)} must be true or false")
    if not isinstance(reference, bool):
        return ProtocolError("bad_hello", f"echo_reference {shown(reference)} must be true or false")
    room = data.get("echo_room")
    # fullmatch: `$` would let a trailing newline through.
    if "echo_room" in data and not (isinstance(room, str) and ECHO_ROOM.fullmatch(room)):
        return ProtocolError("bad_hello", f"echo_room {shown(room)} must be a string of 16 to 64 letters, digits, '-' and '_'")
    return Hello(int(rate), tuple(overlays), aec, reference and not aec, room if not aec else None)


def _non_negative_int(value: Any) -> TypeGuard[int]:
    # bool is an int in Python; true/false in JSON are never a count.
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**32


def parse_audio(data: bytes, sample_rate: int | None) -> InboundAudio | ProtocolError | None:
    """A binary microphone message at the rate the hello announced; empty messages are ignored."""
    if len(data) > MAX_MESSAGE_BYTES:
        return ProtocolError("message_too_large", f"audio message of {len(data)} bytes over {MAX_MESSAGE_BYTES} dropped")
    if sample_rate is None:
        return ProtocolError("hello_required", "audio arrived before hello; send {\"type\":\"hello\",\"sample_rate\":16000,\"format\":\"pcm16\"} first")
    if len(data) % 2:
        return ProtocolError("odd_audio_length", f"audio message of {len(data)} bytes; PCM16 needs an even byte count")
    if not data:
        return None
    return InboundAudio(AudioFrame(bytes(data), sample_rate))


def encode_audio(turn: int, seq: int, pcm: bytes) -> bytes:
    """An outbound audio message: 8-byte header (uint32 LE turn, uint32 LE seq) then PCM16 LE mono."""
    return AUDIO_HEADER.pack(turn & 0xFFFFFFFF, seq & 0xFFFFFFFF) + pcm


def decode_audio(message: bytes) -> tuple[int, int, bytes]:
    """(turn, seq, pcm) of an outbound audio message; for tests and Python clients."""
    turn, seq = AUDIO_HEADER.unpack_from(message)
    return turn, seq, message[AUDIO_HEADER.size :]


def ready_event(output_sample_rate: int, aec: str | None = None, echo_room: str | None = None) -> dict[str, Any]:
    return ReadyMessage(output_sample_rate, aec, echo_room).to_wire()
