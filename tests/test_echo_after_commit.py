"""A user turn is echoed to the client only once its row is committed; the reply never waits for it."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from datetime import UTC
from pathlib import Path

from convers.engine.reply.prompt import PromptBuilder
from convers.engine.session import Session, SessionOptions, SessionParts
from convers.events import EventLog
from convers.memory.conversation import CompanionMemory, MemoryOptions
from convers.memory.profile import ProfileFile
from convers.memory.store import SqliteMemoryStore
from tests.doubles import (
    FakeClock,
    LoudnessVad,
    RecordingTransport,
    ScriptedLlm,
    ToneTts,
    mic_frame,
)
from tests.memory_doubles import BlockedEmbedder, WordHashEmbedder
from tests.test_session_voice import ScriptedStt


class GatedStore(SqliteMemoryStore):
    """Holds every write until `open` is set (a commit that takes its time); or fails every write."""

    def __init__(self, *args, fail: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.open = threading.Event()
        self.waiting = threading.Event()
        self.fail = fail

    def add_many(self, turns, **kwargs):
        if self.fail:
            raise sqlite3.OperationalError("database or disk is full")
        self.waiting.set()
        self.open.wait(10)
        return super().add_many(turns, **kwargs)


def memory_on(store: SqliteMemoryStore, tmp_path: Path) -> CompanionMemory:
    return CompanionMemory(store, ProfileFile(tmp_path / "profile.json"), embedder=store.embedder,
                           options=MemoryOptions(recall_floor=0.0))


def session_with(memory, transport, events: EventLog | None = None, **parts) -> Session:
    return Session(
        transport,
        SessionParts(llm=parts.pop("llm", ScriptedLlm(["Noted", " the blue door."])), memory=memory, **parts),
        PromptBuilder(persona="P"),
        events or EventLog(None),
        options=SessionOptions(greet=False),
    )


def rows(db: Path) -> list[str]:
    with sqlite3.connect(db) as conn:  # a second connection sees only what is committed
        return [text for (text,) in conn.execute("SELECT text FROM turns WHERE role = 'user'")]


async def until(predicate, timeout_s: float = 5.0):
    async with asyncio.timeout(timeout_s):
        while not (result := predicate()):
            await asyncio.sleep(0.005)
        return result


async def test_a_typed_turn_is_echoed_only_after_its_commit_and_the_reply_does_not_wait(tmp_path: Path) -> None:
    db = tmp_path / "memory.db"
    store = GatedStore(db, embedder=WordHashEmbedder())
    memory = memory_on(store, tmp_path)
    transport = RecordingTransport()
    session = session_with(memory, transport)
    reply = await session.user_said("my door is blue")
    await reply  # the whole reply streamed while the write was held
    await until(store.waiting.is_set)
    assert transport.reply_text(1) == "Noted the blue door."
    assert transport.events("transcript") == []  # not committed, so not echoed
    assert rows(db) == []
    store.open.set()
    echo = (await until(lambda: transport.events("transcript")))[0]
    assert echo == {"type": "transcript", "text": "my door is blue", "final": True, "turn": 1, "stored": True}
    assert rows(db) == ["my door is blue"]  # what the echo promised
    await session.close()
    await memory.aclose()


async def test_a_failing_store_gets_an_echo_at_once_that_says_not_stored(tmp_path: Path) -> None:
    store = GatedStore(tmp_path / "memory.db", embedder=WordHashEmbedder(), fail=True)
    memory = memory_on(store, tmp_path)
    transport = RecordingTransport()
    session = session_with(memory, transport)
    await (await session.user_said("hello there"))
    echo = (await until(lambda: transport.events("transcript")))[0]
    assert echo["stored"] is False and echo["text"] == "hello there" and echo["turn"] == 1
    await session.close()
    await memory.aclose()


async def test_a_store_slower_than_the_wait_gets_an_echo_that_says_not_stored(tmp_path: Path) -> None:
    store = GatedStore(tmp_path / "memory.db", embedder=WordHashEmbedder())
    memory = memory_on(store, tmp_path)
    transport = RecordingTransport()
    session = session_with(memory, transport)
    session.options.echo_commit_wait_s = 0.05
    await session.user_said("slow disk today")
    echo = (await until(lambda: transport.events("transcript")))[0]
    assert echo["stored"] is False
    store.open.set()  # the write itself was not given up: it lands later
    await session.close()
    await memory.aclose()
    assert rows(tmp_path / "memory.db") == ["slow disk today"]


async def test_without_memory_the_echo_says_not_stored() -> None:
    transport = RecordingTransport()
    session = session_with(None, transport)
    await (await session.user_said("hi"))
    assert (await until(lambda: transport.events("transcript")))[0]["stored"] is False


async def test_a_spoken_turn_is_echoed_only_after_its_commit(tmp_path: Path) -> None:
    db = tmp_path / "memory.db"
    store = GatedStore(db, embedder=WordHashEmbedder())
    memory = memory_on(store, tmp_path)
    transport = RecordingTransport()
    clock = FakeClock()
    session = session_with(memory, transport, EventLog(None, clock=clock), tts=ToneTts(),
                           stt=ScriptedStt(["what is the weather"]), vad=LoudnessVad(), llm=ScriptedLlm(["It is sunny."]))
    for loud, frames in ((False, 10), (True, 40), (False, 30)):  # 20 ms frames: speech, then 0.6 s of silence
        for _ in range(frames):
            clock.now += 0.02
            await session._on_audio(mic_frame(loud))
            await asyncio.sleep(0)
    await until(lambda: transport.audio(1))  # the reply is speaking
    await until(store.waiting.is_set)
    assert transport.events("transcript") == []
    store.open.set()
    echo = (await until(lambda: transport.events("transcript")))[0]
    assert echo["text"] == "what is the weather" and echo["stored"] is True
    assert rows(db) == ["what is the weather"]
    await session.close()
    await memory.aclose()


async def test_a_stuck_embedder_does_not_hold_the_commit_and_the_backfill_embeds_the_turn_later(tmp_path: Path) -> None:
    embedder = BlockedEmbedder()  # a model still loading: every embedding waits for `release`
    store = SqliteMemoryStore(tmp_path / "memory.db", embedder=embedder)
    memory = CompanionMemory(store, ProfileFile(tmp_path / "profile.json"), embedder=embedder,
                             options=MemoryOptions(recall_floor=0.0, embed_deadline_s=0.05))
    committed = memory.remember("s1", "user", "Sam", "the spare key is under the pot")
    async with asyncio.timeout(5):  # far less than the embedder's 10 s
        assert await committed is True
    assert rows(tmp_path / "memory.db") == ["the spare key is under the pot"]
    assert unembedded(tmp_path / "memory.db") == 1
    embedder.release.set()
    await memory.aclose()  # waits for the backfill that was started beside the writes
    assert unembedded(tmp_path / "memory.db") == 0


def unembedded(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT count(*) FROM turns WHERE embedding IS NULL").fetchone()[0]


class CountingStore(SqliteMemoryStore):
    """Counts the look-ups of earlier user turns (how a write finds the user's name)."""

    lookups = 0

    def list(self, *args, **kwargs):
        if kwargs.get("role") == "user":
            self.lookups += 1
        return super().list(*args, **kwargs)


async def test_writes_look_the_users_name_up_once_not_before_every_commit(tmp_path: Path) -> None:
    store = CountingStore(tmp_path / "memory.db", embedder=WordHashEmbedder())
    memory = memory_on(store, tmp_path)
    for text in ("one thing", "another thing", "my name is Ana", "a last thing"):
        assert await memory.remember("s1", "user", "user", text) is True
    assert store.lookups == 1
    await memory.aclose()
    with SqliteMemoryStore(tmp_path / "memory.db") as reopened:
        speakers = [t.speaker for t in reopened.list(10, newest_first=False)]
    assert speakers == ["user", "user", "user", "Ana"]  # a learned name is used from the next turn on


def test_a_vector_attached_after_the_commit_is_searched_like_any_other(tmp_path: Path) -> None:
    from datetime import datetime, timezone

    from convers.contracts.memory import MemoryTurn

    embedder = WordHashEmbedder()
    with SqliteMemoryStore(tmp_path / "memory.db", embedder=embedder) as store:
        store.add(MemoryTurn("a", "s", datetime.now(UTC), "Sam", "user", "I play the violin"))
        assert store.search("violin", 1, vector=embedder.embed_sync(["violin"])[0], mode="vector")  # index loaded
        late = MemoryTurn("b", "s", datetime.now(UTC), "Sam", "user", "my bicycle is yellow")
        store.add_many([late], embed=False)
        assert unembedded(tmp_path / "memory.db") == 1
        vector = embedder.embed_sync([late.text])[0]
        assert store.attach_vector("b", vector) is True
        assert store.attach_vector("b", vector) is False  # it has one now
        assert store.attach_vector("nope", vector) is False
        assert unembedded(tmp_path / "memory.db") == 0
        hits = store.search("bicycle", 1, vector=embedder.embed_sync(["yellow bicycle"])[0], mode="vector", floor=0.0)
        assert [h.id for h in hits] == ["b"]


async def test_a_commit_does_not_queue_behind_a_busy_worker_pool(tmp_path: Path) -> None:
    memory = memory_on(SqliteMemoryStore(tmp_path / "memory.db", embedder=WordHashEmbedder()), tmp_path)
    release = threading.Event()
    loop = asyncio.get_running_loop()
    # Every shared worker busy, as a burst of typed turns kept it with one embedding per turn's recall.
    blockers = [loop.run_in_executor(None, release.wait, 10) for _ in range(64)]
    try:
        async with asyncio.timeout(5):
            assert await memory.remember("s1", "user", "Sam", "the meeting moved to Friday") is True
        assert rows(tmp_path / "memory.db") == ["the meeting moved to Friday"]
    finally:
        release.set()
        await asyncio.gather(*blockers)
    await memory.aclose()
    assert unembedded(tmp_path / "memory.db") == 0  # the vector followed once the pool was free
