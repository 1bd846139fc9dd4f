"""The OpenAI-compatible provider against a real scripted HTTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest

from convers.config import Settings
from convers.contracts.llm import ChatMessage, LanguageModel, LlmError
from convers.providers.llm.openai_compatible import OpenAICompatibleLlm, api_root
from tests.llm_server import Reply, ScriptedLlmServer, echo_responder, serve_llm

HELLO = [ChatMessage("system", "Be brief."), ChatMessage("user", "Hi there")]
# Guards so a regression shows up as a failure instead of a hung test run.
GUARD_S = 10.0


def refused_url() -> str:
    """A 127.0.0.1 URL whose port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


async def collect(llm: OpenAICompatibleLlm, messages=HELLO, **kwargs) -> list[str]:
    return [text async for text in llm.stream(messages, **kwargs)]


async def collect_until_error(llm: OpenAICompatibleLlm) -> tuple[list[str], LlmError]:
    got: list[str] = []
    with pytest.raises(LlmError) as caught:
        async with asyncio.timeout(GUARD_S):
            async for text in llm.stream(HELLO):
                got.append(text)
    return got, caught.value


async def test_streams_deltas_and_sends_an_openai_request():
    async with serve_llm(Reply(["Hel", "lo", " you"])) as server:
        llm = OpenAICompatibleLlm(base_url=server.base_url, model="m", api_key="sk-local", temperature=0.2, max_tokens=50)
        assert isinstance(llm, LanguageModel)
        assert await collect(llm) == ["Hel", "lo", " you"]
    [request] = server.chat_requests()
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer sk-local"
    assert request.body["model"] == "m"
    assert request.body["stream"] is True
    assert request.body["max_tokens"] == 50
    assert request.body["temperature"] == 0.2
    assert request.messages == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}]
    assert request.completed


async def test_call_arguments_and_options_reach_the_server():
    async with serve_llm(Reply(["ok"])) as server:
        llm = OpenAICompatibleLlm(base_url=server.base_url + "/v1/", model="m", options={"top_p": 0.5})
        await collect(llm, max_tokens=7, temperature=0.0)
    body = server.chat_requests()[0].body
    assert (body["max_tokens"], body["temperature"], body["top_p"]) == (7, 0.0, 0.5)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080/v1"),
        ("http://127.0.0.1:8080/", "http://127.0.0.1:8080/v1"),
        ("http://127.0.0.1:8000/v1", "http://127.0.0.1:8000/v1"),
        ("http://127.0.0.1:8000/v1/", "http://127.0.0.1:8000/v1"),
    ],
)
def test_api_root_accepts_urls_with_or_without_v1(given, expected):
    assert api_root(given) == expected


def test_api_root_rejects_a_url_without_scheme():
    with pytest.raises(LlmError, match="127.0.0.1:8080.*not an http"):
        api_root("127.0.0.1:8080")


async def test_cancelling_the_consumer_closes_the_connection_mid_reply():
    async with serve_llm(Reply(["tok "] * 200, tokens_per_s=100)) as server:
        llm = OpenAICompatibleLlm(base_url=server.base_url, model="m")
        got: list[str] = []
        three = asyncio.Event()

        async def consume() -> None:
            async for text in llm.stream(HELLO):
                got.append(text)
                if len(got) == 3:
                    three.set()

        task = asyncio.create_task(consume())
        await asyncio.wait_for(three.wait(), GUARD_S)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        [request] = server.chat_requests()
        await server.wait_finished(request, GUARD_S)
    assert request.client_disconnected
    assert not request.completed
    assert request.tokens_sent < 200


async def test_closing_the_generator_closes_the_connection():
    async with serve_llm(Reply(["tok "] * 200, tokens_per_s=100)) as server:
        llm = OpenAICompatibleLlm(base_url=server.base_url, model="m")
        stream = llm.stream(HELLO)
        assert await anext(stream) == "tok "
        await stream.aclose()
        [request] = server.chat_requests()
        await server.wait_finished(request, GUARD_S)
    assert request.client_disconnected
    assert request.tokens_sent < 200


async def test_server_closing_before_done_is_an_error_after_the_tokens_it_sent():
    async with serve_llm(Reply(["a", "b"], ending="close")) as server:
        got, error = await collect_until_error(OpenAICompatibleLlm(base_url=server.base_url, model="m"))
    assert got == ["a", "b"]
    assert "before [DONE]" in str(error)


async def test_a_final_finish_reason_without_done_still_counts_as_complete():
    # Hanging up after the finish_reason chunk is how some servers end; the reply is whole.
    async with serve_llm(Reply(["a", "b"], ending="finish")) as server:
        assert await collect(OpenAICompatibleLlm(base_url=server.base_url, model="m")) == ["a", "b"]


