"""10,000 fuzzed messages at the real engine over one connection; it must answer after every burst.

Not part of the default run (about a minute and a half on 2 cores): run it with
`CONVERS_LONG_FUZZ=1 pytest tests/test_protocol_fuzz_long.py`. The bounded version is in
tests/test_protocol_fuzz.py. The messages come from the same hypothesis strategies, drawn once and
derandomized, so every run sends the same 10,000.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

import pytest
import websockets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convers.config import load_settings
from tests.browser_helpers import TOKEN, hello, running_server
from tests.llm_server import ScriptedLlmServer, echo_responder
from tests.test_protocol import MALFORMED
from tests.test_protocol_fuzz import audio, wire_texts

pytestmark = [
    pytest.mark.skipif(not os.environ.get("CONVERS_LONG_FUZZ"), reason="long fuzz run: set CONVERS_LONG_FUZZ=1"),
    pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed"),
]

BURST = 100
BURSTS = 100


def fuzzed_bursts() -> list[list[str | bytes]]:
    drawn: list[list[str | bytes]] = []

    @settings(max_examples=BURSTS, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.lists(wire_texts | audio, min_size=BURST, max_size=BURST))
    def collect(burst: list[str | bytes]) -> None:
        drawn.append(burst)

    collect()
    return drawn


async def test_ten_thousand_fuzzed_messages_and_the_real_engine_answers_after_every_burst(tmp_path: Path) -> None:
    from convers.app import wiring

    bursts = fuzzed_bursts()
    # The malformed kinds of the table test come first, each followed by a question.
    bursts = [[message] for message, _ in MALFORMED] + bursts
    sent = sum(len(b) for b in bursts)
    assert sent >= BURST * BURSTS, f"hypothesis drew only {sent} messages"
    async with ScriptedLlmServer(responder=echo_responder) as llm:
        config = load_settings(
            cli={"data_dir": str(tmp_path / "data"), "llm.base_url": llm.base_url, "tts.provider": "espeak-ng",
                 "vad.provider": "energy", "stt.provider": "pocketsphinx", "events.enabled": False},
            environ={},
        )
        sessions = wiring.ServerSessions(config)
        async with running_server(sessions, tmp_path / "tls", output_sample_rate=sessions.tts.sample_rate) as server:
            url = f"{server.ws_url}?token={TOKEN}"
            async with websockets.connect(url, ssl=server.ssl_context, max_queue=None, max_size=None) as ws:
                await ws.send(hello())
                errors: list[dict] = []
                for number, burst in enumerate(bursts):
                    for message in burst:
                        await ws.send(message)
                    await ws.send(hello())  # a fuzzed hello may have changed the rate
                    question = f"question {number}: are you still there?"
                    await ws.send(json.dumps({"type": "text", "text": question}))
                    # The echo may come after the reply's first words (it waits for the commit).
                    replies: dict[int, str] = {}
                    turn = None
                    async with asyncio.timeout(60):
                        while turn is None or question not in replies.get(turn, ""):
                            message = await ws.recv()
                            if isinstance(message, bytes):
                                continue
                            event = json.loads(message)
                            if event["type"] == "error":
                                errors.append(event)
                                assert event["code"] not in ("session_failed", "reply_failed"), event
                            elif event["type"] == "transcript" and event.get("text") == question:
                                turn = event["turn"]
                                assert event["stored"] is True, event  # memory lived through it too
                            elif event["type"] == "reply":
                                replies[event["turn"]] = replies.get(event["turn"], "") + event["delta"]
    assert ws.close_code in (1000, None)
    assert not any(e["code"] == "session_failed" for e in errors)
