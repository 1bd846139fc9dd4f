"""The per-connection send queue: bounded, never blocking, and a flush empties the flushed turn."""

from __future__ import annotations

import asyncio

from convers.transports.browser.outbound import SendQueue


async def test_audio_past_the_bound_is_dropped_not_waited_for() -> None:
    queue = SendQueue(max_audio_bytes=1000, max_events=10)
    accepted = [queue.put_audio(1, b"\x00" * 300) for _ in range(5)]
    assert accepted == [True, True, True, False, False]
    assert queue.dropped_audio_frames == 2
    assert queue.put_event('{"type":"state"}')  # control events still fit
    await queue.get()
    assert queue.put_audio(1, b"\x00" * 300)  # room again after a send


async def test_events_bounded_by_count() -> None:
    queue = SendQueue(max_audio_bytes=1000, max_events=2)
    assert [queue.put_event("a"), queue.put_event("b"), queue.put_event("c")] == [True, True, False]


async def test_flush_drops_queued_frames_of_that_turn_and_older() -> None:
    queue = SendQueue()
    queue.put_audio(1, b"a1")
    queue.put_event("e1")
    queue.put_audio(2, b"a2")
    queue.put_audio(3, b"a3")
    assert queue.drop_turns_up_to(2) == 2
    assert [(await queue.get()).data for _ in range(2)] == ["e1", b"a3"]
    assert queue.audio_bytes == 0


async def test_get_waits_for_the_next_message() -> None:
    queue = SendQueue()
    waiter = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    assert not waiter.done()
    queue.put_event("x")
    assert (await asyncio.wait_for(waiter, 1)).data == "x"


async def test_events_bounded_by_bytes_as_well() -> None:
    queue = SendQueue(max_audio_bytes=1000, max_events=100, max_event_bytes=1000)
    assert [queue.put_event("x" * 400) for _ in range(3)] == [True, True, False]
    assert queue.event_bytes == 800
    await queue.get()
    assert queue.event_bytes == 400
    assert queue.put_event("y" * 600)
    assert not queue.put_event("z")


async def test_a_client_that_stops_reading_costs_at_most_the_byte_bound() -> None:
    """300 messages with a 1 MB `type`, unread: the queued errors stay within the byte bound."""
    from convers.transports.browser.outbound import MAX_QUEUED_EVENT_BYTES
    from convers.transports.browser.protocol import parse_text

    queue = SendQueue()
    import json

    for _ in range(300):
        error = parse_text(json.dumps({"type": "t" * 1_000_000}))
        queue.put_event(json.dumps(error.event()))  # type: ignore[union-attr]
    assert len(queue) == 300
    assert queue.event_bytes < 300 * 400 < MAX_QUEUED_EVENT_BYTES
