"""The search index against a real emulator: other containers' stores and deletes, tombstones,
snapshots for cold containers, and what a warm search reads."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest

from benchmarks.capacity import CapacityMeter
from pai_core.adapters.dynamodb_changelog import CHANGES_SUFFIX, HEAD_ID
from pai_core.adapters.s3 import S3SnapshotStore
from pai_core.bootstrap import Container
from pai_core.search import IndexPolicy, LiveMemoryIndex
from pai_core.services import MemoryService
from pai_local.stack import RunningStack
from tests.integration.support import ApiClient, find_plaintext

pytestmark = pytest.mark.integration


def new_owner() -> str:
    return f"idx-{secrets.token_hex(4)}"


def small_index(container: Container, **policy: Any) -> MemoryService:
    """The container's parts with an index whose snapshot thresholds suit a handful of memories."""
    snapshots = S3SnapshotStore(container.client("s3"), container.settings.knowledge_bucket or "", container.cipher)
    index = LiveMemoryIndex(
        container.change_log,
        {"memory": container.memory_repository},
        snapshots,
        dimensions=container.embedder.dimensions,
        policy=IndexPolicy(**{"snapshot_min_vectors": 5, "snapshot_rebuild_changes": 3, **policy}),
    )
    return MemoryService(container.memory_repository, container.embedder, container.clock, index=index)


@pytest.fixture(scope="module")
def writer(stack: RunningStack) -> Container:
    """Another container (the memory function, say) on the same emulator."""
    return Container(stack.settings)


@pytest.fixture
def meter(stack: RunningStack) -> Iterator[CapacityMeter]:
    lookup = boto3.session.Session(region_name=stack.settings.region).client(
        "dynamodb", endpoint_url=stack.endpoint_url
    )
    meter = CapacityMeter(stack.container.dynamodb, lookup=lookup, kms=stack.container.key_service._client)  # type: ignore[attr-defined]
    yield meter
    stack.container.dynamodb.meta.events.unregister("before-parameter-build.dynamodb", meter._before)
    stack.container.dynamodb.meta.events.unregister("after-call.dynamodb", meter._after)
    stack.container.key_service._client.meta.events.unregister("before-call.kms", meter._kms)  # type: ignore[attr-defined]


def search_ids(api: ApiClient, query: str, **options: Any) -> list[str]:
    result = api.post("/search", {"query": query, **options})
    assert result.status == 200, result
    return [hit["id"] for hit in result.json["results"]]


def test_stores_and_deletes_of_another_container_reach_a_warm_index(
    api: ApiClient, writer: Container, stack: RunningStack
) -> None:
    owner = stack.settings.owner
    mark = secrets.token_hex(4)
    category = f"xcont-{mark}"
    search_ids(api, f"warm up {mark}")  # the gateway's container has a warm index now
    stored = writer.memories.remember(
        owner, content=f"Kiwi{mark} the parrot says hello", category=category, metadata={}
    )
    assert search_ids(api, f"parrot Kiwi{mark}", category=category) == [stored.id]
    writer.memories.forget(owner, stored.id)
    assert search_ids(api, f"parrot Kiwi{mark}", category=category) == []


