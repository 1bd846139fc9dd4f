"""Observation keys: notes the model writes about a speaker, stored as keys of their turns, found, shown, forgotten."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from convers.cli import main
from convers.contracts.memory import MemoryTurn, ObservationKeys
from convers.idle_gate import IdleGate
from convers.memory.conversation import CompanionMemory, MemoryOptions
from convers.memory.observations import needs_observations, parse
from convers.memory.profile import ProfileFile
from convers.memory.ranking import RankingWeights
from convers.memory.store import SqliteMemoryStore
from tests.doubles import ScriptedLlm
from tests.memory_doubles import WordHashEmbedder

T0 = datetime(2026, 3, 2, 19, 0, tzinfo=UTC)
KNITTING = "Spent all Sunday on my scarf, my hands ache from the needles"


def turn(i: int, text: str, speaker: str = "Maya", role: str = "assistant") -> MemoryTurn:
    return MemoryTurn(f"t{i}", f"s{i // 6}", T0 + timedelta(days=i), speaker, role, text)  # type: ignore[arg-type]


def observation_vectors(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT count(*) FROM observation_vectors").fetchone()[0])


@pytest.mark.parametrize(("answer", "notes"), [
    ("Maya likes knitting.\nMaya's hands ache.", ["Maya likes knitting.", "Maya's hands ache."]),
    ("Maya: I spent all Sunday on a scarf", []),  # the turn repeated, not a note
    ("I'm sorry, I cannot help with that.", []),
    ("Maya has a daughter named Lily.\nMaya knits scarves.", ["Maya knits scarves."]),  # Lily is invented
    ("Maya likes knitting.\nMaya likes knitting.\n", ["Maya likes knitting."]),
    ("1. Maya knits scarves.\n2. Maya likes my scarf.", ["Maya knits scarves."]),  # numbered; first person dropped
    ("Maya likes knitting.\nMaya knits scarves.\nMaya is patient.\nMaya owns needles.", [
        "Maya likes knitting.", "Maya knits scarves.", "Maya is patient."]),  # three at most
])
def test_only_third_person_notes_about_the_speaker_are_kept(answer: str, notes: list[str]) -> None:
    assert parse(answer, "Maya", KNITTING) == notes


def test_short_turns_and_questions_are_not_worth_a_model_call() -> None:
    assert needs_observations(KNITTING)
    assert not needs_observations("Oh nice, really?")
    assert not needs_observations("How was your week at the new office then?")


def test_a_store_keeps_observations_as_keys_of_their_turns_and_forgets_them_with_the_turn(tmp_path: Path) -> None:
    path = tmp_path / "memory.db"
    with SqliteMemoryStore(path, embedder=WordHashEmbedder()) as store:
        assert isinstance(store, ObservationKeys)
        store.add_many([turn(1, KNITTING), turn(2, "Knitted another scarf for my nephew this week")])
        assert store.add_observations(["t1"], ["Maya likes knitting.", "Maya is patient."]) == 2
        assert store.add_observations(["t2"], ["Maya likes knitting."]) == 1  # one text, two turns, one vector
        assert store.add_observations(["gone"], ["Maya likes knitting."]) == 0  # a forgotten turn gets nothing
        listed = {(k.key, k.turn_id) for k in store.keys(kind="observation")}
        assert listed == {("Maya likes knitting.", "t1"), ("Maya is patient.", "t1"), ("Maya likes knitting.", "t2")}
        assert {k.key for k in store.keys(containing="patient")} == {"Maya is patient."}
        assert observation_vectors(path) == 2
        assert store.forget("t1")
        assert {(k.key, k.turn_id) for k in store.keys(kind="observation")} == {("Maya likes knitting.", "t2")}
        assert observation_vectors(path) == 1  # "patient" went with its only turn; the shared one stays
        assert store.forget_key("observation", "Maya likes knitting.") == 1
        assert store.keys(kind="observation") == [] and observation_vectors(path) == 0
        store.add_observations(["t2"], ["Maya knits."])
        store.wipe()
        assert store.keys() == [] and observation_vectors(path) == 0


def test_an_observation_near_the_question_brings_its_turn(tmp_path: Path) -> None:
    """The question shares no word with the turn that answers it (a scarf, needles), only with the note;
    the other turns share "class" with it."""
    classes = [f"The {thing} class was fine on {day}" for thing in ("pottery", "yoga", "cooking", "dance", "art")
               for day in ("Monday", "Friday")]
    with SqliteMemoryStore(tmp_path / "memory.db", embedder=WordHashEmbedder()) as store:
        # Without centring: with ten turns this alike, it alone would sink them below the odd one out.
        plain = RankingWeights(centre_weight=0.0)
        store.use_weights(plain)
        store.add_many([turn(i, text) for i, text in enumerate([KNITTING, *classes])])
        question = "Would Maya like a knitting class?"

        def best() -> str:
            return store.search(question, 1, floor=0.0)[0].id

        assert best() != "t0"
        store.add_observations(["t0"], ["Maya loves knitting and would like a class."])
        assert best() == "t0"
        store.use_weights(RankingWeights(centre_weight=0.0, observation_weight=0.0))
        assert best() != "t0"  # the observation's weight is what lifts it
        store.use_weights(plain)
        store.forget_key("observation", "Maya loves knitting and would like a class.")
        assert best() != "t0"  # the search follows a deletion at once


def make(tmp_path: Path, llm: ScriptedLlm, idle: IdleGate | None = None, **options) -> CompanionMemory:
    embedder = WordHashEmbedder()
    store = SqliteMemoryStore(tmp_path / "memory.db", embedder=embedder)
    return CompanionMemory(store, ProfileFile(tmp_path / "profile.json"), embedder=embedder, llm=llm, idle=idle,
                           options=MemoryOptions(recall_floor=0.0, **options))


async def test_a_conversation_writes_observation_keys_for_user_turns_when_switched_on(tmp_path: Path) -> None:
    llm = ScriptedLlm(["Sam enjoys", " knitting.\nSam is patient."])
    memory = make(tmp_path, llm, observation_keys=True)
    memory.remember("s1", "user", "Sam", KNITTING)
    memory.remember("s1", "user", "Sam", "Oh nice!")  # too short to ask about
    memory.remember("s1", "assistant", "Juniper", "That sounds like a lovely way to spend a Sunday!")
    await memory.aclose()
    assert len(llm.prompts) == 1 and KNITTING in llm.prompts[0][-1].content
    with SqliteMemoryStore(tmp_path / "memory.db") as store:
        keys = store.keys(kind="observation")
        assert {k.key for k in keys} == {"Sam enjoys knitting.", "Sam is patient."}
        assert {k.text for k in keys} == {KNITTING}


async def test_observation_keys_are_off_by_default_and_a_failing_model_loses_nothing(tmp_path: Path) -> None:
    quiet = ScriptedLlm(["Sam enjoys knitting."])
    memory = make(tmp_path, quiet)
    memory.remember("s1", "user", "Sam", KNITTING)
    await memory.aclose()
    assert quiet.prompts == []
    failing = make(tmp_path / "b", ScriptedLlm([], fail="model crashed"), observation_keys=True)
    failing.remember("s1", "user", "Sam", KNITTING)
    await failing.aclose()
    with SqliteMemoryStore(tmp_path / "b" / "memory.db") as store:
        assert store.count() == 1 and store.keys(kind="observation") == []


async def test_digests_and_observations_wait_while_a_session_holds_the_gate_and_none_is_lost(tmp_path: Path) -> None:
    gate = IdleGate(settle_s=0.0)
    llm = ScriptedLlm(["Sam knits scarves."])
    memory = make(tmp_path, llm, idle=gate, digest_min_words=5, observation_keys=True)
    gate.hold("s1/reply")
    memory.remember("s1", "user", "Sam", KNITTING)
    await memory.settled()
    for _ in range(20):
        await asyncio.sleep(0)
    assert memory.store.count() == 1 and llm.prompts == []  # stored, but the model was not asked yet
    gate.release("s1/reply")
    await memory.aclose()
    assert len(llm.prompts) == 2  # the digest and the observations, once the gate was free
    with SqliteMemoryStore(tmp_path / "memory.db") as store:
        assert [d.text for d in store.list(10, kind="digest")] == ["Sam knits scarves."]
        assert [k.key for k in store.keys(kind="observation")] == ["Sam knits scarves."]


def test_the_cli_lists_and_forgets_observation_keys(tmp_path: Path) -> None:
    with SqliteMemoryStore(tmp_path / "memory.db", embedder=WordHashEmbedder()) as store:
        store.add_many([turn(1, KNITTING)])
        store.add_observations(["t1"], ["Maya likes knitting."])
    env = {"CONVERS_DATA_DIR": str(tmp_path)}
    runner = CliRunner()
    listed = runner.invoke(main, ["memory", "keys", "--kind", "observation"], env=env)
    assert listed.exit_code == 0, listed.output
    assert "Maya likes knitting." in listed.output and "t1" in listed.output
    forgot = runner.invoke(main, ["memory", "forget-key", "observation", "Maya likes knitting."], env=env)
    assert forgot.exit_code == 0, forgot.output
    with SqliteMemoryStore(tmp_path / "memory.db") as store:
        assert store.keys() == [] or all(k.kind != "observation" for k in store.keys())
