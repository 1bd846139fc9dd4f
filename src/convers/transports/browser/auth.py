"""The access token that keeps other people on the LAN out of the conversation and the memory.

One random token per data directory, kept in a 0600 file, printed in the URL at start; the page
moves it into an HttpOnly cookie. Comparisons are constant-time.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
from pathlib import Path

from convers.private_files import private_dir

TOKEN_FILE = "access_token"
COOKIE_NAME = "convers_token"
# 32 random bytes, URL-safe: 43 characters, far past guessing over a network.
TOKEN_BYTES = 32
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


class AuthConfigError(ValueError):
    """An access-control setting that would expose the server, with what to do instead."""


def token_path(data_dir: Path) -> Path:
    return data_dir / TOKEN_FILE


def load_or_create_token(data_dir: Path) -> str:
    """The persisted token; a new one is made (mode 0600) when there is none or the file is empty."""
    path = token_path(data_dir)
    try:
        token = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        token = ""
    if token:
        _tighten(path)
        return token
    return rotate_token(data_dir)


def rotate_token(data_dir: Path) -> str:
    """Replaces the token: every old URL and cookie stops working."""
    token = secrets.token_urlsafe(TOKEN_BYTES)
    private_dir(data_dir)
    path = token_path(data_dir)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(token + "\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return token


def _tighten(path: Path) -> None:
    # A token file someone copied with loose permissions is re-locked rather than trusted as is.
    if path.stat().st_mode & 0o077:
        os.chmod(path, 0o600)


def token_matches(expected: str | None, offered: str | None) -> bool:
    """Constant-time comparison; no token configured (auth off) accepts everything."""
    if expected is None:
        return True
    if not offered:
        return False
    return hmac.compare_digest(expected.encode("utf-8"), offered.encode("utf-8"))


def is_local_host(host: str) -> bool:
    """Whether binding to `host` keeps the server on this machine."""
    if host in LOCAL_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_no_auth(host: str) -> None:
    """Running without a token is only safe when nobody else can reach the port."""
    if not is_local_host(host):
        raise AuthConfigError(
            f"--no-auth is refused with --host {host}: anyone on the network could talk to the agent and "
            "read its memory. Bind to 127.0.0.1 (--host 127.0.0.1) or keep the access token."
        )
