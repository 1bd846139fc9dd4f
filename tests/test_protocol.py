"""The browser wire protocol against a real uvicorn server over TLS, with an echoing session double."""

from __future__ import annotations

import asyncio
import json
import ssl
from pathlib import Path
from typing import Any

import pytest
import websockets

from convers.contracts.transport import InboundAudio, InboundPlayed, InboundText
from convers.transports.browser import protocol
from convers.transports.browser.protocol import Hello, ProtocolError, decode_audio, parse_audio, parse_text
from tests.browser_helpers import TOKEN, EchoSession, RunningServer, hello, running_server


async def recv_json(ws: websockets.ClientConnection, kind: str | None = None, timeout_s: float = 5.0) -> dict:
    """The next JSON message (of type `kind` when given), skipping binary audio and other types."""
    async with asyncio.timeout(timeout_s):
        while True:
            message = await ws.recv()
            if isinstance(message, bytes):
                continue
            data = json.loads(message)
            if kind is None or data.get("type") == kind:
                return data


async def connect(server: RunningServer, token: str | None = TOKEN, **kwargs) -> websockets.ClientConnection:
    url = server.ws_url + (f"?token={token}" if token else "")
    # An unbounded client queue: unread audio must not stop the client from seeing the close frame.
    return await websockets.connect(url, ssl=server.ssl_context, max_queue=None, **kwargs)


async def open_session(server: RunningServer, rate: int = 16000) -> websockets.ClientConnection:
    ws = await connect(server)
    await ws.send(hello(rate))
    ready = await recv_json(ws, "ready")
    assert ready["audio_out"]["format"] == "pcm16"
    return ws


@pytest.fixture
async def echo(tmp_path: Path):
    double = EchoSession()
    async with running_server(double, tmp_path / "tls") as server:
        yield double, server


# ----------------------------------------------------------------- pure parsing, as a table

@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"type":"hello","sample_rate":16000,"format":"pcm16"}', Hello(16000)),
        ('{"type":"hello","sample_rate":48000}', Hello(48000)),
        ('{"type":"text","text":"hi there"}', InboundText("hi there")),
        ('{"type":"played","turn":3,"ms":1200}', InboundPlayed(3, 1200)),
        ("not json", "bad_json"),
        ("[1,2]", "bad_message"),
        ('{"type":"dance"}', "unknown_type"),
        ('{"text":"no type"}', "unknown_type"),
        ('{"type":"hello","sample_rate":7999}', "bad_sample_rate"),
        ('{"type":"hello","sample_rate":48001}', "bad_sample_rate"),
        ('{"type":"hello","sample_rate":"16000"}', "bad_sample_rate"),
        ('{"type":"hello","sample_rate":true}', "bad_sample_rate"),
        ('{"type":"hello","sample_rate":16000,"format":"opus"}', "bad_hello"),
        ('{"type":"text","text":""}', "bad_message"),
        ('{"type":"text","text":42}', "bad_message"),
        ('{"type":"text","text":"' + "a" * 5000 + '"}', "text_too_long"),
        ('{"type":"played","turn":-1,"ms":5}', "bad_message"),
        ('{"type":"played","turn":1,"ms":2.5}', "bad_message"),
        ('{"type":"played","turn":1}', "bad_message"),
        ('{"type":"played","turn":NaN,"ms":1}', "bad_json"),
        ('{"type":"played","turn":1,"ms":Infinity}', "bad_json"),
        ('{"type":"played","turn":1,"ms":1' + "0" * 5000 + "}", "bad_json"),
        # Half an emoji, as JSON.stringify writes it: replaced, so the text can be encoded downstream.
        ('{"type":"text","text":"a\\ud800"}', InboundText("a\ufffd")),
        ('{"type":"text","text":"\\udfff b \\ud83d\\ude00"}', InboundText("\ufffd b \U0001f600")),
        ("[" * 100000, "too_deep"),
        ('{"type":"text","text":"hi","x":' + "[" * 5000 + "]" * 5000 + "}", "too_deep"),
        ('{"type":"text","text":"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[{{{{{{{{{{{{{{{{{{{{"}', InboundText("[" * 30 + "{" * 20)),
        ("\ud800", "bad_json"),
    ],
)
def test_parse_text(text: str, expected: object) -> None:
    parsed = parse_text(text)
    if isinstance(expected, str):
        assert isinstance(parsed, ProtocolError) and parsed.code == expected
    else:
        assert parsed == expected


