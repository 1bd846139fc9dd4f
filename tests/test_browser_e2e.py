"""The page end to end in headless Chromium (fake microphone from a WAV file) against the echo double."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from convers.contracts.transport import InboundAudio, InboundText
from tests.browser_helpers import TOKEN, EchoSession, RunningServer, running_server

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
if not Path(CHROMIUM).exists():  # pragma: no cover - depends on the machine
    pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)", allow_module_level=True)
playwright_api = pytest.importorskip("playwright.async_api")

# Set CONVERS_SCREENSHOT=docs/screenshot.png to save a picture of the page mid-conversation.
SCREENSHOT_ENV = "CONVERS_SCREENSHOT"


def chromium_args(wav: Path, fake_ui: bool = True) -> list[str]:
    args = [
        "--no-sandbox",
        "--disable-gpu",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}",
        "--autoplay-policy=no-user-gesture-required",
        "--ignore-certificate-errors",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
    ]
    if fake_ui:
        args.append("--use-fake-ui-for-media-stream")
    return args


@pytest.fixture
def mic_wav(tmp_path: Path) -> Path:
    """Three seconds of a 300 Hz tone: the fake microphone loops it."""
    path = tmp_path / "mic.wav"
    if shutil.which("sox") is None:
        pytest.skip("sox is needed to make the fake microphone file")
    subprocess.run(["sox", "-n", "-r", "48000", "-c", "1", "-b", "16", str(path), "synth", "3", "sine", "300", "vol", "0.5"], check=True)
    return path


@contextlib.asynccontextmanager
async def browser(wav: Path, fake_ui: bool = True) -> AsyncIterator[object]:
    async with playwright_api.async_playwright() as pw:
        instance = await pw.chromium.launch(executable_path=CHROMIUM, args=chromium_args(wav, fake_ui), headless=True)
        try:
            yield instance
        finally:
            await instance.close()


async def open_page(instance, server: RunningServer, on_websocket=None, **context_options):
    """A new page on the server, connected; `on_websocket(ws)` sees its WebSocket from the first frame."""
    context = await instance.new_context(ignore_https_errors=True, **context_options)
    page = await context.new_page()
    page.on("console", lambda msg: print(f"[page {msg.type}] {msg.text}"))
    page.on("pageerror", lambda error: print(f"[page error] {error}"))
    if on_websocket is not None:
        page.on("websocket", on_websocket)
    await page.goto(f"{server.base_url}/?token={TOKEN}")
    assert "token" not in page.url  # moved into the cookie
    await page.wait_for_selector('#conn[data-state="connected"]')
    return page


async def say(page, text: str) -> None:
    await page.fill("#text-input", text)
    await page.click("#text-form button[type=submit]")


async def test_conversation_in_the_browser(tmp_path: Path, mic_wav: Path) -> None:
    double = EchoSession(reply_audio_s=0.6)
    loop = asyncio.get_running_loop()
    async with running_server(double, tmp_path / "tls") as server, browser(mic_wav) as instance:
        page = await open_page(instance, server, viewport={"width": 420, "height": 860})

        # Tap the circle: microphone audio arrives as 20 ms frames of 16 kHz PCM16.
        await page.click("#orb")
        frames = await double.wait_for(lambda: len(double.events(InboundAudio)) >= 25 and double.events(InboundAudio))
        assert {f.frame.sample_rate for f in frames} == {16000}
        assert {f.frame.samples for f in frames} == {320}
        loudest = max(max(abs(int.from_bytes(f.frame.pcm[i : i + 2], "little", signed=True)) for i in range(0, 640, 2)) for f in frames[5:])
        assert loudest > 3000  # the fake mic's tone, not silence
        await page.wait_for_selector(".msg.user.partial")  # the double's partial transcript is shown

        # Typed text: the reply is shown and its audio is played to the end (played events arrive).
        await say(page, "hello there")
        await page.wait_for_selector('.msg.agent[data-turn="1"]:has-text("You said: hello there")')
        await double.wait_for(lambda: any(ms >= 580 for ms in double.played(1)))
        reports = double.played(1)
        assert reports == sorted(reports) and max(reports) <= 600

        # A long turn, flushed mid-way: playback of it stops at once, and late frames of it never play.
        transport = double.transports[0]
        await transport.send_event({"type": "state", "state": "speaking"})
        await transport.send_event({"type": "reply", "turn": 2, "delta": "This is a long answer that will be cut off"})
        await double.speak(transport, 2, 3.0)
        await double.wait_for(lambda: any(ms >= 300 for ms in double.played(2)))
        if path := os.environ.get(SCREENSHOT_ENV):
            await page.screenshot(path=path)
        await transport.flush(2)
        flushed_at = loop.time()
        await double.speak(transport, 2, 0.5, start_seq=1000)  # late frames of the flushed turn
        await asyncio.sleep(1.5)
        # Reports posted before the flush reached the page may still be in flight for a moment.
        assert double.played(2, since=flushed_at + 0.5) == []
        assert max(double.played(2)) < 2000
        await page.wait_for_selector('.msg.agent.interrupted[data-turn="2"]')

        # The next turn plays normally.
        await double.speak(transport, 3, 0.5)
        await double.wait_for(lambda: any(ms >= 480 for ms in double.played(3)))

        # A malformed message gets a visible error and the same session keeps going.
        await page.evaluate("window.convers.sendRaw('{not json')")
        await page.wait_for_selector("#banner:not([hidden]) >> text=not JSON")
        await say(page, "still there?")
        await page.wait_for_selector('.msg.agent:has-text("You said: still there?")')
        assert len(double.transports) == 1 and double.finished == []
        assert InboundText("still there?") in double.events(InboundText)


async def test_two_browsers_two_sessions(tmp_path: Path, mic_wav: Path) -> None:
    double = EchoSession(reply_audio_s=0.2)
    async with running_server(double, tmp_path / "tls") as server, browser(mic_wav) as instance:
        first = await open_page(instance, server)
        second = await open_page(instance, server)
        await say(first, "one")
        await say(second, "two")
        await first.wait_for_selector('.msg.agent:has-text("You said: one")')
        await second.wait_for_selector('.msg.agent:has-text("You said: two")')
        assert await first.locator('.msg.agent:has-text("You said: two")').count() == 0
        await first.context.close()
        await double.wait_for(lambda: len(double.finished) == 1)
        await say(second, "still two")
        await second.wait_for_selector('.msg.agent[data-turn="2"]:has-text("You said: still two")')
        assert len(double.finished) == 1


async def test_reconnects_after_the_connection_drops(tmp_path: Path, mic_wav: Path) -> None:
    double = EchoSession(reply_audio_s=0.2)
    async with running_server(double, tmp_path / "tls") as server, browser(mic_wav) as instance:
        page = await open_page(instance, server)
        await double.transports[0].close()
        await page.wait_for_selector('#conn[data-state="offline"]')
        await page.wait_for_selector('#conn[data-state="connected"]', timeout=10000)
        await say(page, "back again")
        await page.wait_for_selector('.msg.agent:has-text("You said: back again")')
        assert len(double.transports) == 2


async def test_visible_errors_for_no_llm_and_refused_mic(tmp_path: Path, mic_wav: Path) -> None:
    notice = {"code": "no_llm", "message": "nothing answers at http://127.0.0.1:8080/v1"}
    async with running_server(EchoSession(), tmp_path / "tls", notices=[notice]) as server, browser(mic_wav, fake_ui=False) as instance:
        page = await open_page(instance, server)
        await page.wait_for_selector("#banner:not([hidden]) >> text=No language model")
        await page.click("#orb")  # no permission was granted to this context
        await page.wait_for_selector("#banner:not([hidden]) >> text=Microphone access was refused")


async def test_page_without_token_is_refused(tmp_path: Path, mic_wav: Path) -> None:
    async with running_server(EchoSession(), tmp_path / "tls") as server, browser(mic_wav) as instance:
        context = await instance.new_context(ignore_https_errors=True)
        page = await context.new_page()
        response = await page.goto(server.base_url + "/")
        assert response is not None and response.status == 401
        assert await page.locator("text=Access token needed").count() == 1


async def test_the_page_can_ask_the_server_to_cancel_its_echo(tmp_path: Path, mic_wav: Path) -> None:
    """The setting for speakers whose browser cancellation fails: the page says `aec: false` and sends
    what it plays beside its microphone, so the server's canceller gets the exact reference."""
    import numpy as np

    from tests.test_echo_cancelling import CountingCanceller

    double = EchoSession(reply_audio_s=1.0)
    async with running_server(double, tmp_path / "tls", echo_canceller=CountingCanceller) as server, \
            browser(mic_wav) as instance:
        context = await instance.new_context(ignore_https_errors=True)
        await context.add_init_script("localStorage.setItem('convers.serverEcho', '1')")
        page = await context.new_page()
        page.on("pageerror", lambda error: print(f"[page error] {error}"))
        await page.goto(f"{server.base_url}/?token={TOKEN}")
        await page.wait_for_selector('#conn[data-state="connected"]')
        assert await page.is_checked("#server-echo")
        await page.click("#orb")
        frames = await double.wait_for(lambda: len(double.events(InboundAudio)) >= 25 and double.events(InboundAudio))
        assert {f.frame.sample_rate for f in frames} == {16000}
        transport = double.transports[0]
        canceller = transport.echo.canceller
        # The fake microphone's tone reached the canceller as the microphone channel.
        heard = np.frombuffer(b"".join(canceller.captured[-50:]), dtype="<i2")
        assert np.abs(heard).max() > 3000
        # Silence played so far; then the agent speaks and the reference channel carries it.
        before = len(canceller.rendered)
        await double.speak(transport, 1, 1.0)
        await double.wait_for(lambda: any(ms >= 800 for ms in double.played(1)))
        played = np.frombuffer(b"".join(canceller.rendered[before:]), dtype="<i2")
        assert np.abs(played).max() > 2000, "what the page played did not reach the reference channel"
        # The tab names its echo room: when it reconnects (here the server closed the connection) and
        # when it is reloaded, the server hands the same canceller back instead of a new one.
        room = await page.evaluate("sessionStorage.getItem('convers.echoRoom')")
        assert isinstance(room, str) and len(room) == 32
        echo = transport.echo
        await transport.close()
        again = await double.wait_for(lambda: len(double.transports) > 1 and double.transports[1], timeout_s=15)
        assert again.echo is echo
        await page.reload()
        await page.wait_for_selector('#conn[data-state="connected"]')
        reloaded = await double.wait_for(lambda: len(double.transports) > 2 and double.transports[2], timeout_s=15)
        assert reloaded.echo is echo
        assert await page.evaluate("sessionStorage.getItem('convers.echoRoom')") == room
