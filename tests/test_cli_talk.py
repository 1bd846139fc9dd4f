"""`convers talk` end to end: spoken WAV in through the loopback transport, transcript and reply printed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.llm_server import Reply, ScriptedLlmServer
from tests.speech import SpeechMaker, closeness, speech  # noqa: F401

pytestmark = pytest.mark.slow


def test_talk_hears_a_spoken_question_and_answers(tmp_path: Path, speech: SpeechMaker) -> None:
    wav = speech.wav("what is the weather like today")
    options = json.dumps({"wav": str(wav), "finish_after_s": 6})
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVERS_")}
    # Every request gets the same answer: the warm-up before listening asks the model too.
    answer = ScriptedLlmServer(responder=lambda _request: Reply(["It is sunny", " and warm."]))
    with answer.running_in_thread() as server:
        # stt and tts at their default, auto: Whisper tiny.en and Piper joe from the packages.
        result = subprocess.run(
            [sys.executable, "-m", "convers", "--data-dir", str(tmp_path), "--set", f"llm.base_url={server.base_url}",
             "--set", f"transport.options={options}", "talk", "--transport", "loopback", "--no-memory"],
            capture_output=True, text=True, timeout=120, env=env,
        )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines.index("loading the models ...") < next(i for i, line in enumerate(lines) if line.startswith("listening"))
    you = next(line for line in lines if line.startswith("you: "))
    assert closeness(you.removeprefix("you: "), "what is the weather like today") >= 0.9, you
    assert "Juniper: It is sunny and warm." in result.stdout
    assert "Traceback" not in result.stderr


def test_talk_without_a_microphone_is_a_clear_error(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVERS_")}
    result = subprocess.run(
        [sys.executable, "-m", "convers", "--data-dir", str(tmp_path), "--set", "llm.base_url=http://127.0.0.1:9",
         "--set", "stt.provider=pocketsphinx", "--set", "transport.input_device=no-such-microphone",
         "talk", "--no-memory"],
        capture_output=True, text=True, timeout=60, env=env,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "microphone" in result.stderr.lower() or "portaudio" in result.stderr.lower() or "device" in result.stderr.lower()