def test_surrogate_text_can_be_encoded() -> None:
    parsed = parse_text(json.dumps({"type": "text", "text": "broken \ud83d emoji"}))
    assert isinstance(parsed, InboundText)
    assert parsed.text.encode("utf-8") == "broken \ufffd emoji".encode()


@pytest.mark.parametrize(
    "text",
    [
        json.dumps({"type": "x" * 1_000_000}),
        json.dumps({"type": "played", "turn": "t" * 500_000, "ms": "m" * 500_000}),
        json.dumps({"type": "hello", "sample_rate": "r" * 1_000_000}),
        json.dumps({"type": "hello", "sample_rate": 16000, "format": "f" * 1_000_000}),
        json.dumps({"type": ["\ud800"] * 10_000}),
    ],
)
def test_error_messages_quote_a_bounded_part_of_the_value(text: str) -> None:
    parsed = parse_text(text)
    assert isinstance(parsed, ProtocolError)
    assert len(parsed.message) < 300, parsed.message
    parsed.message.encode("ascii")  # never a lone surrogate going back out


@pytest.mark.parametrize(
    ("data", "rate", "expected"),
    [
        (b"\x01\x00\x02\x00", 16000, 2),
        (b"\x01\x00\x02", 16000, "odd_audio_length"),
        (b"\x01\x00", None, "hello_required"),
        (b"", 16000, None),
        (b"\x00" * (protocol.MAX_MESSAGE_BYTES + 2), 16000, "message_too_large"),
    ],
)
def test_parse_audio(data: bytes, rate: int | None, expected: object) -> None:
    parsed = parse_audio(data, rate)
    if expected is None:
        assert parsed is None
    elif isinstance(expected, str):
        assert isinstance(parsed, ProtocolError) and parsed.code == expected
    else:
        assert isinstance(parsed, InboundAudio)
        assert parsed.frame.samples == expected and parsed.frame.sample_rate == rate


def test_audio_header_round_trip() -> None:
    message = protocol.encode_audio(7, 300, b"\x01\x02\x03\x04")
    assert message[:8] == (7).to_bytes(4, "little") + (300).to_bytes(4, "little")
    assert decode_audio(message) == (7, 300, b"\x01\x02\x03\x04")


# ----------------------------------------------------------------- over a real TLS server

async def test_refused_without_token(echo) -> None:
    _, server = echo
    for token in (None, "wrong-token"):
        ws = await connect(server, token=token)
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd.code == 4401


async def test_cookie_token_is_accepted(echo) -> None:
    double, server = echo
    ws = await connect(server, token=None, additional_headers={"Cookie": f"convers_token={TOKEN}"})
    await ws.send(hello())
    assert (await recv_json(ws, "ready"))["type"] == "ready"
    await ws.close()


async def test_cross_origin_refused(echo) -> None:
    _, server = echo
    ws = await connect(server, origin="https://evil.example")
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await ws.recv()
    assert closed.value.rcvd.code == 4403


async def test_plain_tls_client_without_trust_fails(echo) -> None:
    _, server = echo
    with pytest.raises(ssl.SSLCertVerificationError):
        await websockets.connect(server.ws_url + f"?token={TOKEN}", ssl=ssl.create_default_context())


