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
