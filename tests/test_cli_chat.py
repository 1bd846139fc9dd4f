"""`convers chat` end to end: a real subprocess talking to a real (scripted) OpenAI-compatible server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.llm_server import Reply, ScriptedLlmServer, echo_responder


def start_chat(server: ScriptedLlmServer, data_dir: Path, *extra: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVERS_")}
    return subprocess.Popen(
        [sys.executable, "-m", "convers", "--data-dir", str(data_dir), "--set", f"llm.base_url={server.base_url}",
         "chat", "--no-memory", *extra],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def read_until(process: subprocess.Popen[str], needle: str, timeout_s: float = 20.0) -> str:
    """Reads stdout char by char until `needle` shows up (the reply streams without newlines)."""
    assert process.stdout is not None
    os.set_blocking(process.stdout.fileno(), False)
    seen = ""
    deadline = time.monotonic() + timeout_s
    while needle not in seen:
        if time.monotonic() > deadline or process.poll() is not None and not seen.endswith(needle):
            chunk = process.stdout.read() or ""
            seen += chunk
            if needle in seen:
                break
            raise AssertionError(f"{needle!r} not seen; output so far: {seen!r}; stderr: {process.stderr.read() if process.poll() is not None else ''}")
        chunk = process.stdout.read(1)
        if chunk:
            seen += chunk
        else:
            time.sleep(0.01)
    return seen


def test_chat_streams_replies_and_leaves_on_end_of_input(tmp_path: Path) -> None:
    with ScriptedLlmServer(responder=echo_responder).running_in_thread() as server:
        process = start_chat(server, tmp_path)
        assert process.stdin is not None
        read_until(process, "you> ")
        process.stdin.write("the quick brown fox\n")
        process.stdin.flush()
        output = read_until(process, "the quick brown fox")
        assert "Juniper> the quick brown fox" in output
        process.stdin.close()
        assert process.wait(timeout=20) == 0
    # The event log of the session was written under the data directory.
    logs = list((tmp_path / "events").glob("*.jsonl"))
    assert logs and '"llm_first_token"' in logs[0].read_text()


def test_ctrl_c_stops_the_reply_not_the_program(tmp_path: Path) -> None:
    slow = Reply([f" word{i}" for i in range(400)], tokens_per_s=20)
    with ScriptedLlmServer([slow], responder=echo_responder).running_in_thread() as server:
        process = start_chat(server, tmp_path)
        assert process.stdin is not None
        read_until(process, "you> ")
        process.stdin.write("tell me a long story\n")
        process.stdin.flush()
        read_until(process, "word3")
        process.send_signal(signal.SIGINT)
        read_until(process, "[interrupted]")
        # The server saw the client hang up: the stream was closed, generation stopped.
        request = server.chat_requests()[0]
        assert request.finished.wait(10)
        assert request.client_disconnected and request.tokens_sent < 400
        process.stdin.write("still there\n")
        process.stdin.flush()
        read_until(process, "still there")
        process.stdin.write("/quit\n")
        process.stdin.flush()
        assert process.wait(timeout=20) == 0


def test_unreachable_llm_is_a_clear_message_and_the_chat_goes_on(tmp_path: Path) -> None:
    # Twice: a 500 to a request with tools is asked once more without them (llama-server without
    # --jinja answers 500 to the tools field), so the server fails both.
    with ScriptedLlmServer([Reply(status=500), Reply(status=500)], responder=echo_responder).running_in_thread() as server:
        process = start_chat(server, tmp_path)
        assert process.stdin is not None
        read_until(process, "you> ")
        process.stdin.write("hello\n")
        process.stdin.flush()
        read_until(process, "! ")
        read_until(process, "you> ")
        process.stdin.write("again\n")
        process.stdin.flush()
        read_until(process, "Juniper> again")
        process.stdin.close()
        assert process.wait(timeout=20) == 0


@pytest.mark.parametrize(
    ("args", "needle"),
    [(["--set", "llm.temperature=9", "config", "show"], "llm.temperature = 9"),
     (["--set", "nonsense", "config", "show"], "KEY=VALUE")],
)
def test_bad_settings_on_the_command_line_are_errors(args: list[str], needle: str, tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "convers", "--data-dir", str(tmp_path), *args],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode != 0 and needle in result.stderr
    assert "Traceback" not in result.stderr


def test_config_show_reflects_environment(tmp_path: Path) -> None:
    env = {**os.environ, "CONVERS_AGENT__NAME": "Robin"}
    result = subprocess.run([sys.executable, "-m", "convers", "--data-dir", str(tmp_path), "config", "show"],
                            capture_output=True, text=True, timeout=30, env=env)
    assert result.returncode == 0 and 'name = "Robin"' in result.stdout
