"""The built-in tools: web search through a (fake, local) SearXNG, remember, recall; and which load."""

from __future__ import annotations

import json
import socket

import pytest

from convers import registry
from convers.app.wiring import build_tools
from convers.config import Settings
from convers.contracts.tool import Tool
from convers.engine.reply.tool_calls import Toolbox
from convers.memory.profile import ProfileFile
from convers.providers.tools.recall import RecallTool
from convers.providers.tools.remember import RememberTool
from convers.providers.tools.unavailable import ToolUnavailable
from convers.providers.tools.web_search import MAX_SNIPPET_CHARS, WebSearchTool
from tests.doubles import ListMemory, hit
from tests.searxng_server import FakeSearxng
from tests.tool_doubles import call

RESULTS = [
    {"title": "Bakery opens", "content": "The bakery on Elm Street opens at 7.", "url": "https://news.example/bakery"},
    {"title": "Long", "content": "word " * 200, "url": "https://long.example/x"},
    {"title": "Third", "content": "third result", "url": "https://third.example/"},
    {"title": "Fourth", "content": "never shown", "url": "https://fourth.example/"},
]


def refused_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


async def test_web_search_asks_searxng_for_json_and_bounds_the_results() -> None:
    async with FakeSearxng(RESULTS) as server:
        tool = WebSearchTool(server.base_url + "/", results=3)
        text = await tool.call(query="  bakery   Elm street ")
    assert server.queries[0]["q"] == ["bakery Elm street"] and server.queries[0]["format"] == ["json"]
    lines = text.splitlines()
    assert lines[0] == "Bakery opens: The bakery on Elm Street opens at 7. (news.example)"
    assert len(lines) == 3 and "never shown" not in text
    assert len(lines[1]) < MAX_SNIPPET_CHARS + 40 and lines[1].endswith("... (long.example)")
    assert isinstance(tool, Tool)


async def test_web_search_failures_name_the_server_and_the_fix() -> None:
    async with FakeSearxng(status=403) as server:
        with pytest.raises(RuntimeError, match="add json to search.formats"):
            await WebSearchTool(server.base_url).call(query="x")
    async with FakeSearxng(status=500) as server:
        with pytest.raises(RuntimeError, match="HTTP 500"):
            await WebSearchTool(server.base_url).call(query="x")
    with pytest.raises(RuntimeError, match="cannot be reached"):
        await WebSearchTool(refused_url()).call(query="x")
    async with FakeSearxng(RESULTS, delay_s=5.0) as server:
        with pytest.raises(RuntimeError, match="did not answer within 0.05 s"):
            await WebSearchTool(server.base_url, timeout_s=0.05).call(query="x")
    async with FakeSearxng([]) as server:
        assert await WebSearchTool(server.base_url).call(query="nothing") == "No results for 'nothing'."
    with pytest.raises(ToolUnavailable, match="not an http"):
        WebSearchTool("searx.local")


async def test_an_unreachable_searxng_is_an_error_result_for_the_model() -> None:
    box = Toolbox([WebSearchTool(refused_url())])
    outcome = await box.run(call("web_search", '{"query": "news"}'))
    assert not outcome.ok and "cannot be reached" in outcome.text


async def test_remember_stores_notes_and_people_in_the_profile(tmp_path) -> None:
    profile = ProfileFile(tmp_path / "profile.json")
    tool = RememberTool(profile)
    assert await tool.call(fact="Likes  green tea") == "Stored in the profile: Likes green tea"
    assert await tool.call(fact="Likes green tea") == "Stored in the profile: Likes green tea"  # no duplicate
    assert await tool.call(fact="starts at the bakery in May", person="Maya") == "Stored about Maya: starts at the bakery in May"
    stored = profile.load()
    assert stored.notes == ["Likes green tea"]
    assert [(p.name, p.note) for p in stored.people] == [("Maya", "starts at the bakery in May")]
    with pytest.raises(ValueError, match="at most 300"):
        await tool.call(fact="x " * 200)


async def test_remember_refuses_to_overwrite_a_broken_profile(tmp_path) -> None:
    path = tmp_path / "profile.json"
    path.write_text("{not json", encoding="utf-8")
    outcome = await Toolbox([RememberTool(ProfileFile(path))]).run(call("remember", '{"fact": "x"}'))
    assert not outcome.ok and "not valid JSON" in outcome.text
    assert path.read_text(encoding="utf-8") == "{not json"  # loses no data


async def test_recall_searches_memory_and_says_who_said_it() -> None:
    memory = ListMemory(hits=[hit("Maya got a job at the bakery", speaker="Sam")])
    text = await RecallTool(memory).call(query="Maya's job")
    assert text.endswith("they said: Maya got a job at the bakery")
    assert await RecallTool(ListMemory()).call(query="boats") == "Nothing found in memory about 'boats'."
    with pytest.raises(ToolUnavailable, match="memory"):
        RecallTool.from_settings(Settings(), memory=None)


def test_default_tools_are_clock_and_recall_and_web_search_only_with_a_url(tmp_path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert settings.tools.names() == ["clock", "recall"]
    assert sorted(build_tools(settings, ListMemory()).tools) == ["clock", "recall"]
    assert sorted(build_tools(settings, None).tools) == ["clock"]  # no memory: no recall, and no crash
    with_url = Settings(data_dir=tmp_path, tools={"searxng_url": "http://127.0.0.1:8888"})
    assert sorted(build_tools(with_url, None).tools) == ["clock", "web_search"]
    chosen = Settings(data_dir=tmp_path, tools={"enabled": ["remember", "clock", "nonexistent"]})
    assert sorted(build_tools(chosen, None).tools) == ["clock", "remember"]


def test_every_built_in_tool_is_registered_with_a_schema() -> None:
    names = set(registry.installed("tools"))
    assert {"clock", "recall", "remember", "web_search"} <= names
    for name in ("clock", "recall", "remember", "web_search"):
        factory = registry.load("tools", name)
        assert factory.parameters["type"] == "object" and factory.description
        json.dumps(factory.parameters)
