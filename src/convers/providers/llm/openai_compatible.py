"""Any OpenAI-compatible `/v1/chat/completions` streaming server: llama-server, Ollama, vLLM, LM Studio.

A little over 400 lines: one wire protocol, its streaming parser, its errors and its tool-call
round trip, which change together whenever a server family behaves differently.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import logging
import ssl
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

from convers.contracts.llm import (
    ChatMessage,
    LlmError,
    PromptReading,
    ReadingReport,
    StreamItem,
)
from convers.contracts.provider import RANK_USER_MODEL, AutoChoice, Availability
from convers.providers.llm.tool_call_deltas import ToolCallAssembler

if TYPE_CHECKING:
    from convers.config import Settings

log = logging.getLogger(__name__)

# Tried in order when llm.base_url is unset: (what it usually is, root URL).
DEFAULT_CANDIDATES: tuple[tuple[str, str], ...] = (
    ("llama-server", "http://127.0.0.1:8080"),
    ("Ollama", "http://127.0.0.1:11434"),
)
# A local server answers a refused or accepted connection in well under a millisecond; this only
# bounds the wait when a firewall drops packets, so doctor and the first turn stay quick.
PROBE_TIMEOUT_S = 0.5
# Statuses with which servers refuse the `tools` field itself (llama-server without --jinja: 500;
# Ollama, a model without tool support: 400; vLLM without --enable-auto-tool-choice: 400).
TOOLS_REFUSED_STATUSES = frozenset({400, 422, 500, 501})
# How much of an error body goes into the message: enough for the server's own explanation.
BODY_SNIPPET_CHARS = 300


def api_root(base_url: str) -> str:
    """`http://host:port` or `http://host:port/v1` (with or without a slash) as `http://host:port/v1`."""
    root = base_url.strip().rstrip("/")
    if not root.startswith(("http://", "https://")):
        raise LlmError(f"llm.base_url {base_url!r} is not an http(s) URL; for example http://127.0.0.1:8080")
    return root if root.endswith("/v1") else root + "/v1"


@dataclass(frozen=True)
class Probe:
    """What `GET {api}/models` told us: whether anything answered, and which models it lists."""

    api: str
    answered: bool
    status: int | None = None
    models: list[str] = field(default_factory=list)
    problem: str = ""


def probe(api: str, timeout_s: float = PROBE_TIMEOUT_S, api_key: str | None = None) -> Probe:
    """Asks one server for its models. Never raises: a dead or odd server is a `Probe` that says so."""
    url = f"{api}/models"
    try:
        with httpx.Client(timeout=timeout_s, headers=_auth(api_key)) as client:
            response = client.get(url)
    except httpx.HTTPError as error:
        return Probe(api, answered=False, problem=f"{type(error).__name__}: {error or 'no answer'}")
    if response.status_code != 200:
        return Probe(api, True, response.status_code, problem=f"HTTP {response.status_code}: {_snippet(response.text)}")
    try:
        data = response.json().get("data", [])
        models = [str(entry["id"]) for entry in data if isinstance(entry, dict) and "id" in entry]
    except (ValueError, AttributeError) as error:
        return Probe(api, True, 200, problem=f"model list is not OpenAI-shaped JSON ({error}): {_snippet(response.text)}")
    return Probe(api, True, 200, models)


@dataclass(frozen=True)
class Endpoint:
    """The server and model a stream goes to, once resolved.

    `slots`: llama-server's number of cache slots (its /props says), 0 for any other server; with
    slots, each session's requests go to a slot of its own (`id_slot`) with `cache_prompt` on.
    """

    label: str
    api: str
    model: str
    slots: int = 0


def llama_server_slots(api: str, timeout_s: float, api_key: str | None) -> int:
    """How many cache slots a llama-server at `api` has; 0 when it is not llama-server (Ollama,
    vLLM and others have no /props, and keep their prefix caches without being asked)."""
    try:
        with httpx.Client(timeout=timeout_s, headers=_auth(api_key)) as client:
            response = client.get(api.removesuffix("/v1") + "/props")
        slots = response.json().get("total_slots") if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError, AttributeError):
        return 0
    return slots if isinstance(slots, int) and slots > 0 else 0


@dataclass
class ServerFacts:
    """What a provider learnt about its server, shared by every session's view of it (for_session):
    the endpoint it resolved, and why the server refused the `tools` field, once it has."""

    endpoint: Endpoint | None = None
    tools_refused: str | None = None


class OpenAICompatibleLlm:
    """Streams chat completions over HTTP from a local OpenAI-compatible server.

    When no base URL is given, the first of `candidates` that answers is used; when no model is
    given, the first one the server lists. Both choices are made once and kept on the instance.
    """

    name = "openai"
    # llama-server (with --jinja), Ollama and vLLM take `tools` and stream `tool_calls` deltas.
    supports_tools = True

    def __init__(
        self,
        *,
        base_url: str | None = None,
        model: str | None = None,
        api_key: str | None = None,
        temperature: float = 0.7,
        max_tokens: int = 400,
        connect_timeout_s: float = 3.0,
        read_timeout_s: float = 60.0,
        stall_timeout_s: float = 10.0,
        options: Mapping[str, Any] | None = None,
        candidates: Sequence[tuple[str, str]] = DEFAULT_CANDIDATES,
        slots: int | None = None,
    ) -> None:
        self.base_url = base_url
        self.model = model
        self.api_key = api_key
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        # Between tokens: a model that has started answering and then goes quiet this long is stuck.
        self.stall_timeout_s = stall_timeout_s
        # Extra request fields (top_p, stop, seed, ...), sent as given.
        self.options = dict(options or {})
        self.candidates = tuple(candidates)
        # Shared with the session views: none learns again what another already knows.
        self.facts = ServerFacts()
        self._ssl: ssl.SSLContext | None = None
        # llama-server's slot count when known beforehand (the in-process server); None: ask /props.
        self.known_slots = slots
        # Set on a session's view (for_session): the cache slot its requests use, and who hears
        # what each request had to read. Views share the counter that hands out slots.
        self.cache_slot: int | None = None
        self.on_reading: ReadingReport | None = None
        self._slot_numbers: Iterator[int] = itertools.count()

    @classmethod
    def from_settings(
        cls, settings: Settings, candidates: Sequence[tuple[str, str]] = DEFAULT_CANDIDATES
    ) -> OpenAICompatibleLlm:
        llm = settings.llm
        return cls(
            base_url=llm.base_url,
            model=llm.model,
            api_key=llm.api_key,
            temperature=llm.temperature,
            max_tokens=llm.max_tokens,
            connect_timeout_s=llm.connect_timeout_s,
            read_timeout_s=llm.read_timeout_s,
            stall_timeout_s=llm.stall_timeout_s,
            options=llm.options,
            candidates=candidates,
        )

    @classmethod
    def auto_choice(cls, settings: Settings) -> AutoChoice:
        """A server the user started answers: the stronger sign of intent (and usually the bigger model).

        A server named in `llm.base_url` is chosen even when it does not answer now: the person said
        which model to talk to, and a clear "cannot connect" beats a different model answering.
        """
        if settings.llm.base_url:
            return AutoChoice(RANK_USER_MODEL + 10, True, f"llm.base_url {settings.llm.base_url} (configured)")
        available = cls.availability(settings)
        return AutoChoice(RANK_USER_MODEL + 10, available.usable, available.detail)

    @classmethod
    def availability(
        cls, settings: Settings, candidates: Sequence[tuple[str, str]] = DEFAULT_CANDIDATES
    ) -> Availability:
        llm = settings.llm
        timeout = min(PROBE_TIMEOUT_S, llm.connect_timeout_s)
        if llm.base_url:
            try:
                api = api_root(llm.base_url)
            except LlmError as error:
                return Availability(False, str(error))
            found = probe(api, timeout, llm.api_key)
            if not found.answered:
                return Availability(False, f"no answer from {api} ({found.problem}); start the server or fix llm.base_url")
            return _describe(api, "llm.base_url", found, llm.model)
        for label, url in candidates:
            api = api_root(url)
            found = probe(api, timeout, llm.api_key)
            if found.answered:
                return _describe(api, label, found, llm.model)
        return Availability(False, _nothing_answers(candidates))

    @property
    def tools_refused(self) -> str | None:
        """Why the server refused the `tools` field, once it has (then tools are no longer sent)."""
        return self.facts.tools_refused

    @tools_refused.setter
    def tools_refused(self, reason: str | None) -> None:
        self.facts.tools_refused = reason

    def for_session(self, key: str, on_reading: ReadingReport | None = None) -> OpenAICompatibleLlm:
        """A view for one session: its requests share one llama-server cache slot (sessions take
        slots in turn), and `on_reading` hears what each request had to read. `key` names the
        session in logs; slots are handed out in order, not by key. What is known of the server
        (`facts`: its endpoint, whether it takes tools) stays shared."""
        view = copy.copy(self)
        view.cache_slot = next(self._slot_numbers)
        view.on_reading = on_reading
        log.debug("session %s uses cache slot %d (modulo the server's slots)", key, view.cache_slot)
        return view

    async def prefill(self, messages: Sequence[ChatMessage]) -> None:
        """Reads `messages` into this session's cache slot, then stops after one token.

        The messages end in an empty user message: the chat template then writes everything up to
        the start of the next user message, which is exactly the prefix the next request shares.
        Never raises: a failed prefill only means the next request reads more.
        """
        try:
            endpoint = await self.endpoint()
            if not endpoint.slots:
                return  # no slot to keep it in: Ollama and vLLM cache the last prompt themselves
            payload = {
                **self.options,
                **self._cache_fields(endpoint),
                "model": endpoint.model,
                "messages": [m.as_dict() for m in messages] + [{"role": "user", "content": ""}],
                "max_tokens": 1,
                "temperature": 0.0,
            }
            timeout = httpx.Timeout(self.read_timeout_s, connect=self.connect_timeout_s)
            async with httpx.AsyncClient(timeout=timeout, headers=_auth(self.api_key), verify=self._ssl_context()) as client:
                response = await client.post(f"{endpoint.api}/chat/completions", json=payload)
            if response.status_code == 200:
                self._report("prefill", response.json().get("timings"))
            else:
                log.debug("prefill answered HTTP %d: %s", response.status_code, _snippet(response.text))
        except (LlmError, httpx.HTTPError, ValueError, AttributeError) as error:
            log.debug("prefill failed (the next request reads more): %s", error)

    def _cache_fields(self, endpoint: Endpoint) -> dict[str, Any]:
        """llama-server's request fields that keep a session's prompt cached between its requests."""
        if not endpoint.slots:
            return {}
        fields: dict[str, Any] = {"cache_prompt": True}
        if self.cache_slot is not None:
            fields["id_slot"] = self.cache_slot % endpoint.slots
        return fields

    def _report(self, purpose: str, timings: Any) -> None:
        """Tells `on_reading` what the server says the request read (llama-server's `timings`)."""
        if self.on_reading is None or not isinstance(timings, dict):
            return
        try:
            cached, read = int(timings.get("cache_n", 0)), int(timings["prompt_n"])
            reading = PromptReading(purpose, cached + read, read, float(timings.get("prompt_ms", 0.0)))
        except (KeyError, TypeError, ValueError):
            return
        self.on_reading(reading)

    # -- resolving where to send -----------------------------------------------------------

    async def endpoint(self) -> Endpoint:
        """The server and model in use, found on first call (probing candidates if needed)."""
        if self.facts.endpoint is not None:
            return self.facts.endpoint
        timeout = min(PROBE_TIMEOUT_S, self.connect_timeout_s)
        found: Probe | None = None
        if self.base_url:
            label, api = "llm.base_url", api_root(self.base_url)
        else:
            for candidate, url in self.candidates:
                label, api = candidate, api_root(url)
                found = await asyncio.to_thread(probe, api, timeout, self.api_key)
                if found.answered:
                    break
            else:
                raise LlmError(_nothing_answers(self.candidates))
        model = self.model
        if not model:
            if found is None:
                found = await asyncio.to_thread(probe, api, self.connect_timeout_s, self.api_key)
            model = _first_model(api, found)
        slots = self.known_slots
        if slots is None:
            slots = await asyncio.to_thread(llama_server_slots, api, timeout, self.api_key)
        self.facts.endpoint = Endpoint(label, api, model, slots)
        return self.facts.endpoint

    def _ssl_context(self) -> ssl.SSLContext:
        """One certificate store per provider: httpx loads a fresh one for every client otherwise,
        about 50 ms on the event loop per reply on 2 cores (measured with `convers bench latency`)."""
        if self._ssl is None:
            try:
                import certifi

                self._ssl = ssl.create_default_context(cafile=certifi.where())
            except ImportError:  # httpx's own default store; without certifi, the system's
                self._ssl = ssl.create_default_context()
        return self._ssl

    # -- streaming ---------------------------------------------------------------------------

    async def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> AsyncIterator[StreamItem]:
        """Yields text deltas, then the reply's tool calls (when `tools` were offered and the model
        called any). Closing the generator closes the HTTP connection, which is how llama-server,
        Ollama and vLLM learn to stop generating."""
        endpoint = await self.endpoint()
        url = f"{endpoint.api}/chat/completions"
        payload = {
            **self.options,
            **self._cache_fields(endpoint),
            "model": endpoint.model,
            "messages": [m.as_dict() for m in messages],
            "stream": True,
            "max_tokens": max_tokens if max_tokens is not None else self.max_tokens,
            "temperature": temperature if temperature is not None else self.temperature,
        }
        if tools and self.tools_refused is None:
            payload["tools"] = list(tools)
        # The read timeout bounds each wait for bytes: the first token and every next one.
        timeout = httpx.Timeout(self.read_timeout_s, connect=self.connect_timeout_s)
        # One client per reply: connections never outlive the event loop that made them, and a
        # cancelled reply leaves no half-read connection in a pool.
        async with httpx.AsyncClient(timeout=timeout, headers=_auth(self.api_key), verify=self._ssl_context()) as client:
            try:
                retried = False
                while True:
                    async with client.stream("POST", url, json=payload) as response:
                        if "tools" in payload and response.status_code in TOOLS_REFUSED_STATUSES:
                            # llama-server without --jinja, or an Ollama model without tool support,
                            # refuses the field itself: say why once, and ask without tools from now on.
                            body = (await response.aread()).decode("utf-8", "replace")
                            self.tools_refused = f"HTTP {response.status_code}: {_snippet(body)}"
                            log.warning(
                                "%s refused the tools field (%s); tools are off for this server "
                                "(llama-server needs --jinja, an Ollama model must support tools)",
                                url, self.tools_refused,
                            )
                            del payload["tools"]
                            retried = True
                            continue
                        try:
                            await _raise_for_status(response, url)
                        except LlmError:
                            if retried:
                                self.tools_refused = None  # it fails without tools too: tools were not the cause
                            raise
                        if response.headers.get("content-type", "").startswith("application/json"):
                            # The server ignored "stream": true and sent the whole reply at once.
                            for item in _whole_reply(await response.aread(), url):
                                yield item
                            return
                        deltas = _sse_deltas(response, url, lambda timings: self._report("reply", timings))
                        async for item in _within_stall_limit(deltas, self.stall_timeout_s, url):
                            yield item
                        return
            except httpx.ConnectTimeout:
                raise LlmError(
                    f"no connection to {url} within {self.connect_timeout_s} s (llm.connect_timeout_s); is the server up?"
                ) from None
            except httpx.ConnectError as error:
                # The server went away: let the next reply look again (it may have moved ports).
                self.facts.endpoint = None
                raise LlmError(f"cannot connect to {url}: {error}; start the server or fix llm.base_url") from None
            except httpx.ReadTimeout:
                raise LlmError(
                    f"{url} sent nothing for {self.read_timeout_s} s (llm.read_timeout_s); "
                    "the server is stuck or overloaded"
                ) from None
            except httpx.RemoteProtocolError as error:
                raise LlmError(f"{url} broke off the reply: {error}") from None
            except httpx.HTTPError as error:
                raise LlmError(f"request to {url} failed: {type(error).__name__}: {error}") from None


async def _raise_for_status(response: httpx.Response, url: str) -> None:
    if response.status_code < 400:
        return
    body = (await response.aread()).decode("utf-8", "replace")
    hint = "; check llm.api_key" if response.status_code in (401, 403) else ""
    if response.status_code == 404:
        hint = "; check llm.model (the server may not have it) and llm.base_url"
    raise LlmError(f"{url} answered HTTP {response.status_code}: {_snippet(body)}{hint}")


async def _within_stall_limit(deltas: AsyncIterator[StreamItem], stall_s: float, url: str) -> AsyncIterator[StreamItem]:
    """`deltas`, where every delta after the first must follow the one before within `stall_s`.

    The first token may take long (a long prompt on a small machine: llm.read_timeout_s bounds it);
    once tokens flow, a long silence means a hung server, not a thinking one, and waiting the whole
    read timeout for it left the page "thinking" for a minute before the error.
    """
    started = False
    try:
        while True:
            try:
                if started:
                    async with asyncio.timeout(stall_s):
                        text = await anext(deltas)
                else:
                    text = await anext(deltas)
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise LlmError(
                    f"{url} stopped sending tokens: nothing for {stall_s} s after the last one "
                    "(llm.stall_timeout_s); the server is stuck or overloaded"
                ) from None
            started = True
            yield text
    finally:
        await deltas.aclose()  # type: ignore[attr-defined]


async def _sse_deltas(
    response: httpx.Response, url: str, on_timings: Callable[[Any], None] | None = None
) -> AsyncIterator[StreamItem]:
    """Text deltas from an SSE body, then its tool calls; raises LlmError on anything that is not a
    well-formed stream. llama-server's last chunk carries `timings` (what it read and how fast):
    they go to `on_timings`."""
    finished = False
    calls = ToolCallAssembler(url)
    async for line in response.aiter_lines():
        if not line or line.startswith(":"):
            continue  # event separator or SSE comment (keep-alive)
        name, _, value = line.partition(":")
        if name in ("event", "id", "retry"):
            continue
        if name != "data":
            raise LlmError(f"{url} sent a line that is not server-sent events: {line[:120]!r}")
        value = value.removeprefix(" ")
        if value.strip() == "[DONE]":
            for call in calls.finish():
                yield call
            return
        try:
            chunk = json.loads(value)
        except ValueError:
            raise LlmError(f"{url} sent a data line that is not JSON: {value[:120]!r}") from None
        text, finish_reason = _delta(chunk, url, calls)
        if on_timings is not None and isinstance(chunk, dict) and "timings" in chunk:
            on_timings(chunk["timings"])
        if text:
            yield text
        finished = finished or bool(finish_reason)
    # A stream that ends without [DONE] was cut short, unless the server already said why it
    # stopped (some servers omit [DONE] after the final finish_reason chunk).
    if not finished:
        raise LlmError(f"{url} ended the stream before [DONE]: the reply is cut short (server crashed or restarted?)")
    for call in calls.finish():
        yield call


def _delta(chunk: Any, url: str, calls: ToolCallAssembler) -> tuple[str, str | None]:
    if not isinstance(chunk, dict):
        raise LlmError(f"{url} sent a chunk that is not a JSON object: {str(chunk)[:120]!r}")
    if "error" in chunk:
        error = chunk["error"]
        message = error.get("message", error) if isinstance(error, dict) else error
        raise LlmError(f"{url} reported an error mid-reply: {message}")
    choices = chunk.get("choices")
    if not isinstance(choices, list):
        raise LlmError(f"{url} sent a chunk without choices: {json.dumps(chunk)[:120]}")
    if not choices:
        return "", None  # usage-only chunk
    choice = choices[0] if isinstance(choices[0], dict) else {}
    delta = choice.get("delta") or {}
    text = delta.get("content") if isinstance(delta, dict) else None
    if isinstance(delta, dict) and delta.get("tool_calls"):
        calls.add(delta["tool_calls"])
    return (text if isinstance(text, str) else ""), choice.get("finish_reason")


def _whole_reply(body: bytes, url: str) -> list[StreamItem]:
    try:
        message = json.loads(body)["choices"][0]["message"]
        text = str(message.get("content") or "")
        tool_calls = message.get("tool_calls") or []
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        raise LlmError(f"{url} answered with JSON that is not a chat completion: {_snippet(body.decode('utf-8', 'replace'))}") from None
    calls = ToolCallAssembler(url)
    calls.add(tool_calls)
    return [*([text] if text else []), *calls.finish()]


def _first_model(api: str, found: Probe) -> str:
    if not found.answered:
        raise LlmError(f"cannot ask {api}/models which models it has ({found.problem}); start the server or set llm.model")
    if found.status != 200:
        raise LlmError(f"{api}/models answered {found.problem}; set llm.model to the model's name")
    if not found.models:
        raise LlmError(f"{api}/models lists no models; load one in the server (e.g. `ollama pull qwen2.5:1.5b`) or set llm.model")
    return found.models[0]


def _describe(api: str, label: str, found: Probe, model: str | None) -> Availability:
    if model:
        return Availability(True, f"{api} ({label}) answers; model {model}")
    if found.models:
        return Availability(True, f"{api} ({label}) answers; model {found.models[0]} (first it lists)")
    return Availability(False, f"{api} ({label}) answers but lists no model ({found.problem or 'empty list'}); set llm.model")


def _nothing_answers(candidates: Sequence[tuple[str, str]]) -> str:
    if not candidates:
        return "llm.base_url is unset and there is nothing to probe; set llm.base_url"
    where = " or ".join(url.removeprefix("http://").removeprefix("https://") for _, url in candidates)
    names = " or ".join(label for label, _ in candidates)
    return f"no OpenAI-compatible server on {where}; start {names}, or set llm.base_url"


def _auth(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def _snippet(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= BODY_SNIPPET_CHARS else flat[:BODY_SNIPPET_CHARS] + "..."
