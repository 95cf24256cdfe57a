"""Many clients storing and deleting at once through the local gateway lose nothing: every
acknowledged store can be retrieved and found, every acknowledged delete is gone."""

from __future__ import annotations

import secrets
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.integration.support import ApiClient

pytestmark = pytest.mark.integration
CLIENTS = 8
STORES_PER_CLIENT = 12


def client_session(api: ApiClient, client: int, run: str) -> tuple[list[str], list[str]]:
    kept, deleted = [], []
    for index in range(STORES_PER_CLIENT):
        content = f"concurrency {run} client {client} memory {index} about {secrets.token_hex(4)}"
        stored = api.post("/memory", {"action": "store", "content": content, "category": f"conc{run}"})
        assert stored.status == 201, stored
        memory_id = stored.json["id"]
        if index % 3 == 0:
            gone = api.post("/memory", {"action": "delete", "id": memory_id})
            assert gone.status == 200, gone
            deleted.append(memory_id)
        else:
            kept.append(memory_id)
    return kept, deleted


def test_concurrent_writers_lose_nothing(api: ApiClient) -> None:
    run = secrets.token_hex(3)
    with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        outcomes = list(pool.map(lambda client: client_session(api, client, run), range(CLIENTS)))
    kept = [memory_id for k, _ in outcomes for memory_id in k]
    deleted = [memory_id for _, d in outcomes for memory_id in d]
    assert len(kept) + len(deleted) == CLIENTS * STORES_PER_CLIENT
    assert len(set(kept) | set(deleted)) == CLIENTS * STORES_PER_CLIENT  # no id handed out twice

    for memory_id in kept:
        assert api.post("/memory", {"action": "retrieve", "id": memory_id}).status == 200
    for memory_id in deleted:
        assert api.post("/memory", {"action": "retrieve", "id": memory_id}).status == 404

    listed, cursor = [], None
    while True:
        body = {"action": "list", "category": f"conc{run}", "limit": 100, **({"cursor": cursor} if cursor else {})}
        page = api.post("/memory", body)
        assert page.status == 200, page
        listed += [item["id"] for item in page.json["items"]]
        cursor = page.json["cursor"]
        if cursor is None:
            break
    assert sorted(listed) == sorted(kept)

    found = api.post("/search", {"query": f"concurrency {run}", "topK": 50, "category": f"conc{run}"})
    assert found.status == 200, found
    hits = {result["id"] for result in found.json["results"]}
    assert hits <= set(kept)
    assert len(hits) == min(50, len(kept))
    print(f"\nconcurrency: {CLIENTS} clients, {CLIENTS * STORES_PER_CLIENT} stores, {len(deleted)} deletes, lost 0")
