"""Running the app on uvicorn with TLS, and the addresses to tell the user."""

from __future__ import annotations

import copy
import logging
import re
from pathlib import Path
from typing import Any

import uvicorn
from starlette.types import ASGIApp

from convers.transports.browser.tls import CertificatePaths, lan_addresses

# uvicorn closes the connection (1009) past this; between 1 MiB and this the app answers with an
# `error` event instead, so a too-large message costs the client one message, not the session.
WS_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
# Phones sleep their radios; a ping every 20 s keeps NAT and Wi-Fi power saving from dropping us.
WS_PING_INTERVAL_S = 20.0
WS_PING_TIMEOUT_S = 20.0


# `?token=...` in a logged path: uvicorn logs it for every page load and WebSocket with `-v`.
_QUERY_SECRET = re.compile(r"([?&](?:token|access_token)=)[^&#\s\"']*", re.IGNORECASE)


def redact(text: str) -> str:
    """`text` with the values of token query parameters replaced by [redacted]."""
    return _QUERY_SECRET.sub(r"\1[redacted]", text)


class RedactTokens(logging.Filter):
    """Removes access tokens from uvicorn's request and WebSocket log lines before they are written.

    The access formatter builds its line from `record.args`, so the arguments are redacted, not
    only the message.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(arg) if isinstance(arg, str) else arg for arg in record.args)
        elif isinstance(record.args, dict):
            record.args = {key: redact(arg) if isinstance(arg, str) else arg for key, arg in record.args.items()}
        return True


def log_config() -> dict[str, Any]:
    """uvicorn's own logging setup, with every handler redacting tokens."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["redact_tokens"] = {"()": RedactTokens}
    for handler in config["handlers"].values():
        handler.setdefault("filters", []).append("redact_tokens")
    return config


def websocket_protocol() -> Any:
    """uvicorn's WebSocket protocol, closing a client that stops answering pings with 4408.

    A client that stops reading stops answering pings too, and uvicorn then closes it 1011
    ("keepalive ping timeout"); docs/protocol.md promises 4408 ("client stopped reading") for that,
    the same code as when its send queue fills. The close frame is written before the connection
    closes, so a client that reads again later finds 4408.
    """
    try:
        from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
    except ImportError:  # an older uvicorn: its own keepalive close (1011) stands
        return "auto"
    from convers.transports.browser.websocket_transport import CLOSE_CLIENT_STALLED

    class StalledClientProtocol(WebSocketsSansIOProtocol):
        """uvicorn's sans-I/O WebSocket protocol with the keepalive close code of docs/protocol.md."""

        def keepalive_timeout(self) -> None:
            self.pong_timer = None
            self.pending_ping_payload = None
            if self.close_sent or self.transport.is_closing():
                return
            self.conn.fail(CLOSE_CLIENT_STALLED, "client stopped reading")
            self.transport.write(b"".join(self.conn.data_to_send()))
            self.close_sent = True
            self.transport.close()

    return StalledClientProtocol


def uvicorn_config(
    app: ASGIApp,
    host: str,
    port: int,
    certificate: CertificatePaths | None,
    log_level: str = "warning",
    ping_interval_s: float = WS_PING_INTERVAL_S,
    ping_timeout_s: float = WS_PING_TIMEOUT_S,
) -> uvicorn.Config:
    """The uvicorn settings convers runs with; `certificate` None serves plain HTTP (tests only)."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        ssl_certfile=str(certificate.cert) if certificate else None,
        ssl_keyfile=str(certificate.key) if certificate else None,
        ws=websocket_protocol(),
        ws_max_size=WS_MAX_MESSAGE_BYTES,
        ws_ping_interval=ping_interval_s,
        ws_ping_timeout=ping_timeout_s,
        log_level=log_level,
        log_config=log_config(),
        lifespan="on",
        server_header=False,
    )


def open_urls(host: str, port: int, token: str | None, scheme: str = "https") -> list[str]:
    """The addresses to open: every LAN address when bound to all interfaces, else the bound host."""
    if host in {"0.0.0.0", "::", ""}:
        hosts = [*lan_addresses(), "localhost"]
    elif host in {"127.0.0.1", "::1"}:
        hosts = ["localhost"]
    else:
        hosts = [host]
    suffix = f"/?token={token}" if token else "/"
    return [f"{scheme}://{_bracket(h)}:{port}{suffix}" for h in hosts]


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def certificate_for(data_dir: Path, host: str, cert: Path | None, key: Path | None) -> CertificatePaths:
    """The user's certificate when given, else the self-signed one in data_dir/tls (made as needed)."""
    from convers.transports.browser.tls import (
        check_user_certificate,
        ensure_certificate,
    )

    if cert is not None or key is not None:
        if cert is None or key is None:
            raise ValueError("--cert and --key go together: pass both PEM files, or neither for a self-signed certificate")
        return check_user_certificate(cert, key)
    return ensure_certificate(data_dir / "tls", extra_hosts=[host])
