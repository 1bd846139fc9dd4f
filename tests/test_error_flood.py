"""A flood of bad messages: answered at a bounded rate with a count, never closed as a stalled reader."""

from __future__ import annotations

import asyncio
import json
from collections import deque
from pathlib import Path

import pytest
import websockets
from starlette.websockets import WebSocketState

from convers.contracts.transport import InboundText
from convers.transports.browser.error_replies import ErrorReplies
from convers.transports.browser.protocol import ProtocolError
from convers.transports.browser.websocket_transport import WebSocketTransport
from tests.browser_helpers import TOKEN, EchoSession, hello, running_server
from tests.test_protocol import open_session, recv_json

BAD = ProtocolError("bad_json", "message is not JSON")


def test_the_first_errors_are_answered_then_held_back_and_counted() -> None:
    replies = ErrorReplies(burst=3, per_s=2.0)
    answered = [replies.offer(BAD, now=0.0) for _ in range(10)]
    assert [len(a) for a in answered] == [1, 1, 1, 0, 0, 0, 0, 0, 0, 0]
    assert answered[0] == [BAD.event()]
    assert replies.held_back == 7
    assert replies.summary(now=0.1) is None  # the rate allows one more only at 0.5 s
    assert replies.wait_s() > 0
    summary = replies.summary(now=0.5)
    assert summary is not None and summary["code"] == "too_many_errors" and summary["count"] == 7
    assert "7 more bad messages" in summary["message"] and "bad_json" in summary["message"]
    assert replies.held_back == 0 and replies.summary(now=10.0) is None


def test_a_bad_message_after_a_held_back_run_brings_the_count_with_it() -> None:
    replies = ErrorReplies(burst=1, per_s=1.0)
    replies.offer(BAD, now=0.0)
    assert replies.offer(BAD, now=0.1) == []
    [event] = replies.offer(ProtocolError("unknown_type", "x"), now=2.0)
    assert event["code"] == "too_many_errors" and event["count"] == 2 and "unknown_type" in event["message"]


class BufferedSocket:
    """A WebSocket whose messages have all arrived: receive() answers at once, without suspending."""

    application_state = WebSocketState.CONNECTED

    def __init__(self, messages: list[str]) -> None:
        self.incoming = deque(messages)
        self.sent: list[str] = []
        self.closed_with: tuple[int, str] | None = None
        self.leave = asyncio.Event()

    async def receive(self) -> dict:
        if self.incoming:
            return {"type": "websocket.receive", "text": self.incoming.popleft()}
        await self.leave.wait()
        return {"type": "websocket.disconnect", "code": 1000}

    async def send_text(self, text: str) -> None:
        self.sent.append(text)

    async def send_bytes(self, data: bytes) -> None:
        pass

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.closed_with = (code, reason)


def accounted(sent: list[str]) -> int:
    errors = [e for e in map(json.loads, sent) if e["type"] == "error"]
    return sum(e.get("count", 1) for e in errors)


async def test_ten_thousand_bad_messages_at_once_do_not_close_a_client_that_reads() -> None:
    hello = json.dumps({"type": "hello", "sample_rate": 16000})
    socket = BufferedSocket([hello, *["not json"] * 10_000, json.dumps({"type": "text", "text": "still there?"})])
    transport = WebSocketTransport(socket, 24000)  # type: ignore[arg-type]
    transport.start()
    assert await transport.handshake(5)
    inbound = transport.inbound()
    async with asyncio.timeout(20):
        event = await anext(inbound)
        assert event == InboundText("still there?")
        # Every bad message is accounted for: answered on its own, or counted in a too_many_errors.
        while accounted(socket.sent) < 10_000:
            await asyncio.sleep(0.01)
    assert socket.closed_with is None and not transport.closed
    assert transport.protocol_errors == 10_000
    answered = [e for e in map(json.loads, socket.sent) if e["type"] == "error"]
    assert len(answered) <= 40  # a bounded number of answers, not 10,000
    assert accounted(socket.sent) == 10_000
    socket.leave.set()
    await transport.close()


async def test_a_flood_over_the_real_server_is_answered_and_the_session_goes_on(tmp_path: Path) -> None:
    double = EchoSession(reply_audio_s=0.02)
    async with running_server(double, tmp_path / "tls") as server:
        ws = await open_session(server)
        for _ in range(10_000):
            await ws.send('{"type":"dance"}')
        await ws.send(json.dumps({"type": "text", "text": "after the flood"}))
        async with asyncio.timeout(20):
            while (await recv_json(ws, "transcript", timeout_s=20))["text"] != "after the flood":
                pass
        await ws.close()


async def test_a_flooding_client_that_never_reads_is_closed_4408(tmp_path: Path) -> None:
    # It stops answering the server's pings as well; the keepalive closes it with the code that
    # docs/protocol.md gives a client that stopped reading (uvicorn's own would be 1011).
    async with running_server(EchoSession(reply_audio_s=0.02), tmp_path / "tls", ping_s=0.5) as server:
        url = f"{server.ws_url}?token={TOKEN}"
        # No keepalive of its own, and a small receive queue: it really stops reading.
        async with websockets.connect(url, ssl=server.ssl_context, max_queue=4, ping_interval=None) as ws:
            await ws.send(hello())
            for _ in range(10_000):
                await ws.send('{"type":"dance"}')
            await asyncio.sleep(2.0)  # about two missed pongs
            with pytest.raises(websockets.ConnectionClosed) as closed:
                async with asyncio.timeout(10):
                    while True:
                        await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4408, closed.value
