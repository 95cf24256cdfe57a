"""Many clients storing and deleting at once through the local gateway lose nothing: every
acknowledged store can be retrieved and found, every acknowledged delete is gone."""

from __future__ import annotations

import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest

from pai_core.bootstrap import Container
from pai_core.errors import NotFound
from pai_local.stack import RunningStack
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


def test_concurrent_containers_lose_nothing(stack: RunningStack) -> None:
    """The local gateway runs one handler at a time, as one Lambda environment does. Here the
    writers really overlap: one composition root per thread (separate Lambda environments, each
    with its own clients, key cache and search index) storing and deleting for the same user at
    once, including that user's first branch key."""
    user, run = f"conc-{secrets.token_hex(4)}", secrets.token_hex(3)
    containers = [Container(stack.settings) for _ in range(CLIENTS)]
    for container in containers:
        container.embedder = stack.container.embedder  # one loaded model (it is thread-safe)

    def writer(client: int) -> tuple[list[str], list[str]]:
        memories = containers[client].memories
        kept, deleted = [], []
        for index in range(STORES_PER_CLIENT):
            content = f"overlap {run} client {client} memory {index}"
            memory = memories.remember(user, content=content, category=f"ov{run}", metadata={})
            if index % 3 == 0:
                memories.forget(user, memory.id)
                deleted.append(memory.id)
            else:
                kept.append(memory.id)
        return kept, deleted

    with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        outcomes = list(pool.map(writer, range(CLIENTS)))
    kept = {memory_id for k, _ in outcomes for memory_id in k}
    deleted = {memory_id for _, d in outcomes for memory_id in d}
    assert len(kept) + len(deleted) == CLIENTS * STORES_PER_CLIENT

    # A cold container: every record must open with the one branch key. It ranks by the cosine alone,
    # so a memory's own words find it first among these near-identical ones (hybrid ranking lets
    # a near-duplicate's time neighbours lift it, which is what it is for).
    reader = Container(replace(stack.settings, search_ranking="dense"))
    reader.embedder = stack.container.embedder
    page = reader.memories.list_memories(user, category=f"ov{run}", limit=100, cursor=None)
    assert {memory.id for memory in page.items} == kept
    for memory_id in deleted:
        with pytest.raises(NotFound):
            reader.memories.recall(user, memory_id)
    contents = {memory.id: memory.content for memory in page.items}
    for memory_id, content in contents.items():  # each one searchable, from a cold index
        assert reader.memories.search(user, content, top=1)[0].memory.id == memory_id
    for container in containers:  # every writer's own container finds the others' memories too
        found = {hit.memory.id for hit in container.memories.search(user, f"overlap {run}", top=50)}
        assert found <= kept and len(found) == 50
    print(
        f"\nconcurrent containers: {CLIENTS} writers, {len(kept) + len(deleted)} stores, {len(deleted)} deletes, lost 0"
    )
