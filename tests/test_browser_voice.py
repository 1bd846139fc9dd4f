"""A spoken conversation in headless Chromium through the real engine.

The fake microphone is a WAV of espeak-ng speech that Chromium loops: a question, a pause, then
"stop" spoken over the agent's long answer. Silero VAD and the voice a fresh install picks (`auto`:
faster-whisper with the packaged Whisper tiny.en, Piper with the packaged joe voice), with a scripted
LLM over HTTP, run behind `convers serve`'s own session runner and TLS server. The test reads the
page's WebSocket as well: what the server sent it, and what it reported back.
"""

from __future__ import annotations

import asyncio
import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from convers.app import wiring
from convers.audio import concat, resample, silence, write_wav
from convers.config import load_settings
from convers.contracts.audio import AudioFrame
from tests.browser_helpers import running_server
from tests.llm_server import Reply, ScriptedLlmServer
from tests.speech import SpeechMaker, closeness, speech, words  # noqa: F401
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


PIPER_RATE = 22050  # en_US-joe-medium speaks at 22050 Hz


@dataclass
class Wire:
    """The page's WebSocket as seen from the browser: every frame in order, with the loop time it was seen.

    Both directions share one sequence of positions, so "after the flush" is a position, not a time.
    """

    frames: list[tuple[str, float, Any]] = field(default_factory=list)  # (direction, at, payload)

    def attach(self, ws) -> None:
        loop = asyncio.get_running_loop()
        ws.on("framereceived", lambda payload: self.frames.append(("in", loop.time(), payload)))
        ws.on("framesent", lambda payload: self.frames.append(("out", loop.time(), payload)))

    async def wait_for(self, condition, timeout_s: float) -> None:
        async with asyncio.timeout(timeout_s):
            while not condition():
                await asyncio.sleep(0.05)

    def _json(self, direction: str) -> list[tuple[int, float, dict]]:
        return [
            (i, at, json.loads(payload))
            for i, (way, at, payload) in enumerate(self.frames)
            if way == direction and isinstance(payload, str)
        ]

    def events_received(self, kind: str) -> list[tuple[int, float, dict]]:
        return [item for item in self._json("in") if item[2].get("type") == kind]

    def played_sent(self, turn: int) -> list[tuple[int, float, int]]:
        return [(i, at, e["ms"]) for i, at, e in self._json("out") if e.get("type") == "played" and e.get("turn") == turn]

    def audio_received(self, turn: int) -> list[tuple[int, bytes]]:
        """Binary frames of `turn`: a header of turn and sequence number (uint32 each), then PCM16."""
        return [
            (i, payload[8:])
            for i, (way, _, payload) in enumerate(self.frames)
            if way == "in" and isinstance(payload, bytes) and len(payload) > 8 and struct.unpack_from("<I", payload)[0] == turn
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
                # Time for Whisper (about 0.5 s a decode, more with Chromium on the same cores) and the
                # first of Piper's sentences: the agent is speaking when "stop" comes.
                silence(9.0, 16000),
                # One interruption without a pause inside: "Stop, please. | That is enough" is two
                # finished sentences, and a fast decode of the first ends the turn at the comma.
                speech.frame("please stop talking now"),
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
                "memory.enabled": False,
            },
        )
        # stt.provider and tts.provider are left at their default, auto: what a fresh install runs.
        assert wiring.provider_name("stt", settings) == "faster-whisper"
        assert wiring.provider_name("tts", settings) == "piper"
        sessions = wiring.ServerSessions(settings)
        assert sessions.stt.name == "faster-whisper" and sessions.tts.name == "piper"
        wire = Wire()
        async with (
            running_server(
                sessions, tmp_path / "tls", output_sample_rate=sessions.tts.sample_rate, on_start=sessions.warm_up
            ) as server,
            browser(mic) as instance,
        ):
            page = await open_page(instance, server, on_websocket=wire.attach, viewport={"width": 420, "height": 860})
            # The server warms its models up before it accepts a connection (as `convers serve` does), so
            # the session listens at once; the user taps the circle once the page says it is listening.
            await wire.wait_for(lambda: any(e["state"] == "listening" for _, _, e in wire.events_received("state")), 60)
            await page.click("#orb")

            # Whisper hears the user's words, the reply is shown and its audio is played.
            await page.wait_for_selector(".msg.user:not(.partial)", timeout=30_000)
            heard = await page.inner_text(".msg.user")
            assert closeness(heard, "what is the weather like today") >= 0.9, heard
            await page.wait_for_selector('.msg.agent[data-turn="1"]:has-text("forecast")', timeout=30_000)
            if path := os.environ.get(SCREENSHOT_ENV):
                await asyncio.sleep(1.0)  # let the circle react to the agent's voice
                await page.screenshot(path=path)

            # "please stop" over the agent: barge-in, flush, and the page marks the turn cut.
            barge = await wait_for_event(data_dir, lambda e: e["event"] == "barge_in", 60)
            assert barge["turn"] == 1 and barge["played_ms"] > 300  # the browser really played turn 1
            await page.wait_for_selector('.msg.agent.interrupted[data-turn="1"]', timeout=10_000)
            cut = await wait_for_event(data_dir, lambda e: e["event"] == "reply_cut" and e["turn"] == 1, 5)
            assert cut["kept"] and len(cut["kept"]) < len("".join(LONG_ANSWER))

            # The next reply plays to the end in the browser.
            await wait_for_event(data_dir, lambda e: e["event"] == "played" and e["turn"] == 2, 60)
            await page.wait_for_selector('.msg.agent[data-turn="2"]:has-text("stop")', timeout=5_000)
            interruption = await page.locator(".msg.user").nth(1).inner_text()
    # The history keeps what was heard: the start of the answer, never the sentences after the cut
    # ("stop" comes about 7 s into a reply of about 25 s; how far in varies with the machine's speed).
    assert "".join(LONG_ANSWER).startswith(cut["kept"].rstrip(". ")), cut["kept"]
    assert "weekend" not in cut["kept"] and "Next week" not in cut["kept"], cut["kept"]
    assert words(interruption)[:2] == ["please", "stop"], interruption

    # The page was told the voice's own rate, and what it got for turn 1 is the reply in Piper's voice.
    (ready,) = [e for _, _, e in wire.events_received("ready")]
    assert ready["audio_out"]["sample_rate"] == PIPER_RATE
    turn_1 = b"".join(pcm for _, pcm in wire.audio_received(1))
    opening = AudioFrame(turn_1[: 5 * PIPER_RATE * 2], PIPER_RATE)  # "Well, the forecast says ..."
    spoken = set(words((await sessions.stt.transcribe(resample(opening, sessions.stt.sample_rate))).text))
    assert {"forecast", "sunny"} & spoken, spoken

    # No stale audio: after the flush of turn 1 no frame of it reached the page, and the page's
    # played reports for it stopped (one posted just before the flush may still be on its way).
    ((flush_index, flushed_at),) = [(i, at) for i, at, e in wire.events_received("flush") if e["turn"] == 1]
    assert wire.audio_received(1) and not [i for i, _ in wire.audio_received(1) if i > flush_index]
    reports = wire.played_sent(1)
    assert reports and not [ms for _, at, ms in reports if at > flushed_at + 0.5], reports
    assert max(ms for _, _, ms in reports) < len(turn_1) / 2 / PIPER_RATE * 1000
    # And turn 2 was played to the end.
    assert wire.audio_received(2) and wire.played_sent(2)
