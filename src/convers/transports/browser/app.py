"""The ASGI app: the page, its static files, the conversation WebSocket and the memory API.

The app knows nothing about the engine: it receives `run_session(transport)`, a coroutine function
that holds one conversation until the transport's inbound iterator ends, and the memory for the
memory panel: a store, or the process's memory (its store once opened, and its status: why it is
off or unavailable, which the API then answers instead of data).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.requests import HTTPConnection, Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from convers.contracts.echo import EchoCanceller
from convers.contracts.events import ErrorMessage
from convers.contracts.memory import KEY_KINDS, MemoryStatus
from convers.contracts.transport import Transport
from convers.transports.browser.auth import COOKIE_NAME, token_matches
from convers.transports.browser.echo_rooms import EchoRooms
from convers.transports.browser.websocket_transport import (
    CLOSE_FORBIDDEN_ORIGIN,
    CLOSE_NO_HELLO,
    CLOSE_UNAUTHORIZED,
    WebSocketTransport,
)

log = logging.getLogger(__name__)

RunSession = Callable[[Transport], Awaitable[None]]
STATIC_DIR = Path(__file__).parent / "static"
# 24 kHz keeps Piper (22.05 kHz) and Kokoro (24 kHz) voices at full quality; the page resamples.
DEFAULT_OUTPUT_SAMPLE_RATE = 24000
# A page that connects but never says hello is not a client we can talk to.
HELLO_TIMEOUT_S = 15.0
COOKIE_MAX_AGE_S = 400 * 24 * 3600
MEMORY_PAGE_MAX = 200
# At shutdown, how long the cancelled sessions get to finish their memory writes.
SHUTDOWN_WAIT_S = 10.0
# SQLite's largest integer: a larger offset overflowed the query and answered 500.
MEMORY_OFFSET_MAX = 2**63 - 1

# No inline script or style anywhere on the page, so the policy can forbid both.
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; connect-src 'self'; img-src 'self' data:; "
     b"media-src 'self' blob:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    # The token travels in the first URL: never hand it to another site as a referrer.
    (b"referrer-policy", b"no-referrer"),
    (b"permissions-policy", b"microphone=(self)"),
]


class ProcessMemory(Protocol):
    """The memory a server opened at start: `store` is None until it is open, or when it cannot be."""

    store: Any | None
    status: MemoryStatus


@dataclasses.dataclass(frozen=True)
class BrowserAppConfig:
    """How the app guards and speaks: token (None = no auth), output rate, notices shown on connect."""

    token: str | None
    output_sample_rate: int = DEFAULT_OUTPUT_SAMPLE_RATE
    # Error events every new connection receives after `ready`, e.g. {"code": "no_llm", ...}: a list,
    # or a coroutine function asked anew on each connection (what holds now, not at start).
    notices: Sequence[dict[str, Any]] | Callable[[], Awaitable[Sequence[dict[str, Any]]]] = ()
    # Awaited once before the server accepts its first connection (model loading, warm-up).
    on_start: Callable[[], Awaitable[Any]] | None = None
    # Awaited once at shutdown, after the sessions ended (closing what they shared).
    on_stop: Callable[[], Awaitable[Any]] | None = None
    hello_timeout_s: float = HELLO_TIMEOUT_S
    secure_cookie: bool = True
    # Makes an echo canceller for each client whose hello says it cancelled no echo (`"aec": false`).
    echo_canceller: Callable[[], EchoCanceller] | None = None
    static_dir: Path = STATIC_DIR


def create_app(
    run_session: RunSession,
    config: BrowserAppConfig,
    memory_store: Any | None = None,
    memory: ProcessMemory | None = None,
) -> Starlette:
    """The Starlette app; the memory panel uses `memory_store` (list/count/search/forget/wipe) or the
    store of `memory`; with neither, the memory API answers 503 saying why."""
    # One worker for the memory API: panel requests queue behind each other instead of taking every
    # default worker thread (the store itself is thread-safe; sessions use it from their own threads).
    memory_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="memory-api")
    sessions: set[asyncio.Task[Any]] = set()
    # The learned echo cancellers of pages that left, for their reconnection (hello `echo_room`).
    echo_rooms = EchoRooms()

    def authorized(conn: HTTPConnection, allow_query: bool) -> bool:
        if config.token is None:
            return True
        offered = conn.cookies.get(COOKIE_NAME)
        if token_matches(config.token, offered):
            return True
        header = conn.headers.get("authorization", "")
        if header.lower().startswith("bearer ") and token_matches(config.token, header[7:].strip()):
            return True
        return allow_query and token_matches(config.token, conn.query_params.get("token"))

    async def index(request: Request) -> Response:
        offered = request.query_params.get("token")
        if offered is not None and config.token is not None:
            if not token_matches(config.token, offered):
                return _denied_page("The access token in this address is wrong or was rotated.")
            # Move the token into a cookie and out of the address bar, history and bookmarks.
            response = RedirectResponse("/", status_code=303)
            response.set_cookie(
                COOKIE_NAME,
                offered,
                max_age=COOKIE_MAX_AGE_S,
                path="/",
                secure=config.secure_cookie,
                httponly=True,
                samesite="strict",
            )
            return response
        if offered is not None:
            return RedirectResponse("/", status_code=303)
        if not authorized(request, allow_query=False):
            return _denied_page("This page needs its access token.")
        return FileResponse(config.static_dir / "index.html", headers={"cache-control": "no-store"})

    async def conversation(websocket: WebSocket) -> None:
        await websocket.accept()
        if not _same_origin(websocket):
            await websocket.close(CLOSE_FORBIDDEN_ORIGIN, "cross-origin connection refused")
            return
        if not authorized(websocket, allow_query=True):
            await websocket.close(CLOSE_UNAUTHORIZED, "access token missing or wrong")
            return
        transport = WebSocketTransport(
            websocket, config.output_sample_rate, echo_canceller=config.echo_canceller, echo_rooms=echo_rooms
        )
        transport.start()
        try:
            if not await transport.handshake(config.hello_timeout_s):
                refusal = ErrorMessage("no_hello", "no hello message arrived; see docs/protocol.md")
                await transport.send_event(refusal.to_wire())
                await transport.drain()
                await transport.close(CLOSE_NO_HELLO, "no hello")
                return
            for notice in await _current_notices(config.notices):
                # A notice as sent on the wire; one without a type is an error ({"code": "no_llm", ...}).
                await transport.send_event(notice if "type" in notice else {"type": "error", **notice})
            task = asyncio.current_task()
            if task is not None:
                sessions.add(task)
            try:
                await run_session(transport)
            except Exception as error:  # one broken session must never take the server down
                log.exception("session failed")
                await transport.send_event(ErrorMessage("session_failed", str(error)).to_wire())
                await transport.drain()
                await transport.close(1011, "session failed")
        finally:
            sessions.discard(asyncio.current_task())
            await transport.close()

    def memory_guard(request: Request) -> Response | None:
        if not authorized(request, allow_query=False):
            return JSONResponse({"error": "access token missing or wrong"}, status_code=401)
        if request.method != "GET" and not _same_origin(request):
            return JSONResponse({"error": "cross-origin request refused"}, status_code=403)
        if current_store() is None:
            status = memory.status if memory is not None else MemoryStatus("off", "memory.enabled = false")
            words = "is off" if status.state == "off" else "is unavailable"
            return JSONResponse(
                {"error": f"memory {words}: {status.reason}", "memory": status.state, "reason": status.reason},
                status_code=503,
            )
        return None

    def current_store() -> Any | None:
        return memory_store if memory is None else memory.store

    async def in_memory_thread(fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(memory_thread, fn, *args)

    async def memory_list(request: Request) -> Response:
        if (refusal := memory_guard(request)) is not None:
            return refusal
        try:
            limit = int(request.query_params.get("limit", "50"))
            offset = int(request.query_params.get("offset", "0"))
        except ValueError:
            return JSONResponse({"error": "limit and offset must be integers"}, status_code=400)
        if not 1 <= limit <= MEMORY_PAGE_MAX or not 0 <= offset <= MEMORY_OFFSET_MAX:
            return JSONResponse(
                {"error": f"limit must be 1..{MEMORY_PAGE_MAX} and offset 0..{MEMORY_OFFSET_MAX}, "
                          f"got limit={_bounded(limit)} offset={_bounded(offset)}"},
                status_code=400,
            )
        store = current_store()
        assert store is not None  # memory_guard refused the request otherwise
        query = request.query_params.get("q", "").strip()
        if query:
            hits = await in_memory_thread(lambda: store.search(query, k=min(limit, 50)))
            return JSONResponse({"query": query, "items": [_memory_json(h) for h in hits]})
        items = await in_memory_thread(lambda: store.list(limit=limit, offset=offset))
        total = await in_memory_thread(store.count)
        return JSONResponse({"items": [_memory_json(i) for i in items], "total": total, "offset": offset})

    async def memory_forget(request: Request) -> Response:
        if (refusal := memory_guard(request)) is not None:
            return refusal
        turn_id = request.path_params["turn_id"]
        store = current_store()
        assert store is not None  # memory_guard refused the request otherwise
        if not await in_memory_thread(store.forget, turn_id):
            return JSONResponse({"error": f"no memory with id {turn_id!r}"}, status_code=404)
        return JSONResponse({"deleted": turn_id})

    async def memory_keys(request: Request) -> Response:
        """Derived keys (names, topics, observations) with their source turns; `q` filters by letters in the key."""
        if (refusal := memory_guard(request)) is not None:
            return refusal
        store = current_store()
        assert store is not None  # memory_guard refused the request otherwise
        if not hasattr(store, "keys"):
            return JSONResponse({"items": []})
        query = request.query_params.get("q", "").strip()[:100] or None
        turn_id = request.query_params.get("turn") or None
        keys = await in_memory_thread(lambda: store.keys(containing=query, turn_id=turn_id, limit=MEMORY_PAGE_MAX))
        return JSONResponse({"items": [{"kind": k.kind, "key": k.key, "turn_id": k.turn_id, "speaker": k.speaker,
                                        "text": k.text} for k in keys]})

    async def memory_forget_key(request: Request) -> Response:
        if (refusal := memory_guard(request)) is not None:
            return refusal
        store = current_store()
        assert store is not None  # memory_guard refused the request otherwise
        kind, key = request.path_params["kind"], request.path_params["key"]
        turn_id = request.query_params.get("turn") or None
        if kind not in KEY_KINDS or not hasattr(store, "forget_key"):
            return JSONResponse({"error": f"no {kind!r} keys here"}, status_code=404)
        removed = await in_memory_thread(store.forget_key, kind, key, turn_id)
        if not removed:
            return JSONResponse({"error": f"no {kind} key {key!r}"}, status_code=404)
        return JSONResponse({"deleted": removed})

    async def memory_wipe(request: Request) -> Response:
        if (refusal := memory_guard(request)) is not None:
            return refusal
        store = current_store()
        assert store is not None  # memory_guard refused the request otherwise
        count = await in_memory_thread(store.wipe)
        return JSONResponse({"deleted": count})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if config.on_start is not None:
            await config.on_start()
        try:
            yield
        finally:
            running = list(sessions)
            for task in running:
                task.cancel()
            if running:
                # Each session stores its last turns as it ends; then what they shared can close.
                await asyncio.wait(running, timeout=SHUTDOWN_WAIT_S)
            memory_thread.shutdown(wait=False, cancel_futures=True)
            if config.on_stop is not None:
                await config.on_stop()

    routes = [
        Route("/", index, methods=["GET"]),
        WebSocketRoute("/ws", conversation),
        Route("/api/memory", memory_list, methods=["GET"]),
        Route("/api/memory", memory_wipe, methods=["DELETE"]),
        Route("/api/memory/keys", memory_keys, methods=["GET"]),
        Route("/api/memory/keys/{kind:str}/{key:str}", memory_forget_key, methods=["DELETE"]),
        Route("/api/memory/{turn_id:str}", memory_forget, methods=["DELETE"]),
        Mount("/static", app=StaticFiles(directory=config.static_dir), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.sessions = sessions
    app.state.echo_rooms = echo_rooms
    return SecurityHeaders(app)  # type: ignore[return-value]


class SecurityHeaders:
    """Adds the page's security headers to every HTTP response (WebSockets pass through)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    def __getattr__(self, name: str) -> Any:
        return getattr(self.app, name)  # `state`, `routes` of the wrapped app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)


