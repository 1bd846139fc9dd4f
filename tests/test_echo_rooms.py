"""A page's learned echo canceller kept across its reconnections: the hello's `echo_room`, EchoRooms,
and the server handing a canceller back to the page it learnt (`EchoCancelling.resume_stream` is
tested in test_echo_cancelling.py, `DoubleTalk.new_stream` in test_double_talk.py)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import websockets

from convers.contracts.audio import AudioFrame
from convers.contracts.transport import InboundAudio
from convers.echo_cancelling import EchoCancelling
from convers.transports.browser.echo_rooms import EchoRooms
from convers.transports.browser.protocol import Hello, parse_text
from tests.browser_helpers import TOKEN, EchoSession, RunningServer, running_server
from tests.test_echo_cancelling import CountingCanceller, interleaved, pcm, speech_like, values

RATE = 16000
ROOM = "tab-0123456789abcdef"
OTHER_ROOM = "tab-fedcba9876543210"


# ------------------------------------------------------------------ the hello


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"aec": False, "echo_room": ROOM}, ROOM),
        ({"aec": False, "echo_room": "a" * 16}, "a" * 16),
        ({"aec": False, "echo_room": "Az09_-" * 10 + "abcd"}, "Az09_-" * 10 + "abcd"),  # 64
        ({"aec": False}, None),
        # Only a page whose echo the server cancels has a canceller to keep.
        ({"aec": True, "echo_room": ROOM}, None),
        ({"aec": False, "echo_room": "a" * 15}, "bad_hello"),
        ({"aec": False, "echo_room": "a" * 65}, "bad_hello"),
        ({"aec": False, "echo_room": ROOM + "\n"}, "bad_hello"),
        ({"aec": False, "echo_room": "tab 0123456789abcdef"}, "bad_hello"),
        ({"aec": False, "echo_room": "tab.0123456789abcdef"}, "bad_hello"),
        ({"aec": False, "echo_room": "tab-0123456789abcdé"}, "bad_hello"),
        ({"aec": False, "echo_room": 1234567890123456789}, "bad_hello"),
        ({"aec": False, "echo_room": None}, "bad_hello"),
        ({"aec": False, "echo_room": [ROOM]}, "bad_hello"),
        ({"aec": True, "echo_room": "short"}, "bad_hello"),  # malformed is refused whatever `aec` says
    ],
)
def test_hello_names_the_pages_echo_room(fields: dict[str, Any], expected: str | None) -> None:
    parsed = parse_text(json.dumps({"type": "hello", "sample_rate": RATE, **fields}))
    if expected == "bad_hello":
        assert getattr(parsed, "code", None) == "bad_hello"
        assert "echo_room" in getattr(parsed, "message", "")
    else:
        assert isinstance(parsed, Hello) and parsed.echo_room == expected


# ------------------------------------------------------------------ EchoRooms


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def learnt() -> EchoCancelling:
    echo = EchoCancelling(CountingCanceller(), learning_s=0.1)
    echo.heard_s = 1.0
    return echo


def test_a_kept_canceller_is_taken_once() -> None:
    rooms = EchoRooms()
    echo = learnt()
    rooms.keep(ROOM, echo)
    assert rooms.take(OTHER_ROOM) is None
    assert rooms.take(ROOM) is echo
    assert rooms.take(ROOM) is None  # taken: a second connection never gets the same one
    assert len(rooms) == 0


def test_keeping_drops_the_streams_audio() -> None:
    canceller = CountingCanceller()
    echo = EchoCancelling(canceller, learning_s=0.1)
    echo.played(AudioFrame(pcm(speech_like(0.2)), RATE))  # never rendered: no microphone frame followed
    EchoRooms().keep(ROOM, echo)
    echo.cleaned(AudioFrame(b"\x10\x00" * 160, RATE))
    assert canceller.rendered == []


def test_a_failed_canceller_is_not_kept() -> None:
    rooms = EchoRooms()
    echo = EchoCancelling(CountingCanceller(fail=True))
    echo.cleaned(AudioFrame(b"\x10\x00" * 160, RATE))
    assert echo.failed
    rooms.keep(ROOM, echo)
    assert rooms.take(ROOM) is None


def test_a_kept_canceller_expires() -> None:
    clock = Clock()
    rooms = EchoRooms(keep_s=600.0, clock=clock)
    rooms.keep(ROOM, first := learnt())
    clock.now += 300.0
    rooms.keep(OTHER_ROOM, learnt())
    clock.now += 299.0
    assert rooms.take(ROOM) is first  # 599 s after it was kept
    rooms.keep(ROOM, first)  # kept again: its time starts anew
    clock.now += 301.0  # OTHER_ROOM's 600 s are over
    assert rooms.take(OTHER_ROOM) is None
    clock.now += 298.0
    assert len(rooms) == 1
    clock.now += 1.0
    assert rooms.take(ROOM) is None and len(rooms) == 0


def test_at_most_max_rooms_are_kept_the_least_recently_kept_go_first() -> None:
    clock = Clock()
    rooms = EchoRooms(max_rooms=3, clock=clock)
    kept = {f"room-{n:016d}": learnt() for n in range(4)}
    for room, echo in kept.items():
        clock.now += 1.0
        rooms.keep(room, echo)
    assert len(rooms) == 3
    names = list(kept)
    assert rooms.take(names[0]) is None
    rooms.keep(names[1], kept[names[1]])  # kept again: now the most recent
    rooms.keep(names[0], kept[names[0]])
    assert rooms.take(names[2]) is None
    assert [rooms.take(name) for name in (names[1], names[3], names[0])] == [kept[names[1]], kept[names[3]], kept[names[0]]]


def test_keeping_a_room_again_replaces_its_canceller() -> None:
    rooms = EchoRooms()
    rooms.keep(ROOM, learnt())
    rooms.keep(ROOM, newer := learnt())
    assert len(rooms) == 1 and rooms.take(ROOM) is newer


# ------------------------------------------------------------------ through the server


async def open_page(server: RunningServer, **fields: Any) -> tuple[websockets.ClientConnection, dict[str, Any]]:
    ws = await websockets.connect(server.ws_url + f"?token={TOKEN}", ssl=server.ssl_context, max_queue=None)
    await ws.send(json.dumps({"type": "hello", "sample_rate": RATE, "aec": False, "echo_reference": True, **fields}))
    async with asyncio.timeout(5):
        while True:
            message = await ws.recv()
            if isinstance(message, str) and json.loads(message)["type"] == "ready":
                return ws, json.loads(message)


async def ready_again(ws: websockets.ClientConnection, **fields: Any) -> dict[str, Any]:
    await ws.send(json.dumps({"type": "hello", "sample_rate": RATE, **fields}))
    async with asyncio.timeout(5):
        while True:
            message = await ws.recv()
            if isinstance(message, str) and json.loads(message)["type"] == "ready":
                return dict(json.loads(message))


def samples_heard(double: EchoSession, connection: int) -> int:
    return sum(event.frame.samples for event in double.events(InboundAudio, connection))


async def test_a_page_that_reconnects_gets_its_learnt_canceller_back(tmp_path: Path) -> None:
    double = EchoSession()
    async with running_server(double, tmp_path / "tls", echo_canceller=CountingCanceller) as server:
        first, ready = await open_page(server, echo_room=ROOM)
        assert ready["aec"] == "server" and ready["echo_room"] == "new"
        transport = await double.wait_for(lambda: double.transports and double.transports[0])
        echo = transport.echo
        assert echo is not None and echo.learning
        # The agent speaks for 6.5 s (every block audible), then the microphone leaves 100 samples
        # short of a canceller block when the connection drops.
        tone = 0.3 * np.sin(2 * np.pi * 220 * np.arange(round(6.5 * RATE)) / RATE)
        for start in range(0, len(tone), 320):
            await first.send(interleaved(pcm(np.zeros(320)), pcm(tone[start : start + 320])))
        await first.send(interleaved(b"\xb8\x0b" * 100, bytes(200)))  # 3000
        await double.wait_for(lambda: samples_heard(double, 0) >= len(tone))
        assert not echo.learning
        await first.close()
        await double.wait_for(lambda: 0 in double.finished)

        again, ready = await open_page(server, echo_room=ROOM)
        assert ready["aec"] == "server" and ready["echo_room"] == "kept"
        transport = await double.wait_for(lambda: len(double.transports) > 1 and double.transports[1])
        assert transport.echo is echo and not echo.learning
        # 60 new samples: with the old 100 they would make a block; the block that comes is all new.
        await again.send(interleaved(b"\xe8\x03" * 60, bytes(120)))  # 1000
        await again.send(interleaved(b"\xe8\x03" * 100, bytes(200)))
        [heard] = await double.wait_for(lambda: double.events(InboundAudio, 1))
        # As it is: after the reconnection the agent is silent, and no echo is left to remove.
        assert heard.frame.samples == 160 and values(heard.frame) == [1000]

        # Another page, and a second live connection of the same page: each its own new canceller.
        other, ready = await open_page(server, echo_room=OTHER_ROOM)
        assert ready["echo_room"] == "new"
        twin, ready = await open_page(server, echo_room=ROOM)
        assert ready["echo_room"] == "new"
        unnamed, ready = await open_page(server)
        assert ready["aec"] == "server" and "echo_room" not in ready
        transports = await double.wait_for(lambda: len(double.transports) == 5 and double.transports)
        echoes = [t.echo for t in transports[1:]]
        assert all(e is not None for e in echoes) and len({id(e) for e in echoes}) == 4

        # A page that turns the server's cancellation off and on again keeps its canceller.
        assert "aec" not in await ready_again(again, aec=True)
        assert transports[1].echo is None
        assert (await ready_again(again, aec=False, echo_reference=True, echo_room=ROOM))["echo_room"] == "kept"
        assert transports[1].echo is echo
        for ws in (again, other, twin, unnamed):
            await ws.close()


async def test_a_page_whose_canceller_failed_gets_a_new_one(tmp_path: Path) -> None:
    double = EchoSession()
    async with running_server(double, tmp_path / "tls", echo_canceller=lambda: CountingCanceller(fail=True)) as server:
        first, _ = await open_page(server, echo_room=ROOM)
        await first.send(interleaved(pcm(np.zeros(320)), pcm(np.zeros(320))))
        await double.wait_for(lambda: double.events(InboundAudio, 0))
        failed = double.transports[0].echo
        assert failed is not None and failed.failed
        await first.close()
        await double.wait_for(lambda: 0 in double.finished)
        again, ready = await open_page(server, echo_room=ROOM)
        assert ready["echo_room"] == "new"
        transport = await double.wait_for(lambda: len(double.transports) > 1 and double.transports[1])
        assert transport.echo is not failed and not transport.echo.failed
        await again.close()