async def test_hello_ready_and_audio_arrives_at_rate(echo) -> None:
    double, server = echo
    ws = await connect(server)
    await ws.send(hello(22050))
    ready = await recv_json(ws, "ready")
    assert ready == {"type": "ready", "audio_out": {"sample_rate": 24000, "format": "pcm16"}}
    frame = bytes(range(256)) * 3  # 768 bytes: 384 samples
    await ws.send(frame)
    await ws.send(b"\x00\x00" * 10)
    frames = await double.wait_for(lambda: len(double.events(InboundAudio)) >= 2 and double.events(InboundAudio))
    assert frames[0].frame.pcm == frame
    assert frames[0].frame.sample_rate == 22050
    assert frames[1].frame.samples == 10
    await ws.close()


async def test_text_gets_reply_and_audio_with_turn_header(echo) -> None:
    double, server = echo
    ws = await open_session(server)
    await ws.send(json.dumps({"type": "text", "text": "hello agent"}))
    replies, audio = [], []
    async with asyncio.timeout(5):
        while len(audio) < round(double.reply_audio_s * 1000 / double.frame_ms):
            message = await ws.recv()
            if isinstance(message, bytes):
                audio.append(decode_audio(message))
            elif (data := json.loads(message))["type"] == "reply":
                replies.append(data)
    assert "".join(r["delta"] for r in replies).strip() == "You said: hello agent"
    assert {r["turn"] for r in replies} == {1}
    assert [turn for turn, _, _ in audio] == [1] * len(audio)
    assert [seq for _, seq, _ in audio] == list(range(len(audio)))
    assert len(audio[0][2]) == 24000 * 20 // 1000 * 2
    assert double.events(InboundText) == [InboundText("hello agent")]
    await ws.close()


async def test_played_arrives(echo) -> None:
    double, server = echo
    ws = await open_session(server)
    await ws.send(json.dumps({"type": "played", "turn": 2, "ms": 340}))
    played = await double.wait_for(lambda: double.events(InboundPlayed))
    assert played == [InboundPlayed(2, 340)]
    await ws.close()


async def test_flush_reaches_client(echo) -> None:
    double, server = echo
    ws = await open_session(server)
    await ws.send(json.dumps({"type": "text", "text": "hi"}))
    await recv_json(ws, "reply")
    await ws.send(json.dumps({"type": "text", "text": "/flush"}))
    assert await recv_json(ws, "flush") == {"type": "flush", "turn": 1}
    await ws.close()


async def test_frames_of_a_flushed_turn_are_not_sent(echo) -> None:
    double, server = echo
    ws = await open_session(server)
    await ws.send(json.dumps({"type": "text", "text": "hi"}))
    await recv_json(ws, "reply")
    await ws.send(json.dumps({"type": "text", "text": "/flush"}))
    await recv_json(ws, "flush")
    await ws.send(json.dumps({"type": "text", "text": "/late"}))  # the session sends turn 1 audio again
    await ws.send(json.dumps({"type": "text", "text": "again"}))
    turns_after_flush = []
    async with asyncio.timeout(5.0):
        while True:
            message = await ws.recv()
            if isinstance(message, bytes):
                turns_after_flush.append(decode_audio(message)[0])
            elif json.loads(message).get("type") == "state" and json.loads(message).get("state") == "speaking":
                break
    assert 1 not in turns_after_flush
    # The next turn's audio still flows.
    message = await asyncio.wait_for(ws.recv(), 5.0)
    while not isinstance(message, bytes):
        message = await asyncio.wait_for(ws.recv(), 5.0)
    assert decode_audio(message)[0] == 2
    await ws.close()


MALFORMED: list[tuple[str | bytes, str]] = [
    ("{nope", "bad_json"),
    ('{"type":"sing"}', "unknown_type"),
    ('"just a string"', "bad_message"),
    ('{"type":"hello","sample_rate":4000}', "bad_sample_rate"),
    ('{"type":"hello","sample_rate":96000}', "bad_sample_rate"),
    ('{"type":"played","turn":"x","ms":1}', "bad_message"),
    (b"\x01\x02\x03", "odd_audio_length"),
    ("[" * 100000, "too_deep"),
    ('{"type":"' + "t" * 1000 + '"}', "unknown_type"),
    (b"\x00" * (protocol.MAX_MESSAGE_BYTES + 1024), "message_too_large"),
    ('{"type":"text","text":"' + "x" * (protocol.MAX_MESSAGE_BYTES + 10) + '"}', "message_too_large"),
]