def _same_origin(conn: HTTPConnection) -> bool:
    """No Origin header (a non-browser client) or one naming this host: a page elsewhere can't drive us."""
    origin = conn.headers.get("origin")
    if not origin:
        return True
    return urlsplit(origin).netloc.lower() == conn.headers.get("host", "").lower()


async def _current_notices(
    notices: Sequence[dict[str, Any]] | Callable[[], Awaitable[Sequence[dict[str, Any]]]],
) -> Sequence[dict[str, Any]]:
    """The notices for a new connection; a failing check is logged, and the page gets none."""
    if not callable(notices):
        return notices
    try:
        return await notices()
    except Exception:  # a broken check must not stop the conversation
        log.exception("checking the notices for a new connection failed")
        return ()


def _denied_page(reason: str) -> HTMLResponse:
    body = (
        "<!doctype html><html><head><meta charset=utf-8><meta name=viewport content='width=device-width'>"
        "<title>convers: access token needed</title></head><body>"
        f"<h1>Access token needed</h1><p>{reason}</p>"
        "<p>Open the address that <code>convers serve</code> printed (it ends in <code>?token=...</code>).</p>"
        "</body></html>"
    )
    return HTMLResponse(body, status_code=401)


def _bounded(number: int) -> str:
    """A client's number as an error may quote it: a 1000-digit offset is not echoed in full."""
    text = str(number)
    return text if len(text) <= 24 else f"{text[:24]}... ({len(text)} digits)"


def _memory_json(item: Any) -> dict[str, Any]:
    """A stored turn or a search hit as JSON; tolerant of dataclasses, dicts and plain objects."""
    if dataclasses.is_dataclass(item) and not isinstance(item, type):
        data = {f.name: getattr(item, f.name) for f in dataclasses.fields(item)}
    elif isinstance(item, dict):
        data = dict(item)
    else:
        data = {k: getattr(item, k) for k in ("id", "text", "score", "role", "speaker", "time") if hasattr(item, k)}
    turn = data.pop("turn", None)
    if turn is not None:
        for key, value in _memory_json(turn).items():
            data.setdefault(key, value)
    out: dict[str, Any] = {}
    for key in ("id", "text", "role", "speaker", "time", "session", "score"):
        if key in data and data[key] is not None:
            value = data[key]
            out[key] = value.isoformat() if isinstance(value, datetime) else value
    if "score" in out:
        out["score"] = round(float(out["score"]), 4)
    return out