@pytest.mark.parametrize(
    ("garbage", "message"),
    [
        ("<html>502 Bad Gateway</html>", "not server-sent events"),
        ("data: {not json", "not JSON"),
        ('data: {"error": {"message": "out of memory"}}', "out of memory"),
        ('data: {"object": "chat.completion.chunk"}', "without choices"),
        ("data: [1, 2]", "not a JSON object"),
    ],
)
async def test_malformed_stream_lines_raise_a_clear_error(garbage, message):
    async with serve_llm(Reply(["a", "b", "c"], garbage=garbage, garbage_after=0)) as server:
        got, error = await collect_until_error(OpenAICompatibleLlm(base_url=server.base_url, model="m"))
    assert got == ["a"]
    assert message in str(error)


async def test_sse_comments_and_event_fields_are_ignored():
    async with serve_llm(Reply(["a", "b"], garbage=": keep-alive\nevent: message", garbage_after=0)) as server:
        assert await collect(OpenAICompatibleLlm(base_url=server.base_url, model="m")) == ["a", "b"]


async def test_http_error_status_carries_the_body():
    reply = Reply(status=500, error_body='{"error": {"message": "model failed to load"}}')
    async with serve_llm(reply) as server:
        got, error = await collect_until_error(OpenAICompatibleLlm(base_url=server.base_url, model="m"))
    assert got == []
    assert "HTTP 500" in str(error)
    assert "model failed to load" in str(error)


async def test_http_404_hints_at_the_model_name():
    async with serve_llm(Reply(status=404, error_body='{"error": "model \\"x\\" not found"}')) as server:
        _, error = await collect_until_error(OpenAICompatibleLlm(base_url=server.base_url, model="x"))
    assert "HTTP 404" in str(error) and "llm.model" in str(error)


async def test_refused_connection_is_a_clear_error():
    url = refused_url()
    _, error = await collect_until_error(OpenAICompatibleLlm(base_url=url, model="m"))
    assert "cannot connect" in str(error)
    assert url.removeprefix("http://") in str(error)


async def test_a_server_that_never_sends_a_token_times_out():
    async with serve_llm(Reply([], ending="stall")) as server:
        llm = OpenAICompatibleLlm(base_url=server.base_url, model="m", read_timeout_s=0.3)
        got, error = await collect_until_error(llm)
        [request] = server.chat_requests()
        await server.wait_finished(request, GUARD_S)
    assert got == []
    assert "sent nothing for 0.3 s" in str(error)
    assert request.client_disconnected


async def test_a_server_that_stalls_mid_reply_times_out_after_its_tokens():
    async with serve_llm(Reply(["a"], ending="stall")) as server:
        got, error = await collect_until_error(OpenAICompatibleLlm(base_url=server.base_url, model="m", read_timeout_s=0.3))
    assert got == ["a"]
    assert "llm.read_timeout_s" in str(error)


async def test_a_slow_first_token_within_the_timeout_is_fine():
    async with serve_llm(Reply(["late"], first_token_delay_s=0.2)) as server:
        llm = OpenAICompatibleLlm(base_url=server.base_url, model="m", read_timeout_s=5)
        assert await collect(llm) == ["late"]


async def test_model_is_discovered_from_v1_models_once():
    async with serve_llm(Reply(["a"]), Reply(["b"]), models=["first-model", "second"]) as server:
        llm = OpenAICompatibleLlm(base_url=server.base_url)
        await collect(llm)
        await collect(llm)
    assert [r.body["model"] for r in server.chat_requests()] == ["first-model", "first-model"]
    assert [r.path for r in server.requests].count("/v1/models") == 1


async def test_model_discovery_failures_say_to_set_the_model():
    async with serve_llm(models=[]) as server:
        _, error = await collect_until_error(OpenAICompatibleLlm(base_url=server.base_url))
    assert "lists no models" in str(error)
    async with serve_llm(models_status=500) as server:
        _, error = await collect_until_error(OpenAICompatibleLlm(base_url=server.base_url))
    assert "HTTP 500" in str(error) and "set llm.model" in str(error)


async def test_base_url_is_auto_detected_from_candidates_in_order():
    async with serve_llm(Reply(["a"]), models=["local-llm"]) as server:
        candidates = [("llama-server", refused_url()), ("Ollama", server.base_url)]
        llm = OpenAICompatibleLlm(candidates=candidates)
        assert await collect(llm) == ["a"]
        endpoint = await llm.endpoint()
    assert endpoint.label == "Ollama"
    assert endpoint.api == server.base_url + "/v1"
    assert endpoint.model == "local-llm"


async def test_no_candidate_answering_names_them_all():
    candidates = [("llama-server", refused_url()), ("Ollama", refused_url())]
    _, error = await collect_until_error(OpenAICompatibleLlm(candidates=candidates))
    text = str(error)
    assert "no OpenAI-compatible server on" in text
    assert all(url.removeprefix("http://") in text for _, url in candidates)
    assert "set llm.base_url" in text


