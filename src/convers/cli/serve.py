"""`convers serve`: the browser front-end over HTTPS on the LAN, and `convers token` to manage its access token."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from convers.cli.context import settings_from
from convers.config import Settings
from convers.echo_cancelling import canceller_factory
from convers.native_memory import limit_heap_arenas
from convers.private_files import private_dir

log = logging.getLogger(__name__)


@click.command()
@click.option("--host", help="Interface to listen on (default: settings server.host, 0.0.0.0 = every LAN address).")
@click.option("--port", type=int, help="Port (default: settings server.port, 8443).")
@click.option("--cert", type=click.Path(path_type=Path), help="Your own TLS certificate (PEM); default: a self-signed one in DATA_DIR/tls.")
@click.option("--key", type=click.Path(path_type=Path), help="Private key (PEM) for --cert.")
@click.option("--no-auth", is_flag=True, help="No access token (only allowed with --host 127.0.0.1).")
@click.option("--rotate-token", is_flag=True, help="Make a new access token first: old links and cookies stop working.")
@click.pass_context
def serve(
    ctx: click.Context,
    host: str | None,
    port: int | None,
    cert: Path | None,
    key: Path | None,
    no_auth: bool,
    rotate_token: bool,
) -> None:
    """Talk to the agent from a browser on this machine or a phone on the same network."""
    from convers.transports.browser.auth import (
        AuthConfigError,
        check_no_auth,
        load_or_create_token,
    )
    from convers.transports.browser.auth import rotate_token as make_new_token
    from convers.transports.browser.server import certificate_for, open_urls

    flags: dict[str, Any] = {"server.host": host, "server.port": port, "server.cert": cert, "server.key": key}
    if no_auth:
        flags["server.auth"] = False
    settings = settings_from(ctx, **flags)
    server = settings.server
    if not server.auth:
        try:
            check_no_auth(server.host)
        except AuthConfigError as error:
            raise click.UsageError(str(error)) from None
    data_dir = settings.data_path
    token: str | None = None
    try:
        private_dir(data_dir)
        if server.auth:
            token = make_new_token(data_dir) if rotate_token else load_or_create_token(data_dir)
        certificate = certificate_for(data_dir, server.host, server.cert, server.key)
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    except OSError as error:
        # A read-only or full data directory: the token and the certificate cannot be kept.
        raise click.ClickException(data_dir_message(data_dir, error)) from None

    # Before the providers' worker threads start: one arena per core, not eight (native_memory.py).
    limit_heap_arenas(os.cpu_count() or 2)
    app = build_app(settings, token)
    click.echo("convers is loading its models...")

    def listening() -> None:
        # Printed once the port accepts connections (after the models are warm): the first click works.
        click.echo("convers is listening. Open one of these (the browser will warn about the self-signed")
        click.echo("certificate the first time; accept it for this address):")
        for url in open_urls(server.host, server.port, token):
            click.echo(f"  {url}")
        if token is not None:
            click.echo("Anyone with this link can talk to the agent and read its memory: `convers token rotate` revokes it.")

    run_server(app, settings, certificate, on_listening=listening)


def data_dir_message(data_dir: Path, error: OSError) -> str:
    """What to do when the data directory cannot be written (read-only, full, a file in its place)."""
    where = error.filename or data_dir
    return (
        f"cannot write to the data directory {data_dir}: {error.strerror or error} ({where}). "
        "convers keeps its access token, certificate and memory there: make it writable, free some disk "
        "space, or choose another with --data-dir"
    )


def build_app(settings: Settings, token: str | None) -> Any:
    """The ASGI app with the engine's per-connection session runner and the shared memory wired in.

    The heavy providers are built once here and shared by every connection; the memory store and
    the models are opened and loaded off the event loop by the app's start hook.
    """
    from convers.app import wiring
    from convers.transports.browser.app import (
        DEFAULT_OUTPUT_SAMPLE_RATE,
        BrowserAppConfig,
        create_app,
    )

    try:
        sessions = wiring.ServerSessions(settings)
    except Exception as error:  # a provider that cannot start is a message, not a traceback
        raise click.ClickException(f"cannot start the conversation engine: {error}") from None
    voice_rate = getattr(getattr(sessions, "tts", None), "sample_rate", None)

    async def notices() -> list[dict[str, str]]:
        return [*await asyncio.to_thread(llm_notices, settings, sessions.llm_name), *sessions.notices()]

    config = BrowserAppConfig(
        token=token,
        # The page resamples whatever rate it is told; sending the voice's own rate avoids a resample.
        output_sample_rate=voice_rate or DEFAULT_OUTPUT_SAMPLE_RATE,
        notices=notices,
        on_start=sessions.warm_up,
        on_stop=sessions.aclose,
        echo_canceller=canceller_factory(settings),
    )
    return create_app(sessions, config, memory=sessions.memory)


def llm_notices(settings: Settings, name: str) -> list[dict[str, str]]:
    """An error the page shows on connect when the LLM the server uses (`name`, auto resolved) is not usable now.

    Asked again on every connection (blocking: a probe of the server), so that a model server
    started after `convers serve` clears the notice on the next connect.
    """
    from convers.cli.doctor import check_provider

    availability = check_provider("llm", name, settings)
    if availability.usable:
        return []
    log.warning("LLM %s is not usable: %s", name, availability.detail)
    return [{"code": "no_llm", "message": f"No language model is answering ({name}): {availability.detail}"}]


def run_server(app: Any, settings: Settings, certificate: Any, on_listening: Callable[[], None] = lambda: None) -> None:
    """Runs uvicorn until stopped; `on_listening` is called once its socket accepts connections."""
    import uvicorn

    from convers.transports.browser.server import uvicorn_config

    class Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            # The app's start hook (warming the models) runs first, then the socket is bound.
            await super().startup(sockets)
            if self.started:
                on_listening()

    level = logging.getLogger().getEffectiveLevel()
    log_level = "info" if level <= logging.INFO else "warning"
    Server(uvicorn_config(app, settings.server.host, settings.server.port, certificate, log_level)).run()


@click.group()
def token() -> None:
    """The access token in the link `convers serve` prints."""


@token.command("show")
@click.pass_context
def token_show(ctx: click.Context) -> None:
    """Print the current token (made if there is none)."""
    from convers.transports.browser.auth import load_or_create_token

    click.echo(load_or_create_token(settings_from(ctx).data_path))


@token.command("rotate")
@click.pass_context
def token_rotate(ctx: click.Context) -> None:
    """Make a new token: every old link and browser cookie stops working (restart `convers serve`)."""
    from convers.transports.browser.auth import rotate_token

    click.echo(rotate_token(settings_from(ctx).data_path))
