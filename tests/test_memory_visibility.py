"""Memory that does not work is visible: on the page (a `memory` notice), in the memory API (why, not
"memory.enabled = false"), in `convers doctor`; the conversation goes on and no turn is dropped."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import httpx
import websockets
from click.testing import CliRunner

from convers.app import shared_memory as shared_memory_module
from convers.app.shared_memory import SharedMemory
from convers.cli import main
from convers.config import Settings, load_settings
from convers.contracts.memory import MemoryStatus
from convers.memory.conversation import CompanionMemory, MemoryOptions
from convers.memory.profile import ProfileFile
from convers.memory.store import SqliteMemoryStore
from tests.browser_helpers import TOKEN, EchoSession, hello, running_server
from tests.memory_doubles import WordHashEmbedder

DAMAGED = b"this is not an SQLite database, it was overwritten by something else" * 20


def settings_in(data_dir: Path) -> Settings:
    return load_settings(environ={}, cli={"data_dir": str(data_dir), "embedder.provider": "no-such-embedder"})


def damaged_data_dir(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    (data / "memory.db").write_bytes(DAMAGED)
    return data


async def test_a_damaged_memory_db_is_unavailable_with_why_and_left_untouched(tmp_path: Path) -> None:
    data = damaged_data_dir(tmp_path)
    shared = SharedMemory(settings_in(data))
    status = await shared.aopen()
    assert status.state == "unavailable"
    assert "damaged" in status.reason and str(data / "memory.db") in status.reason and "mv " in status.reason
    assert shared.for_session(None) is None  # the session runs without memory
    [notice] = shared.notices()
    assert notice.code == "memory" and "damaged" in notice.message
    assert (data / "memory.db").read_bytes() == DAMAGED  # never repaired or replaced behind the user's back


async def test_memory_off_in_settings_is_no_notice(tmp_path: Path) -> None:
    settings = load_settings(environ={}, cli={"data_dir": str(tmp_path), "memory.enabled": False})
    shared = SharedMemory(settings)
    assert (await shared.aopen()).state == "off"
    assert shared.notices() == []


async def test_the_page_is_told_and_the_api_says_why(tmp_path: Path) -> None:
    data = damaged_data_dir(tmp_path)
    shared = SharedMemory(settings_in(data))
    await shared.aopen()

    async def notices():
        return [notice.to_wire() for notice in shared.notices()]

    async with running_server(EchoSession(), tmp_path / "tls", memory=shared, notices=notices) as server:
        async with websockets.connect(f"{server.ws_url}?token={TOKEN}", ssl=server.ssl_context) as ws:
            await ws.send(hello())
            seen = []
            async with asyncio.timeout(10):
                while not any(e.get("code") == "memory" for e in seen):
                    message = await ws.recv()
                    if isinstance(message, str):
                        seen.append(json.loads(message))
            notice = next(e for e in seen if e.get("code") == "memory")
            assert notice["type"] == "notice" and "damaged" in notice["message"]
            # ... and the conversation goes on.
            await ws.send(json.dumps({"type": "text", "text": "still there?"}))
            async with asyncio.timeout(10):
                while True:
                    message = await ws.recv()
                    if isinstance(message, str) and json.loads(message).get("type") == "reply":
                        break
        async with httpx.AsyncClient(verify=server.ssl_context, headers={"authorization": f"Bearer {TOKEN}"}) as client:
            response = await client.get(f"{server.base_url}/api/memory")
    assert response.status_code == 503
    body = response.json()
    assert body["memory"] == "unavailable" and "damaged" in body["reason"]
    assert body["error"].startswith("memory is unavailable: ") and "enabled" not in body["error"]


def test_doctor_shows_the_memory_state_and_why(tmp_path: Path) -> None:
    data = damaged_data_dir(tmp_path)
    result = CliRunner().invoke(main, ["--data-dir", str(data), "--set", "embedder.provider=no-such-embedder",
                                       "doctor"])
    line = next(line for line in result.output.splitlines() if line.startswith("memory: "))
    assert line.startswith("memory: unavailable") and "damaged" in line, result.output


def test_doctor_on_a_fresh_data_directory_says_memory_works(tmp_path: Path) -> None:
    data = tmp_path / "fresh"
    result = CliRunner().invoke(main, ["--data-dir", str(data), "--set", "embedder.provider=no-such-embedder",
                                       "doctor"])
    line = next(line for line in result.output.splitlines() if line.startswith("memory: "))
    assert line.startswith(f"memory: on ({data / 'memory.db'}; recall by words only"), result.output


def test_serve_says_why_when_the_data_directory_cannot_be_written(tmp_path: Path) -> None:
    # A file where the data directory should be fails as a read-only one does (the tests run as root,
    # which may write anywhere): before the fix, a raw OSError traceback.
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    data = blocker / "data"
    result = CliRunner().invoke(main, ["--data-dir", str(data), "serve", "--host", "127.0.0.1"])
    assert result.exit_code == 1
    assert f"cannot write to the data directory {data}" in result.output
    assert "--data-dir" in result.output and "Traceback" not in result.output
    assert not isinstance(result.exception, OSError)


async def test_a_full_disk_at_start_is_a_notice_but_recall_and_writes_go_on_trying(tmp_path: Path, monkeypatch) -> None:
    class Usage:
        free = 12 * 1024

    monkeypatch.setattr(shared_memory_module.shutil, "disk_usage", lambda path: Usage())
    shared = SharedMemory(settings_in(tmp_path / "data"))
    status = await shared.aopen()
    assert status.state == "degraded" and "full" in status.reason and "12 KiB free" in status.reason
    assert shared.store is not None and shared.for_session(None) is not None  # recall still works
    [notice] = shared.notices()
    assert notice.code == "memory" and "full" in notice.message
    await shared.aclose()


class DiskFullFor(SqliteMemoryStore):
    """Its first `failures` writes fail as SQLite does on a full disk."""

    def __init__(self, *args, failures: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.failures = failures

    def add_many(self, turns, **kwargs):  # every write goes through it (add too)
        if self.failures > 0:
            self.failures -= 1
            raise sqlite3.OperationalError("database or disk is full")
        return super().add_many(turns, **kwargs)


async def test_a_full_disk_mid_conversation_is_told_and_the_turn_is_stored_later_without_a_new_one(
    tmp_path: Path,
) -> None:
    told: list[MemoryStatus] = []

    async def tell(status: MemoryStatus) -> None:
        told.append(status)

    embedder = WordHashEmbedder()
    store = DiskFullFor(tmp_path / "memory.db", embedder=embedder, failures=2)
    memory = CompanionMemory(store, ProfileFile(tmp_path / "profile.json"), embedder=embedder,
                             options=MemoryOptions(write_retry_s=0.01), on_status=tell)
    memory.remember("s1", "user", "Sam", "my bike is blue")
    async with asyncio.timeout(10):
        while len(told) < 2:  # no later turn: the held-back one is retried on its own
            await asyncio.sleep(0.01)
    assert [s.state for s in told] == ["degraded", "on"]  # told once on failure (not per retry), once on recovery
    assert "disk is full" in told[0].reason and "1 turn(s) are kept" in told[0].reason
    assert [t.text for t in store.list(10)] == ["my bike is blue"]
    await memory.aclose()
