"""A fake SearXNG on 127.0.0.1: answers `GET /search?q=...&format=json` with scripted results."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import parse_qs, urlsplit

from convers.bench.openai_wire import HttpRequest, WireServer, send_error, send_json


class FakeSearxng(WireServer):
    """Serves `results` for every query; `status` other than 200 fails; `delay_s` makes it slow."""

    label = "fake SearXNG"

    def __init__(self, results: list[dict[str, Any]] | None = None, *, status: int = 200, delay_s: float = 0.0) -> None:
        super().__init__(host="127.0.0.1")
        self.results = results or []
        self.status = status
        self.delay_s = delay_s
        self.queries: list[dict[str, list[str]]] = []

    async def answer(self, request: HttpRequest, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        if request.route != "/search":
            await send_error(writer, 404, f"no route {request.path}")
            return True
        self.queries.append(parse_qs(urlsplit(request.path).query))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.status != 200:
            await send_error(writer, self.status, "scripted failure")
            return True
        await send_json(writer, 200, {"query": "q", "results": self.results})
        return True
