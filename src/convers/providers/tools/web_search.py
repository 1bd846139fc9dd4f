"""Web search through a SearXNG instance the user runs: the only non-local address convers contacts.

Off unless `tools.searxng_url` is set. SearXNG's JSON API (`GET /search?q=...&format=json`) must
be enabled in its settings.yml (`search: formats: [html, json]`). Results are cut to a few short
snippets: they are data for the model to answer from, never text it should obey.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import httpx

from convers.contracts.provider import Availability
from convers.providers.tools.unavailable import ToolUnavailable

# One result's snippet is cut here: a voice answer needs a sentence or two, not a page.
MAX_SNIPPET_CHARS = 300


class WebSearchTool:
    """Asks a SearXNG instance and returns the top results as title, snippet and site."""

    name = "web_search"
    description = (
        "Search the web for current facts (news, opening hours, weather, prices, anything after your "
        "training). Returns a few short results; answer from them in your own words."
    )
    parameters: dict[str, Any] = {
        "type": "object",
        "properties": {"query": {"type": "string", "description": "the search query"}},
        "required": ["query"],
        "additionalProperties": False,
    }

    def __init__(self, url: str, *, results: int = 3, timeout_s: float = 3.5, language: str = "en") -> None:
        self.url = _checked_url(url)
        self.results = results
        self.timeout_s = timeout_s
        self.language = language

    @classmethod
    def from_settings(cls, settings: Any, **parts: Any) -> WebSearchTool:
        tools = settings.tools
        if not tools.searxng_url:
            raise ToolUnavailable("web_search needs tools.searxng_url (the address of a SearXNG you run)")
        return cls(tools.searxng_url, results=tools.search_results, timeout_s=tools.search_timeout_s, language=settings.stt.language)

    @classmethod
    def availability(cls, settings: Any) -> Availability:
        if not settings.tools.searxng_url:
            return Availability(False, "tools.searxng_url is unset")
        return Availability(True, f"SearXNG at {settings.tools.searxng_url}")

    async def call(self, query: str) -> str:
        query = " ".join(query.split())
        if not query:
            raise ValueError("web_search needs a query")
        endpoint = f"{self.url}/search"
        params = {"q": query, "format": "json", "language": self.language, "safesearch": "1"}
        try:
            async with httpx.AsyncClient(timeout=self.timeout_s, follow_redirects=False) as client:
                response = await client.get(endpoint, params=params)
        except httpx.TimeoutException:
            raise RuntimeError(f"SearXNG at {self.url} did not answer within {self.timeout_s} s") from None
        except httpx.HTTPError as error:
            raise RuntimeError(f"SearXNG at {self.url} cannot be reached: {type(error).__name__}: {error}") from None
        if response.status_code == 403:
            raise RuntimeError(
                f"SearXNG at {self.url} refused format=json (HTTP 403): add json to search.formats in its settings.yml"
            )
        if response.status_code != 200:
            raise RuntimeError(f"SearXNG at {self.url} answered HTTP {response.status_code}")
        try:
            results = response.json().get("results", [])
        except (ValueError, AttributeError):
            raise RuntimeError(f"SearXNG at {self.url} answered with something that is not its JSON") from None
        return render_results(results if isinstance(results, list) else [], self.results) or f"No results for {query!r}."


def render_results(results: list[Any], limit: int) -> str:
    """Up to `limit` results as plain lines: title, snippet (cut), site."""
    lines = []
    for result in results:
        if not isinstance(result, dict):
            continue
        title = " ".join(str(result.get("title") or "").split())
        snippet = " ".join(str(result.get("content") or "").split())
        if len(snippet) > MAX_SNIPPET_CHARS:
            snippet = snippet[:MAX_SNIPPET_CHARS].rsplit(" ", 1)[0] + "..."
        site = urlsplit(str(result.get("url") or "")).hostname or ""
        if not (title or snippet):
            continue
        lines.append(f"{title}: {snippet}" + (f" ({site})" if site else ""))
        if len(lines) >= limit:
            break
    return "\n".join(lines)


def _checked_url(url: str) -> str:
    root = url.strip().rstrip("/")
    parts = urlsplit(root)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ToolUnavailable(f"tools.searxng_url {url!r} is not an http(s) URL; for example http://127.0.0.1:8888")
    return root
