"""A spoken question answered through a tool, in headless Chromium through the real engine.

The fake microphone asks about the weather; the scripted LLM (over HTTP) calls `web_search`, which
asks a fake SearXNG on 127.0.0.1; the LLM's second request carries the search result, and its answer
quotes it. Silero VAD, faster-whisper tiny.en and Piper, as a fresh install runs them; the recorder
is on, so the page shows its dot and the turn is saved.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from convers.app import wiring
from convers.audio import concat, silence, write_wav
from convers.config import load_settings
from tests.browser_helpers import running_server
from tests.llm_server import Reply, ScriptedLlmServer
from tests.searxng_server import FakeSearxng
from tests.speech import SpeechMaker, speech  # noqa: F401
from tests.test_browser_e2e import browser, open_page
from tests.test_browser_voice import Wire, wait_for_event

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SNOW = "Heavy snow is expected in Oslo all afternoon."


def answer(request) -> Reply:
    """Calls web_search when tools are offered and no result is in yet; then answers from the result."""
    body = request.body if isinstance(request.body, dict) else {}
    results = [m for m in request.messages if m.get("role") == "tool"]
    if results:
        found = json.loads(results[-1]["content"]).get("result", "nothing")
        return Reply(["The search says: ", found.split(":", 1)[-1].split("(")[0].strip()])
    if not body.get("tools"):
        return Reply(["Hello."])  # the server's own warm-up request
    call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "web_search", "arguments": ""}}
    return Reply(
        [
            "Let me check.",
            {"tool_calls": [call]},
            {"tool_calls": [{"index": 0, "function": {"arguments": '{"query": "weather'}}]},
            {"tool_calls": [{"index": 0, "function": {"arguments": ' in Oslo"}'}}]},
        ],
        finish_reason="tool_calls",
    )


async def test_a_spoken_question_is_answered_through_web_search(tmp_path: Path, speech: SpeechMaker) -> None:
    mic = tmp_path / "mic.wav"
    write_wav(mic, concat([silence(0.5, 16000), speech.frame("what is the weather like today"), silence(30.0, 16000)]))
    data_dir = tmp_path / "data"
    results = [{"title": "Oslo weather", "content": SNOW, "url": "https://weather.example/oslo"}]
    async with ScriptedLlmServer(responder=answer) as llm, FakeSearxng(results) as searx:
        settings = load_settings(
            environ={},
            cli={
                "data_dir": str(data_dir),
                "llm.base_url": llm.base_url,
                "vad.provider": "silero",
                "memory.enabled": False,
                "tools.searxng_url": searx.base_url,
                "recorder.enabled": True,
            },
        )
        sessions = wiring.ServerSessions(settings)
        wire = Wire()
        async with (
            running_server(
                sessions, tmp_path / "tls", output_sample_rate=sessions.tts.sample_rate, on_start=sessions.warm_up
            ) as server,
            browser(mic) as instance,
        ):
            page = await open_page(instance, server, on_websocket=wire.attach, viewport={"width": 420, "height": 860})
            await page.wait_for_selector("#recording:not([hidden])", timeout=10_000)
            await wire.wait_for(lambda: any(e["state"] == "listening" for _, _, e in wire.events_received("state")), 60)
            await page.click("#orb")
            await page.wait_for_selector(f'.msg.agent[data-turn="1"]:has-text("{SNOW[:-1]}")', timeout=60_000)
            result = await wait_for_event(data_dir, lambda e: e["event"] == "tool_result", 5)
            await wait_for_event(data_dir, lambda e: e["event"] == "played" and e["turn"] == 1, 60)
            shown = await page.inner_text('.msg.agent[data-turn="1"]')
    assert result["name"] == "web_search"
    assert "oslo" in searx.queries[0]["q"][0].lower() and searx.queries[0]["format"] == ["json"]
    assert shown.startswith("Let me check.") and SNOW[:-1] in shown
    # The second request carried the result as a tool message, quoted.
    second = [r for r in llm.chat_requests() if any(m.get("role") == "tool" for m in r.messages)][0]
    assert SNOW in json.loads(second.messages[-1]["content"])["result"]
    # The recorder saved the turn: the question's audio, the spoken answer, and the sidecar.
    (sidecar,) = (data_dir / "recordings").glob("*/0001.json")
    saved = json.loads(sidecar.read_text())
    assert "weather" in saved["transcript"].lower() and SNOW[:-1] in saved["agent_text"]
    assert sidecar.with_name("0001-user.wav").stat().st_size > 0 and sidecar.with_name("0001-agent.wav").stat().st_size > 0
