"""Tool calls through the OpenAI-compatible provider, against a scripted streaming server on 127.0.0.1.

The deltas are shaped like llama-server's (--jinja): id and name first, arguments in pieces, each
piece naming its call by index; and like Ollama's: one whole call per delta.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from convers.contracts.llm import ChatMessage, LlmError, ToolCall
from convers.engine.reply.prompt import PromptBuilder
from convers.engine.reply.tool_calls import Toolbox
from convers.engine.session import Session, SessionOptions, SessionParts
from convers.events import EventLog
from convers.providers.llm.openai_compatible import OpenAICompatibleLlm
from tests.doubles import RecordingTransport
from tests.llm_server import Reply, serve_llm
from tests.tool_doubles import EchoTool

HELLO = [ChatMessage("user", "echo two words")]
GUARD_S = 10.0
SCHEMA = Toolbox([EchoTool()]).schemas()


def piece(index: int, *, id: str | None = None, name: str | None = None, arguments: str | None = None) -> dict:
    function = {k: v for k, v in (("name", name), ("arguments", arguments)) if v is not None}
    call = {"index": index, **({"id": id, "type": "function"} if id else {}), "function": function}
    return {"tool_calls": [call]}


SPLIT_TWO_CALLS = [
    "Sure.",
    piece(0, id="call_a", name="echo", arguments=""),
    piece(0, arguments='{"te'),
    piece(1, id="call_b", name="echo", arguments='{"text"'),
    piece(0, arguments='xt": "one"}'),
    piece(1, arguments=': "two"}'),
]


async def stream_all(llm: OpenAICompatibleLlm, **kwargs) -> list:
    return [item async for item in llm.stream(HELLO, **kwargs)]


async def test_split_deltas_of_two_calls_are_joined_by_index() -> None:
    async with serve_llm(Reply(SPLIT_TWO_CALLS, finish_reason="tool_calls")) as server:
        llm = OpenAICompatibleLlm(base_url=server.base_url, model="m")
        items = await asyncio.wait_for(stream_all(llm, tools=SCHEMA), GUARD_S)
    assert items == [
        "Sure.",
        ToolCall("call_a", "echo", '{"text": "one"}'),
        ToolCall("call_b", "echo", '{"text": "two"}'),
    ]
    body = server.chat_requests()[0].body
    assert body["tools"] == SCHEMA


async def test_a_whole_call_in_one_chunk_without_an_index() -> None:
    whole = {"tool_calls": [{"id": "c1", "function": {"name": "echo", "arguments": {"text": "hi"}}}]}
    other = {"tool_calls": [{"id": "c2", "function": {"name": "echo", "arguments": '{"text": "yo"}'}}]}
    async with serve_llm(Reply([whole, other], finish_reason="tool_calls")) as server:
        llm = OpenAICompatibleLlm(base_url=server.base_url, model="m")
        items = await asyncio.wait_for(stream_all(llm, tools=SCHEMA), GUARD_S)
    assert items == [ToolCall("c1", "echo", '{"text": "hi"}'), ToolCall("c2", "echo", '{"text": "yo"}')]


async def test_no_tools_field_without_tools() -> None:
    async with serve_llm(Reply(["Hi."])) as server:
        llm = OpenAICompatibleLlm(base_url=server.base_url, model="m")
        assert await stream_all(llm) == ["Hi."]
    assert "tools" not in server.chat_requests()[0].body


async def test_a_session_answers_through_a_tool_over_http() -> None:
    """The whole loop on the wire: call, tool message back to the server, the reply goes on."""
    echo = EchoTool()
    replies = [Reply(SPLIT_TWO_CALLS, finish_reason="tool_calls"), Reply(["It said one", " and two."])]
    async with serve_llm(*replies) as server:
        llm = OpenAICompatibleLlm(base_url=server.base_url, model="m")
        transport = RecordingTransport()
        session = Session(
            transport,
            SessionParts(llm=llm, tools=Toolbox([echo])),
            PromptBuilder(persona="You are Juniper."),
            EventLog(None),
            options=SessionOptions(greet=False),
        )
        await asyncio.wait_for(await session.user_said("echo one and two"), GUARD_S)
        second = server.chat_requests()[1].body
    assert transport.reply_text(1) == "Sure. It said one and two."
    assert echo.calls == ["one", "two"]
    assistant, first_result, second_result = second["messages"][-3:]
    assert assistant["role"] == "assistant" and assistant["content"] == "Sure."
    assert [c["id"] for c in assistant["tool_calls"]] == ["call_a", "call_b"]
    assert assistant["tool_calls"][0]["function"] == {"name": "echo", "arguments": '{"text": "one"}'}
    assert first_result["role"] == "tool" and first_result["tool_call_id"] == "call_a"
    assert json.loads(first_result["content"]) == {"tool": "echo", "result": "echo: one"}
    assert second_result["tool_call_id"] == "call_b"
    assert second["tools"] == SCHEMA


async def test_a_server_that_refuses_tools_is_asked_again_without_them(caplog) -> None:
    refused = Reply(status=500, error_body='{"error": {"message": "tools param requires --jinja flag"}}')
    async with serve_llm(refused, Reply(["Hi."]), Reply(["Again."])) as server:
        llm = OpenAICompatibleLlm(base_url=server.base_url, model="m")
        assert await asyncio.wait_for(stream_all(llm, tools=SCHEMA), GUARD_S) == ["Hi."]
        assert await asyncio.wait_for(stream_all(llm, tools=SCHEMA), GUARD_S) == ["Again."]
        sent = [r.body for r in server.chat_requests()]
    assert ["tools" in body for body in sent] == [True, False, False]  # asked once, then never again
    assert "requires --jinja" in llm.tools_refused and "refused the tools field" in caplog.text


async def test_an_error_that_is_not_about_tools_is_still_an_error() -> None:
    down = Reply(status=500, error_body='{"error": {"message": "out of memory"}}')
    async with serve_llm(down, down, Reply(["Later."])) as server:
        llm = OpenAICompatibleLlm(base_url=server.base_url, model="m")
        with pytest.raises(LlmError, match="out of memory"):
            await asyncio.wait_for(stream_all(llm, tools=SCHEMA), GUARD_S)
        assert llm.tools_refused is None  # tools are offered again next time
        await asyncio.wait_for(stream_all(llm, tools=SCHEMA), GUARD_S)
        assert "tools" in server.chat_requests()[-1].body