def test_delete_leaves_a_change_log_entry_that_listing_never_shows(
    api: ApiClient, aws: Callable[[str], Any], stack: RunningStack
) -> None:
    owner, table = stack.settings.owner, stack.settings.knowledge_table
    category = f"tomb-{secrets.token_hex(4)}"
    result = api.post("/memory", {"action": "store", "content": "to be forgotten", "category": category})
    memory_id = result.json["id"]
    assert api.post("/memory", {"action": "delete", "id": memory_id}).status == 200
    dynamodb = aws("dynamodb")
    entries = dynamodb.query(
        TableName=table,
        KeyConditionExpression="#o = :o",
        ExpressionAttributeNames={"#o": "owner"},
        ExpressionAttributeValues={":o": {"S": owner + CHANGES_SUFFIX}},
        ConsistentRead=True,
    )["Items"]
    mine = [e for e in entries if e.get("itemId", {}).get("S") == memory_id]
    assert [(e["op"]["S"], e["kind"]["S"]) for e in mine] == [("put", "memory"), ("delete", "memory")]
    assert mine[0]["id"]["S"] < mine[1]["id"]["S"]  # time-ordered
    for entry in mine:
        assert set(entry) == {"owner", "id", "op", "kind", "itemId", "ttl"}  # no content, no category, no vector
        assert 6 * 86400 < int(entry["ttl"]["N"]) - time.time() <= 7 * 86400
    head = dynamodb.get_item(TableName=table, Key={"owner": {"S": owner + CHANGES_SUFFIX}, "id": {"S": HEAD_ID}})
    assert int(head["Item"]["version"]["N"]) >= 2
    # Listing reads the owner's own partition and the category index: entries are in neither.
    for body in ({"action": "list", "limit": 100}, {"action": "list", "category": category}):
        listed = api.post("/memory", body).json["items"]
        assert all(item["id"] not in {memory_id, HEAD_ID, *(e["id"]["S"] for e in mine)} for item in listed)
    assert api.post("/memory", {"action": "list", "category": category}).json["items"] == []


def test_a_warm_search_with_nothing_changed_reads_one_stamp_and_the_hits(api: ApiClient, meter: CapacityMeter) -> None:
    search_ids(api, "what do I know about parrots?", topK=3)
    with meter.measure() as used:
        hits = search_ids(api, "what do I know about parrots?", topK=3)
    # One strongly consistent GetItem of the change stamp (1 unit), then the hits themselves,
    # fetched in full (1 unit each, as in the design): nothing that grows with the memories. The one
    # write is the request counted against the user's rate limit.
    assert used["calls:GetItem"] == 1 and used["calls:Query"] == 0
    assert used["rcu"] <= 1 + len(hits)
    assert used["calls:UpdateItem"] == 1 and used["wcu"] == 1 and used["kms_calls"] == 0


def test_a_cold_container_loads_the_snapshot_instead_of_every_item(
    writer: Container, stack: RunningStack, aws: Callable[[str], Any]
) -> None:
    owner = new_owner()
    texts = [f"Snapshot fact {i}: the {word} is in the drawer" for i, word in enumerate("ABCDEFG")]
    stored = [writer.memories.remember(owner, content=text, category="facts", metadata={}) for text in texts]
    first = small_index(Container(stack.settings))
    assert first.search(owner, "where is the D?", top=1)[0].memory.id == stored[3].id
    first_index: Any = first._index
    assert first_index.events["full_load"] == 1 and first_index.events["snapshot_save"] == 1

    body = aws("s3").get_object(Bucket=stack.settings.knowledge_bucket, Key=f"index/{owner}.snapshot")["Body"].read()
    assert find_plaintext(body, [s.id for s in stored] + ["facts", "drawer"]) == []  # encrypted as a whole

    late = writer.memories.remember(
        owner, content="Snapshot fact late: the Z is under the bed", category="facts", metadata={}
    )
    writer.memories.forget(owner, stored[0].id)
    cold = small_index(Container(stack.settings))
    hits = cold.search(owner, "where is the Z?", top=10)
    assert hits[0].memory.id == late.id
    assert stored[0].id not in {hit.memory.id for hit in hits}
    cold_index: Any = cold._index
    assert cold_index.events["snapshot_load"] == 1 and cold_index.events["full_load"] == 0
    assert len(cold_index.index_of(owner)) == 7
    # The snapshot held the lexical index too: the cold index matches words without reading any item.
    lexical = cold_index.index_of(owner).lexical
    assert len(lexical.search("drawer", 10)) == 6  # the forgotten one is gone from it
    assert [key for key, _ in lexical.search("bed", 10)] == [f"memory:{late.id}"]
