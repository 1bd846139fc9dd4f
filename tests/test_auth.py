"""The access token: persisted privately, rotated on request, compared in constant time, and enforced."""

from __future__ import annotations

import stat
from pathlib import Path

import httpx
import pytest

from convers.transports.browser import auth
from tests.browser_helpers import TOKEN, EchoSession, running_server


def test_token_is_made_once_and_kept_private(tmp_path: Path) -> None:
    token = auth.load_or_create_token(tmp_path)
    assert len(token) >= 40
    path = auth.token_path(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert auth.load_or_create_token(tmp_path) == token  # survives a restart


def test_rotation_replaces_the_token(tmp_path: Path) -> None:
    old = auth.load_or_create_token(tmp_path)
    new = auth.rotate_token(tmp_path)
    assert new != old
    assert auth.load_or_create_token(tmp_path) == new
    assert stat.S_IMODE(auth.token_path(tmp_path).stat().st_mode) == 0o600


def test_loose_permissions_are_tightened(tmp_path: Path) -> None:
    token = auth.load_or_create_token(tmp_path)
    auth.token_path(tmp_path).chmod(0o644)
    assert auth.load_or_create_token(tmp_path) == token
    assert stat.S_IMODE(auth.token_path(tmp_path).stat().st_mode) == 0o600


@pytest.mark.parametrize(
    ("expected", "offered", "ok"),
    [("abc", "abc", True), ("abc", "abd", False), ("abc", "", False), ("abc", None, False), (None, None, True), ("abc", "abcd", False)],
)
def test_token_matches(expected: str | None, offered: str | None, ok: bool) -> None:
    assert auth.token_matches(expected, offered) is ok


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_no_auth_allowed_on_loopback(host: str) -> None:
    auth.check_no_auth(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.5", "myhost"])
def test_no_auth_refused_elsewhere(host: str) -> None:
    with pytest.raises(auth.AuthConfigError, match="--no-auth is refused"):
        auth.check_no_auth(host)


async def test_page_moves_token_into_cookie(tmp_path: Path) -> None:
    async with running_server(EchoSession(), tmp_path / "tls") as server:
        async with httpx.AsyncClient(base_url=server.base_url, verify=server.ssl_context) as client:
            refused = await client.get("/")
            assert refused.status_code == 401 and "access token" in refused.text.lower()
            wrong = await client.get("/", params={"token": "nope"})
            assert wrong.status_code == 401
            moved = await client.get("/", params={"token": TOKEN})
            assert moved.status_code == 303 and moved.headers["location"] == "/"
            cookie = moved.headers["set-cookie"].lower()
            for part in ("httponly", "secure", "samesite=strict", "convers_token="):
                assert part in cookie
            assert moved.headers["referrer-policy"] == "no-referrer"
            page = await client.get("/")  # the cookie jar now carries the token
            assert page.status_code == 200 and "<title>" in page.text
            assert "script-src" not in page.headers["content-security-policy"]  # default-src 'self' covers it


async def test_memory_api_needs_token(tmp_path: Path) -> None:
    async with running_server(EchoSession(), tmp_path / "tls", memory_store=object()) as server:
        async with httpx.AsyncClient(base_url=server.base_url, verify=server.ssl_context) as client:
            assert (await client.get("/api/memory")).status_code == 401
            assert (await client.delete("/api/memory")).status_code == 401
            assert (await client.delete("/api/memory/abc")).status_code == 401


async def test_the_token_never_reaches_the_request_log(tmp_path: Path, capfd) -> None:
    """With -v uvicorn logs every request and WebSocket path; `?token=` must come out redacted."""
    import websockets

    async with running_server(EchoSession(), tmp_path / "tls", log_level="info") as server:
        async with httpx.AsyncClient(base_url=server.base_url, verify=server.ssl_context) as client:
            assert (await client.get("/", params={"token": TOKEN})).status_code == 303
            await client.get("/", params={"Token": TOKEN, "x": "1"})
        ws = await websockets.connect(f"{server.ws_url}?token={TOKEN}", ssl=server.ssl_context)
        await ws.close()
    logged = capfd.readouterr()
    logged_text = logged.out + logged.err
    assert "token=[redacted]" in logged_text and "WebSocket /ws?token=[redacted]" in logged_text
    assert TOKEN not in logged_text
    assert "&x=1" in logged_text  # other parameters stay readable


def test_redact_leaves_other_text_alone() -> None:
    from convers.transports.browser.server import redact

    assert redact("GET /?token=abc&x=1 HTTP/1.1") == "GET /?token=[redacted]&x=1 HTTP/1.1"
    assert redact("/ws?access_token=abc") == "/ws?access_token=[redacted]"
    assert redact("a token=abc in a sentence") == "a token=abc in a sentence"