async def test_availability_names_the_endpoint_or_says_none_answers():
    async with ScriptedLlmServer(models=["qwen"]) as server:
        candidates = [("llama-server", refused_url()), ("Ollama", server.base_url)]
        found = await asyncio.to_thread(OpenAICompatibleLlm.availability, Settings(), candidates)
        configured = Settings.model_validate({"llm": {"base_url": server.base_url, "model": "mine"}})
        explicit = await asyncio.to_thread(OpenAICompatibleLlm.availability, configured)
    assert found.usable and server.base_url in found.detail and "Ollama" in found.detail and "qwen" in found.detail
    assert explicit.usable and "mine" in explicit.detail
    dead = OpenAICompatibleLlm.availability(Settings(), [("llama-server", refused_url())])
    assert not dead.usable and "start llama-server" in dead.detail
    broken = Settings.model_validate({"llm": {"base_url": refused_url()}})
    assert not OpenAICompatibleLlm.availability(broken).usable


def test_from_settings_reads_the_llm_section():
    settings = Settings.model_validate(
        {"llm": {"base_url": "http://127.0.0.1:1234", "model": "m", "temperature": 0.1, "read_timeout_s": 9}}
    )
    llm = OpenAICompatibleLlm.from_settings(settings)
    assert (llm.base_url, llm.model, llm.temperature, llm.read_timeout_s) == ("http://127.0.0.1:1234", "m", 0.1, 9)


async def test_a_json_reply_to_a_stream_request_is_still_used():
    # Some servers ignore "stream": true; the whole answer arrives as one chat completion.
    async def app(scope, receive, send):
        body = b'{"choices": [{"message": {"role": "assistant", "content": "all at once"}}]}'
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})

    transport = httpx.ASGITransport(app=app)
    original = httpx.AsyncClient.__init__

    def with_app(self, *args, **kwargs):
        original(self, *args, transport=transport, **kwargs)

    llm = OpenAICompatibleLlm(base_url="http://127.0.0.1:9", model="m")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(httpx.AsyncClient, "__init__", with_app)
        assert await collect(llm) == ["all at once"]


def test_scripted_server_runs_in_a_thread_for_synchronous_callers():
    with ScriptedLlmServer(responder=echo_responder).running_in_thread() as server:
        with httpx.Client() as client:
            response = client.post(
                server.base_url + "/v1/chat/completions",
                json={"model": "m", "stream": True, "messages": [{"role": "user", "content": "say this back"}]},
            )
    assert "say" in response.text and "[DONE]" in response.text
    assert server.chat_requests()[0].completed


async def test_a_detected_server_that_goes_away_is_looked_for_again():
    async with serve_llm(Reply(["one"]), models=["first"]) as first:
        llm = OpenAICompatibleLlm(candidates=[("llama-server", first.base_url)])
        assert await collect(llm) == ["one"]
    # The first server is gone: this reply fails, and the next one probes afresh.
    _, error = await collect_until_error(llm)
    assert "cannot connect" in str(error)
    async with serve_llm(Reply(["two"]), models=["second"]) as second:
        llm.candidates = (("llama-server", refused_url()), ("Ollama", second.base_url))
        assert await collect(llm) == ["two"]
        assert (await llm.endpoint()).model == "second"


async def test_a_server_that_stalls_after_its_first_tokens_fails_within_the_stall_limit():
    # The read timeout is long (a slow first token is allowed); between tokens the stall limit applies.
    async with serve_llm(Reply(["a", "b"], ending="stall")) as server:
        llm = OpenAICompatibleLlm(base_url=server.base_url, model="m", read_timeout_s=60, stall_timeout_s=0.3)
        got, error = await collect_until_error(llm)
        [request] = server.chat_requests()
        await server.wait_finished(request, GUARD_S)
    assert got == ["a", "b"]
    assert "nothing for 0.3 s after the last one" in str(error) and "llm.stall_timeout_s" in str(error)
    assert request.client_disconnected


async def test_the_stall_limit_does_not_apply_to_the_first_token():
    async with serve_llm(Reply(["late", " but fine"], first_token_delay_s=0.4)) as server:
        llm = OpenAICompatibleLlm(base_url=server.base_url, model="m", read_timeout_s=5, stall_timeout_s=0.1)
        assert await collect(llm) == ["late", " but fine"]


def test_the_stall_limit_comes_from_settings():
    settings = Settings.model_validate({"llm": {"stall_timeout_s": 4}})
    assert OpenAICompatibleLlm.from_settings(settings).stall_timeout_s == 4


async def test_session_views_share_what_is_known_of_the_server():
    async with serve_llm(Reply(["a"]), Reply(["b"]), Reply(["c"])) as server:
        llm = OpenAICompatibleLlm(base_url=server.base_url)
        one, two = llm.for_session("s1"), llm.for_session("s2")
        assert await collect(one) == ["a"] and await collect(two) == ["b"] and await collect(llm) == ["c"]
    # The model list and llama-server's slots are asked once, not once per session.
    asked = [r.path for r in server.requests if not r.path.endswith("/chat/completions")]
    assert asked == ["/v1/models", "/props"]
    assert (one.cache_slot, two.cache_slot) == (0, 1)
