"""The memory panel's JSON endpoints over TLS, against an in-memory store double."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timezone
from pathlib import Path

import httpx
import pytest

from convers.contracts.memory import MemoryHit, MemoryTurn
from tests.browser_helpers import TOKEN, EchoSession, running_server


@dataclass
class ListStore:
    """list/count/search/forget/wipe over a Python list; search matches words."""

    turns: list[MemoryTurn] = field(default_factory=list)

    def list(self, limit: int = 50, offset: int = 0) -> list[MemoryTurn]:
        return list(reversed(self.turns))[offset : offset + limit]

    def count(self) -> int:
        return len(self.turns)

    def search(self, query: str, k: int = 5) -> list[MemoryHit]:
        words = set(query.lower().split())
        hits = [MemoryHit(t.id, t.text, 0.9, t) for t in self.turns if words & set(t.text.lower().split())]
        return hits[:k]

    def forget(self, turn_id: str) -> bool:
        before = len(self.turns)
        self.turns = [t for t in self.turns if t.id != turn_id]
        return len(self.turns) < before

    def wipe(self) -> int:
        count, self.turns = len(self.turns), []
        return count


def turn(n: int, text: str) -> MemoryTurn:
    return MemoryTurn(f"id{n}", "s1", datetime(2025, 1, n, tzinfo=UTC), "user", "user", text)


@pytest.fixture
async def api(tmp_path: Path):
    store = ListStore([turn(1, "I have a cat named Miso"), turn(2, "my sister lives in Lyon"), turn(3, "the cat likes boxes")])
    async with running_server(EchoSession(), tmp_path / "tls", memory_store=store) as server:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(base_url=server.base_url, verify=server.ssl_context, headers=headers) as client:
            yield client, store


async def test_list_newest_first_with_paging(api) -> None:
    client, _ = api
    body = (await client.get("/api/memory", params={"limit": 2})).json()
    assert body["total"] == 3
    assert [i["id"] for i in body["items"]] == ["id3", "id2"]
    assert body["items"][0]["time"].startswith("2025-01-03") and body["items"][0]["role"] == "user"
    rest = (await client.get("/api/memory", params={"limit": 2, "offset": 2})).json()
    assert [i["id"] for i in rest["items"]] == ["id1"]


async def test_search(api) -> None:
    client, _ = api
    body = (await client.get("/api/memory", params={"q": "cat"})).json()
    assert {i["id"] for i in body["items"]} == {"id1", "id3"}
    assert all(i["score"] == 0.9 for i in body["items"])


BAD_PAGING = [
    {"limit": "x"}, {"limit": 0}, {"limit": 1000}, {"offset": -1},
    {"offset": "99999999999999999999"}, {"offset": 2**63}, {"offset": "9" * 4000}, {"offset": "9" * 5000},
    {"limit": "9" * 4000},
]


@pytest.mark.parametrize("params", BAD_PAGING)
async def test_bad_paging_is_400(api, params) -> None:
    client, _ = api
    response = await client.get("/api/memory", params=params)
    assert response.status_code == 400 and "limit" in response.json()["error"]
    assert len(response.json()["error"]) < 200


@pytest.mark.parametrize("params", BAD_PAGING)
async def test_bad_paging_on_the_sqlite_store_is_400_not_500(tmp_path: Path, params) -> None:
    from convers.memory.store import SqliteMemoryStore

    with SqliteMemoryStore(tmp_path / "memory.db") as store:
        store.add(turn(1, "I have a cat named Miso"))
        async with running_server(EchoSession(), tmp_path / "tls", memory_store=store) as server:
            headers = {"Authorization": f"Bearer {TOKEN}"}
            async with httpx.AsyncClient(base_url=server.base_url, verify=server.ssl_context, headers=headers) as client:
                response = await client.get("/api/memory", params=params)
                assert response.status_code == 400, response.text
                # The largest offset SQLite takes is still an answer, not a traceback.
                last = await client.get("/api/memory", params={"offset": 2**63 - 1})
                assert last.status_code == 200 and last.json()["items"] == []


async def test_forget_one_and_wipe(api) -> None:
    client, store = api
    assert (await client.delete("/api/memory/id2")).json() == {"deleted": "id2"}
    assert [t.id for t in store.turns] == ["id1", "id3"]
    assert (await client.delete("/api/memory/id2")).status_code == 404
    assert (await client.delete("/api/memory")).json() == {"deleted": 2}
    assert store.turns == []


async def test_derived_keys_are_listed_and_forgotten_on_the_sqlite_store(tmp_path: Path) -> None:
    from convers.memory.store import SqliteMemoryStore

    with SqliteMemoryStore(tmp_path / "memory.db") as store:
        store.add_many([turn(1, "My sister moved to Lyon"), turn(2, "We met Ana in Lyon")], embed=False)
        async with running_server(EchoSession(), tmp_path / "tls", memory_store=store) as server:
            headers = {"Authorization": f"Bearer {TOKEN}"}
            async with httpx.AsyncClient(base_url=server.base_url, verify=server.ssl_context, headers=headers) as client:
                body = (await client.get("/api/memory/keys", params={"q": "lyo"})).json()
                assert {(i["key"], i["turn_id"]) for i in body["items"]} == {("lyon", "id1"), ("lyon", "id2")}
                assert body["items"][0]["text"] and body["items"][0]["kind"] == "entity"
                gone = await client.delete("/api/memory/keys/entity/lyon", params={"turn": "id1"})
                assert gone.json() == {"deleted": 1}
                assert (await client.delete("/api/memory/keys/entity/lyon", params={"turn": "id1"})).status_code == 404
                assert (await client.delete("/api/memory/keys/nonsense/lyon")).status_code == 404
                assert [i["turn_id"] for i in (await client.get("/api/memory/keys")).json()["items"]] == ["id2", "id2"]
                assert (await client.delete("/api/memory/id2")).status_code == 200
                assert (await client.get("/api/memory/keys")).json()["items"] == []


async def test_a_store_without_keys_lists_none(api) -> None:
    client, _ = api
    assert (await client.get("/api/memory/keys")).json() == {"items": []}


async def test_cross_origin_delete_refused(api) -> None:
    client, store = api
    response = await client.delete("/api/memory", headers={"Origin": "https://evil.example"})
    assert response.status_code == 403 and len(store.turns) == 3


async def test_memory_off_is_503(tmp_path: Path) -> None:
    async with running_server(EchoSession(), tmp_path / "tls") as server:
        async with httpx.AsyncClient(base_url=server.base_url, verify=server.ssl_context) as client:
            response = await client.get("/api/memory", headers={"Authorization": f"Bearer {TOKEN}"})
            assert response.status_code == 503 and "memory is off" in response.json()["error"]