@pytest.mark.parametrize(("message", "code"), MALFORMED, ids=[c for _, c in MALFORMED])
async def test_malformed_message_gets_error_and_session_survives(echo, message: str | bytes, code: str) -> None:
    double, server = echo
    ws = await open_session(server)
    await ws.send(message)
    error = await recv_json(ws, "error")
    assert error["code"] == code and error["message"]
    # The session goes on: audio and text still work on the same connection.
    await ws.send(b"\x01\x00" * 160)
    await ws.send(json.dumps({"type": "text", "text": "still here"}))
    reply = await recv_json(ws, "reply")
    assert reply["turn"] == 1
    await double.wait_for(lambda: double.events(InboundAudio) and double.events(InboundText))
    assert double.events(InboundAudio)[-1].frame.samples == 160
    assert 0 not in double.finished
    await ws.close()


async def test_audio_before_hello_is_an_error_then_hello_works(echo) -> None:
    double, server = echo
    ws = await connect(server)
    await ws.send(b"\x00\x00" * 160)
    error = await recv_json(ws, "error")
    assert error["code"] == "hello_required"
    await ws.send(json.dumps({"type": "text", "text": "typed before hello"}))
    await ws.send(hello(16000))
    await recv_json(ws, "ready")
    await ws.send(b"\x00\x00" * 160)
    await double.wait_for(lambda: double.events(InboundAudio))
    assert double.events(InboundText) == [InboundText("typed before hello")]
    assert len(double.events(InboundAudio)) == 1  # the frame before hello was dropped, not delivered
    await ws.close()


async def test_deep_json_before_hello_is_an_error_then_hello_works(echo) -> None:
    double, server = echo
    ws = await connect(server)
    await ws.send("[" * 100000)
    assert (await recv_json(ws, "error"))["code"] == "too_deep"
    await ws.send(hello(16000))
    await recv_json(ws, "ready")
    await ws.send(json.dumps({"type": "text", "text": "after the attack"}))
    assert (await recv_json(ws, "reply"))["turn"] == 1
    await ws.close()


async def test_a_lone_surrogate_reaches_the_session_replaced(echo) -> None:
    double, server = echo
    ws = await open_session(server)
    await ws.send('{"type":"text","text":"a\\ud800"}')
    transcript = await recv_json(ws, "transcript")
    assert transcript["text"] == "a\ufffd"
    assert double.events(InboundText) == [InboundText("a\ufffd")]
    await ws.close()


async def test_no_hello_closes_connection(tmp_path: Path) -> None:
    async with running_server(EchoSession(), tmp_path / "tls", hello_timeout_s=0.3) as server:
        ws = await connect(server)
        assert (await recv_json(ws, "error"))["code"] == "no_hello"
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd.code == 4400


async def test_over_the_protocol_limit_closes_only_that_connection(echo) -> None:
    double, server = echo
    other = await open_session(server)
    ws = await open_session(server)
    await ws.send(b"\x00" * (5 * 1024 * 1024))
    with pytest.raises(websockets.ConnectionClosed):
        await recv_json(ws, "never")
    await other.send(json.dumps({"type": "text", "text": "unaffected"}))
    assert (await recv_json(other, "reply"))["turn"] == 1
    await other.close()


