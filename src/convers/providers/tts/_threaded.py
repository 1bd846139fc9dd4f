"""Runs a blocking synthesiser's iterator in a worker thread and yields its items on the event loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TypeVar

T = TypeVar("T")
_DONE = object()


async def iterate_in_thread(make_items: Callable[[threading.Event], Iterator[T]]) -> AsyncIterator[T]:
    """Yields what `make_items(stop)` produces in a worker thread, as soon as each item is ready.

    Closing the generator sets `stop`; the worker checks it between items, so an abandoned reply
    costs at most the item being synthesised.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[object] = asyncio.Queue()
    stop = threading.Event()

    def work() -> None:
        try:
            for item in make_items(stop):
                if stop.is_set():
                    break
                loop.call_soon_threadsafe(queue.put_nowait, item)
        except BaseException as error:  # noqa: BLE001 - handed to the consumer, which re-raises it
            loop.call_soon_threadsafe(queue.put_nowait, error)
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, _DONE)

    worker = asyncio.ensure_future(asyncio.to_thread(work))
    try:
        while True:
            item = await queue.get()
            if item is _DONE:
                break
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        if not worker.done():
            # Do not wait for the thread: it finishes its current item and exits on `stop`.
            worker.add_done_callback(lambda f: f.exception() if not f.cancelled() else None)
