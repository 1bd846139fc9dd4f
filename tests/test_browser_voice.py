"""A spoken conversation in headless Chromium through the real engine.

The fake microphone is a WAV of espeak-ng speech that Chromium loops: a question, a pause, then
"stop" spoken over the agent's long answer. Silero VAD, pocketsphinx, a scripted LLM over HTTP and
espeak-ng TTS run behind `convers serve`'s own session runner and TLS server.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from convers.audio import concat, silence, write_wav
from convers.cli import wiring
from convers.config import load_settings
from tests.browser_helpers import TOKEN, running_server
from tests.llm_server import Reply, ScriptedLlmServer
from tests.speech import SpeechMaker, speech  # noqa: F401
from tests.test_browser_e2e import SCREENSHOT_ENV, browser, open_page

pytestmark = [pytest.mark.browser, pytest.mark.slow]

LONG_ANSWER = [
    "Well, the forecast says it will be sunny this morning.",
    " Clouds will come in from the west around noon.",
    " In the evening there may be light rain, so take an umbrella with you.",
    " Tomorrow looks much the same, with a bit more wind in the afternoon.",
    " The weekend should be warmer, good for a walk in the park.",
    " Next week is hard to say, the models do not agree yet.",
]


def events_of(data_dir: Path) -> list[dict]:
    found = []
    for path in (data_dir / "events").glob("*.jsonl"):
        found.extend(json.loads(line) for line in path.read_text().splitlines() if line.strip())
    return found


async def wait_for_event(data_dir: Path, predicate, timeout_s: float) -> dict:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        for event in events_of(data_dir):
            if predicate(event):
                return event
        if asyncio.get_running_loop().time() > deadline:
            kinds = [e["event"] for e in events_of(data_dir)]
            raise AssertionError(f"event not seen in {timeout_s}s; saw {kinds}")
        await asyncio.sleep(0.1)


async def test_spoken_conversation_with_barge_in_in_the_browser(tmp_path: Path, speech: SpeechMaker) -> None:
    mic = tmp_path / "mic.wav"
    write_wav(
        mic,
        concat(
            [
                silence(0.5, 16000),
                speech.frame("what is the weather like today"),
                silence(7.0, 16000),
                speech.frame("stop please, that is enough"),
                silence(20.0, 16000),
            ]
        ),
    )
    data_dir = tmp_path / "data"
    def answer(request) -> Reply:
        # By content, not by order: the server warms the LLM up with a request of its own first.
        # The second user turn (the history then holds two) is the interruption.
        user_turns = [m for m in request.messages if m.get("role") == "user"]
        return Reply(["Okay, I will stop."]) if len(user_turns) >= 2 else Reply(LONG_ANSWER, tokens_per_s=40)

    async with ScriptedLlmServer(responder=answer) as llm:
        settings = load_settings(
            environ={},
            cli={
                "data_dir": str(data_dir),
                "llm.base_url": llm.base_url,
                "vad.provider": "silero",
                "stt.provider": "pocketsphinx",
                "tts.provider": "espeak-ng",
                "memory.enabled": False,
            },
        )
        sessions = wiring.ServerSessions(settings)
        async with (
            running_server(sessions, tmp_path / "tls", output_sample_rate=sessions.tts.sample_rate) as server,
            browser(mic) as instance,
        ):
            page = await open_page(instance, server, viewport={"width": 420, "height": 860})
            await page.click("#orb")

            # The user's words arrive as a transcript, the reply is shown and its audio is played.
            await page.wait_for_selector(".msg.user:not(.partial)", timeout=30_000)
            heard = (await page.inner_text(".msg.user")).lower()
            assert {"weather", "today", "like", "what"} & set(heard.split()), heard
            await page.wait_for_selector('.msg.agent[data-turn="1"]:has-text("forecast")', timeout=30_000)
            if path := os.environ.get(SCREENSHOT_ENV):
                await asyncio.sleep(1.0)  # let the circle react to the agent's voice
                await page.screenshot(path=path)

            # "stop please" over the agent: barge-in, flush, and the page marks the turn cut.
            barge = await wait_for_event(data_dir, lambda e: e["event"] == "barge_in", 40)
            assert barge["turn"] == 1 and barge["played_ms"] > 300  # the browser really played turn 1
            await page.wait_for_selector('.msg.agent.interrupted[data-turn="1"]', timeout=10_000)
            cut = await wait_for_event(data_dir, lambda e: e["event"] == "reply_cut" and e["turn"] == 1, 5)
            assert cut["kept"] and len(cut["kept"]) < len("".join(LONG_ANSWER))

            # The next reply plays to the end in the browser.
            await wait_for_event(data_dir, lambda e: e["event"] == "played" and e["turn"] == 2, 40)
            await page.wait_for_selector('.msg.agent[data-turn="2"]:has-text("stop")', timeout=5_000)
    assert "Tomorrow" not in cut["kept"]