async def test_two_sessions_are_independent(echo) -> None:
    double, server = echo
    first = await open_session(server)
    second = await open_session(server)
    await first.send(json.dumps({"type": "text", "text": "from one"}))
    await second.send(json.dumps({"type": "text", "text": "from two"}))
    assert (await recv_json(first, "transcript"))["text"] == "from one"
    assert (await recv_json(second, "transcript"))["text"] == "from two"
    await first.close()
    await double.wait_for(lambda: 0 in double.finished)
    # The second conversation carries on, with its own turn numbering.
    await second.send(json.dumps({"type": "text", "text": "again"}))
    assert (await recv_json(second, "transcript"))["text"] == "again"
    reply = await recv_json(second, "reply")
    assert reply["turn"] == 2
    assert 1 not in double.finished
    texts = {(s.connection, s.event.text) for s in double.seen if isinstance(s.event, InboundText)}
    assert texts == {(0, "from one"), (1, "from two"), (1, "again")}
    await second.close()
    await double.wait_for(lambda: 1 in double.finished)


async def test_session_crash_is_reported_and_server_lives_on(tmp_path: Path) -> None:
    calls = []

    async def crashing(transport) -> None:
        calls.append(transport)
        if len(calls) == 1:
            raise RuntimeError("engine exploded")
        async for _ in transport.inbound():
            await transport.send_event({"type": "state", "state": "thinking"})

    async with running_server(crashing, tmp_path / "tls") as server:
        ws = await open_session(server)
        error = await recv_json(ws, "error")
        assert error["code"] == "session_failed" and "engine exploded" in error["message"]
        ws2 = await open_session(server)
        await ws2.send(json.dumps({"type": "text", "text": "hi"}))
        assert (await recv_json(ws2, "state"))["state"] == "thinking"
        await ws2.close()


async def test_notices_follow_ready(tmp_path: Path) -> None:
    notice = {"code": "no_llm", "message": "no language model is reachable: start llama-server"}
    async with running_server(EchoSession(), tmp_path / "tls", notices=[notice]) as server:
        ws = await connect(server)
        await ws.send(hello())
        assert (await recv_json(ws))["type"] == "ready"
        assert await recv_json(ws, "error") == {"type": "error", **notice}
        await ws.close()


async def test_notices_are_asked_anew_on_every_connection(tmp_path: Path) -> None:
    """An LLM server started after `convers serve` clears the page's notice on the next connect."""
    import asyncio
    import socket

    from convers.cli.serve import llm_notices
    from convers.config import load_settings
    from tests.llm_server import ScriptedLlmServer

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = load_settings(environ={}, cli={"data_dir": str(tmp_path / "data"), "llm.base_url": f"http://127.0.0.1:{port}"})

    async def notices() -> list[dict[str, str]]:
        return await asyncio.to_thread(llm_notices, settings, "openai")

    async with running_server(EchoSession(), tmp_path / "tls", notices=notices) as server:
        ws = await connect(server)
        await ws.send(hello())
        assert (await recv_json(ws))["type"] == "ready"
        error = await recv_json(ws, "error")
        assert error["code"] == "no_llm" and f"127.0.0.1:{port}" in error["message"]
        await ws.close()
        with ScriptedLlmServer(port=port).running_in_thread():
            ws = await connect(server)
            await ws.send(hello())
            assert (await recv_json(ws))["type"] == "ready"
            await ws.send(json.dumps({"type": "text", "text": "hi"}))
            # The first message after ready is the session's own, not a stale notice.
            following = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert following["type"] != "error", following
            await ws.close()


async def test_the_server_warms_up_before_it_accepts_a_connection(tmp_path: Path) -> None:
    """The first session must listen at once: a warm-up on the first connection made it deaf for seconds."""
    import asyncio

    order: list[str] = []

    async def warm_up() -> None:
        await asyncio.sleep(0.2)
        order.append("warmed")

    class Recording(EchoSession):
        async def __call__(self, transport: Any) -> None:
            order.append("session")
            await super().__call__(transport)

    async with running_server(Recording(), tmp_path / "tls", on_start=warm_up) as server:
        assert order == ["warmed"]
        ws = await open_session(server)
        await ws.send(json.dumps({"type": "text", "text": "hi"}))
        assert (await recv_json(ws, "reply"))["type"] == "reply"
        await ws.close()
    assert order == ["warmed", "session"]
