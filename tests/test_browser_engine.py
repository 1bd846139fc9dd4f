"""The real engine (`convers serve`'s session runner) behind the browser transport, over TLS.

Scripted OpenAI-compatible LLM on 127.0.0.1, espeak-ng voice, energy VAD, memory in a temp dir:
typed text must come back as reply deltas, turn-tagged audio and state changes, and the
engine must take `played` reports without complaint.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest
import websockets

from convers.config import load_settings
from convers.transports.browser.protocol import decode_audio
from tests.browser_helpers import TOKEN, hello, running_server
from tests.llm_server import ScriptedLlmServer, echo_responder

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


async def report_played(ws, audio: list, rate: int) -> None:
    """Like the page: report what has been played (here: all audio received) every 100 ms."""
    while True:
        heard_ms = sum(len(pcm) for *_, pcm in audio) * 1000 // (2 * rate)
        await ws.send(json.dumps({"type": "played", "turn": audio[0][0], "ms": heard_ms}))
        await asyncio.sleep(0.1)


async def test_typed_turn_through_the_real_engine(tmp_path: Path) -> None:
    from convers.app import wiring
    from convers.cli.serve import build_app

    async with ScriptedLlmServer(responder=echo_responder) as llm:
        settings = load_settings(
            cli={
                "data_dir": str(tmp_path / "data"),
                "llm.base_url": llm.base_url,
                "tts.provider": "espeak-ng",
                "vad.provider": "energy",
                "stt.provider": "pocketsphinx",
                "memory.enabled": False,
                "events.enabled": False,
            },
            environ={},
        )
        sessions = wiring.ServerSessions(settings)
        app = build_app(settings, TOKEN)  # what `convers serve` runs, minus uvicorn
        rate = sessions.tts.sample_rate
        async with running_server(sessions, tmp_path / "tls", output_sample_rate=rate) as server:
            url = f"{server.ws_url}?token={TOKEN}"
            async with websockets.connect(url, ssl=server.ssl_context, max_queue=None) as ws:
                await ws.send(hello())
                await ws.send(json.dumps({"type": "text", "text": "the sky is green"}))
                text, states, audio, reported = "", [], [], False
                async with asyncio.timeout(60):
                    while not (reported and states[-1:] == ["listening"]):
                        message = await ws.recv()
                        if isinstance(message, bytes):
                            audio.append(decode_audio(message))
                        else:
                            event = json.loads(message)
                            assert event["type"] != "error", event
                            if event["type"] == "ready":
                                assert event["audio_out"]["sample_rate"] == rate
                            elif event["type"] == "reply":
                                text += event["delta"]
                            elif event["type"] == "state":
                                states.append(event["state"])
                        if not reported and "the sky is green" in text and audio:
                            reported = True
                            reporter = asyncio.create_task(report_played(ws, audio, rate))
                reporter.cancel()
                assert len({turn for turn, _, _ in audio}) == 1
                assert [seq for _, seq, _ in audio] == list(range(len(audio)))
                assert states[:1] == ["listening"] and "thinking" in states and "speaking" in states
        assert app is not None
