"""CompanionMemory: background writes, bounded recall, greetings, name learning, digests, reflection."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timezone
from pathlib import Path

from convers.config import Settings
from convers.contracts.memory import ConversationMemory, MemoryTurn
from convers.memory.conversation import CompanionMemory, MemoryOptions
from convers.memory.profile import ProfileFile
from convers.memory.reflection import MEMO_FILE, Reflection
from convers.memory.store import SqliteMemoryStore
from tests.doubles import ScriptedLlm
from tests.memory_doubles import BlockedEmbedder, FlakyEmbedder, QueryPathEmbedder, WordHashEmbedder


def make(tmp_path: Path, embedder=None, llm=None, **options) -> CompanionMemory:
    embedder = embedder or WordHashEmbedder()
    store = SqliteMemoryStore(tmp_path / "memory.db", embedder=embedder)
    return CompanionMemory(
        store, ProfileFile(tmp_path / "profile.json"), embedder=embedder, llm=llm,
        options=MemoryOptions(recall_floor=0.0, **options),
    )


def past_turn(i: int, text: str, session: str = "old", role: str = "user") -> MemoryTurn:
    return MemoryTurn(f"p{i}", session, datetime(2025, 1, 1, 10, i, tzinfo=UTC), "Sam", role, text)  # type: ignore[arg-type]


async def test_implements_the_protocol_and_drains_writes_on_close(tmp_path: Path) -> None:
    memory = make(tmp_path)
    assert isinstance(memory, ConversationMemory)
    memory.remember("s1", "user", "Sam", "My sister Ana moved to Lisbon")
    memory.remember("s1", "assistant", "Juniper", "How exciting for her!")
    await memory.aclose()
    with SqliteMemoryStore(tmp_path / "memory.db") as store:
        assert [t.text for t in store.list(10, newest_first=False)] == [
            "My sister Ana moved to Lisbon", "How exciting for her!"]


async def test_recall_finds_earlier_turns_but_not_the_ones_still_in_the_rolling_buffer(tmp_path: Path) -> None:
    memory = make(tmp_path, recall_k=3)
    memory.store.add(past_turn(1, "My sister Ana moved to Lisbon"))
    memory.remember("s1", "user", "Sam", "Ana phoned me from Lisbon today")
    await memory.settled()
    hits = await memory.recall("Where does Ana live now? Lisbon?")
    assert [h.id for h in hits] == ["p1"]
    await memory.aclose()


async def test_the_words_recall_waits_for_take_the_embedders_query_path(tmp_path: Path) -> None:
    embedder = QueryPathEmbedder()
    memory = make(tmp_path, embedder=embedder, recall_k=3)
    memory.store.add(past_turn(1, "My sister Ana moved to Lisbon"))
    await memory.settled()
    hits = await memory.recall("Where does Ana live now?")
    assert [h.id for h in hits] == ["p1"]
    # The question once, on the query path (beside the store's warm-up question); the stored turn
    # went the background way.
    assert embedder.queries.count("Where does Ana live now?") == 1
    assert "My sister Ana moved to Lisbon" not in embedder.queries
    assert memory.store.search("Lisbon sister", 1)[0].id == "p1"  # the store's own embedding of a question too
    assert embedder.queries[-1] == "Lisbon sister"
    await memory.aclose()


async def test_recall_with_a_stuck_embedder_answers_by_words_without_waiting(tmp_path: Path) -> None:
    embedder = BlockedEmbedder()
    store = SqliteMemoryStore(tmp_path / "memory.db", embedder=WordHashEmbedder())
    store.add(past_turn(1, "The dog is called Biscuit"))
    memory = CompanionMemory(store, ProfileFile(tmp_path / "profile.json"), embedder=embedder,
                             options=MemoryOptions(recall_floor=0.0, embed_deadline_s=0.05))
    hits = await memory.recall("what is Biscuit up to")
    assert embedder.started.is_set() and not embedder.release.is_set()  # still stuck, yet we answered
    assert [h.id for h in hits] == ["p1"]
    embedder.release.set()
    await memory.aclose()


async def test_embedder_down_then_back_fills_vectors_in_the_background(tmp_path: Path) -> None:
    flaky = FlakyEmbedder(down=True)
    memory = make(tmp_path, embedder=flaky, backfill_retry_s=0.0)
    memory.remember("s1", "user", "Sam", "I started learning the cello")
    await memory.settled()
    assert memory.store.stats().unembedded == 1  # stored anyway
    flaky.down = False
    memory.remember("s1", "user", "Sam", "It is hard but fun")
    await memory.settled()
    # (the backfill runs beside the write queue, so the writes never wait for the embedder)
    assert memory.store.stats().unembedded == 0  # the later write triggered the backfill
    await memory.aclose()


async def test_first_visit_introduces_itself_and_asks_the_name(tmp_path: Path) -> None:
    memory = make(tmp_path)
    text = await memory.greeting("Juniper")
    assert "I'm Juniper" in text and "your name" in text
    memory.remember("s1", "assistant", "Juniper", text)
    memory.remember("s1", "user", "user", "sam")  # STT output: lower case, just the name
    await memory.aclose()
    assert ProfileFile(tmp_path / "profile.json").load().name == "Sam"


async def test_return_visit_welcomes_back_by_name_recalled_from_memory(tmp_path: Path) -> None:
    memory = make(tmp_path)
    memory.store.add(past_turn(1, "Hi! My name is Priya."))
    memory.store.add(past_turn(2, "Nice to meet you, Priya.", role="assistant"))
    text = await memory.greeting("Juniper")
    assert text.startswith("Welcome back, Priya")
    await memory.aclose()


async def test_return_visit_uses_the_profile_name_and_picks_up_a_thread(tmp_path: Path) -> None:
    ProfileFile(tmp_path / "profile.json").update("name", "Sam")
    llm = ScriptedLlm(["Welcome back, Sam! ", "How did the interview go?"])
    memory = make(tmp_path, llm=llm)
    memory.store.add(past_turn(1, "I have a job interview on Friday"))
    text = await memory.greeting("Juniper")
    assert text == "Welcome back, Sam! How did the interview go?"
    assert "job interview on Friday" in llm.prompts[0][1].content
    await memory.aclose()


async def test_greeting_falls_back_to_a_template_when_the_model_fails(tmp_path: Path) -> None:
    ProfileFile(tmp_path / "profile.json").update("name", "Sam")
    memory = make(tmp_path, llm=ScriptedLlm([], fail="server down"))
    memory.store.add(past_turn(1, "I have a job interview on Friday"))
    assert (await memory.greeting("Juniper")).startswith("Welcome back, Sam!")
    await memory.aclose()


async def test_name_correction_overrides_and_a_guess_does_not(tmp_path: Path) -> None:
    memory = make(tmp_path)
    memory.remember("s1", "user", "Sam", "I'm Sam, by the way")
    await memory.settled()
    memory.remember("s1", "user", "Sam", "I'm Hungry")  # looks like a name, but one is known: ignored
    memory.remember("s1", "user", "Sam", "actually, call me Sammy")
    await memory.aclose()
    assert ProfileFile(tmp_path / "profile.json").load().name == "Sammy"


async def test_long_user_turns_also_get_a_digest(tmp_path: Path) -> None:
    llm = ScriptedLlm(["Sam's sister Ana moved to Lisbon in May."])
    memory = make(tmp_path, llm=llm, digest_min_words=5)
    long_turn = "so my sister Ana, you know, finally moved to Lisbon back in May after years of talking about it"
    memory.remember("s1", "user", "Sam", long_turn)
    memory.remember("s1", "user", "Sam", "short one")
    await memory.aclose()
    with SqliteMemoryStore(tmp_path / "memory.db") as store:
        digests = store.list(10, kind="digest")
        assert [d.text for d in digests] == ["Sam's sister Ana moved to Lisbon in May."]
        assert store.count() == 2  # raw turns kept
        assert store.forget(store.list(10, kind="turn", newest_first=False)[0].id)
        assert store.list(10, kind="digest") == []  # forgetting the turn forgets its digest


async def test_a_model_that_cannot_summarise_is_not_asked_for_digests(tmp_path: Path) -> None:
    llm = ScriptedLlm(["I'm sorry, I am not able to provide a response."])
    llm.can_summarise = False  # type: ignore[attr-defined]  # what the packaged 135M model says of itself
    memory = make(tmp_path, llm=llm, digest_min_words=3)
    memory.remember("s1", "user", "Sam", "this turn is long enough to be summarised by the model")
    await memory.aclose()
    assert llm.prompts == []
    with SqliteMemoryStore(tmp_path / "memory.db") as store:
        assert store.count() == 1 and store.list(10, kind="digest") == []


async def test_digest_failure_keeps_the_raw_turn(tmp_path: Path) -> None:
    memory = make(tmp_path, llm=ScriptedLlm([], fail="model crashed"), digest_min_words=3)
    memory.remember("s1", "user", "Sam", "this turn is long enough to be summarised by the model")
    await memory.aclose()
    with SqliteMemoryStore(tmp_path / "memory.db") as store:
        assert store.count() == 1 and store.list(10, kind="digest") == []


async def test_reflection_writes_a_journal_and_a_memo_used_in_the_profile_text(tmp_path: Path) -> None:
    llm = ScriptedLlm(["Sam seemed happy."])
    memory = make(tmp_path, llm=llm)
    memory.reflection = Reflection(llm, tmp_path, "Juniper")
    memory.remember("s9", "user", "Sam", "Today was great")
    await memory.aclose()
    journal = tmp_path / "journal"
    entries = sorted(p.name for p in journal.glob("*-s9.md"))
    assert len(entries) == 1 and "Sam seemed happy." in (journal / entries[0]).read_text()
    assert (journal / MEMO_FILE).read_text().strip() == "Sam seemed happy."
    assert "Sam seemed happy." in memory.profile_text()


async def test_profile_text_follows_edits_and_survives_a_broken_file(tmp_path: Path) -> None:
    memory = make(tmp_path)
    assert memory.profile_text() == ""
    ProfileFile(tmp_path / "profile.json").update("name", "Sam")
    assert memory.profile_text() == "Name: Sam"
    (tmp_path / "profile.json").write_text("{broken")
    assert memory.profile_text() == ""  # left out of the prompt, never a crash
    await memory.aclose()


async def test_open_memory_from_settings(tmp_path: Path) -> None:
    from convers.app.wiring import build_memory

    settings = Settings(data_dir=tmp_path, embedder={"provider": "no-such-embedder"}, memory={"recall_floor": 0.0})
    memory = build_memory(settings, None)
    assert memory.embedder is None  # word-only recall rather than no memory
    memory.remember("s1", "user", "Sam", "Biscuit is my dog")
    await memory.aclose()
    assert (tmp_path / "memory.db").exists()
    later = build_memory(settings, None)  # a later conversation
    assert [h.text for h in await later.recall("Biscuit")] == ["Biscuit is my dog"]
    await later.aclose()


async def test_user_turns_are_stored_under_the_known_name(tmp_path: Path) -> None:
    ProfileFile(tmp_path / "profile.json").update("name", "Sam")
    memory = make(tmp_path)
    memory.remember("s1", "user", "user", "Lovely day")
    await memory.aclose()
    with SqliteMemoryStore(tmp_path / "memory.db") as store:
        assert store.list(1)[0].speaker == "Sam"


class DiskFullOnce(SqliteMemoryStore):
    """A store whose first `failures` writes fail as SQLite does on a full disk."""

    def __init__(self, *args, failures: int = 2, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.failures = failures

    def add_many(self, turns, **kwargs):  # every write goes through here (add, and turns stored before their vector)
        if self.failures > 0:
            self.failures -= 1
            raise sqlite3.OperationalError("database or disk is full")
        return super().add_many(turns, **kwargs)


async def test_turns_survive_a_full_disk_and_are_stored_in_order_once_it_clears(tmp_path: Path) -> None:
    embedder = WordHashEmbedder()
    store = DiskFullOnce(tmp_path / "memory.db", embedder=embedder, failures=2)
    memory = CompanionMemory(store, ProfileFile(tmp_path / "profile.json"), embedder=embedder,
                             options=MemoryOptions(recall_floor=0.0))
    memory.remember("s1", "user", "Sam", "first thing I said")
    memory.remember("s1", "assistant", "Juniper", "second thing")
    memory.remember("s1", "user", "Sam", "third thing")
    await memory.aclose()
    with SqliteMemoryStore(tmp_path / "memory.db") as reopened:
        assert [t.text for t in reopened.list(10, newest_first=False)] == [
            "first thing I said", "second thing", "third thing"]


async def test_a_disk_that_stays_full_is_reported_at_close(tmp_path: Path, caplog) -> None:
    embedder = WordHashEmbedder()
    store = DiskFullOnce(tmp_path / "memory.db", embedder=embedder, failures=100)
    memory = CompanionMemory(store, ProfileFile(tmp_path / "profile.json"), embedder=embedder)
    memory.remember("s1", "user", "Sam", "hello")
    with caplog.at_level("ERROR"):
        await memory.aclose()
    assert "1 turn(s) could not be stored" in caplog.text and "disk is full" in caplog.text


class TextLoggingEmbedder(WordHashEmbedder):
    """Records every text it embeds."""

    def __init__(self) -> None:
        super().__init__()
        self.texts: list[str] = []

    def embed_sync(self, texts):
        self.texts.extend(texts)
        return super().embed_sync(texts)


async def test_a_user_turn_is_embedded_once_for_its_recall_and_its_write(tmp_path: Path) -> None:
    embedder = TextLoggingEmbedder()
    memory = make(tmp_path, embedder=embedder)
    memory.store.add(past_turn(1, "My sister Ana moved to Lisbon"))
    said = "Is Ana still in Lisbon?"
    # What Session.user_said does: store the turn, then recall for the reply.
    memory.remember("s1", "user", "Sam", said)
    hits = await memory.recall(said)
    await memory.aclose()
    assert [h.id for h in hits] == ["p1"]
    assert embedder.texts.count(said) == 1
    with SqliteMemoryStore(tmp_path / "memory.db", embedder=embedder) as store:
        assert store.stats().unembedded == 0
        hits = store.search(said, 5, vector=embedder.embed_sync([said])[0], mode="vector")
        assert said in [h.text for h in hits]


async def test_a_turn_with_a_lone_surrogate_is_stored_replaced_and_later_turns_follow(tmp_path: Path) -> None:
    memory = make(tmp_path)
    memory.remember("s1", "user", "Sam", "half an emoji a\ud800")
    memory.remember("s1", "assistant", "Juniper", "I see")
    memory.remember("s1", "user", "Sam", "next thing")
    await memory.aclose()
    with SqliteMemoryStore(tmp_path / "memory.db") as store:
        assert [t.text for t in store.list(10, newest_first=False)] == ["half an emoji a\ufffd", "I see", "next thing"]


class RefusesOneText(SqliteMemoryStore):
    """A store that can never encode the turn saying `bad` (as SQLite does a lone surrogate)."""

    bad = "never storable"
    attempts = 0

    def add_many(self, turns, **kwargs):
        if any(turn.text == self.bad for turn in turns):
            self.attempts += 1
            raise UnicodeEncodeError("utf-8", self.bad, 0, 1, "surrogates not allowed")
        return super().add_many(turns, **kwargs)


async def test_a_turn_that_can_never_be_stored_is_dropped_not_retried_before_every_later_one(
    tmp_path: Path, caplog
) -> None:
    embedder = WordHashEmbedder()
    store = RefusesOneText(tmp_path / "memory.db", embedder=embedder)
    memory = CompanionMemory(store, ProfileFile(tmp_path / "profile.json"), embedder=embedder,
                             options=MemoryOptions(recall_floor=0.0))
    with caplog.at_level("ERROR"):
        memory.remember("s1", "user", "Sam", "before")
        memory.remember("s1", "user", "Sam", RefusesOneText.bad)
        for i in range(3):
            memory.remember("s1", "user", "Sam", f"after {i}")
        await memory.settled()
        # Stored as they come, not held back behind the unstorable one until close.
        assert store.count() == 4
        await memory.aclose()
    with SqliteMemoryStore(tmp_path / "memory.db") as reopened:
        assert [t.text for t in reopened.list(10, newest_first=False)] == ["before", "after 0", "after 1", "after 2"]
    assert store.attempts == 1
    assert "can never be stored" in caplog.text and "could not be stored" not in caplog.text
