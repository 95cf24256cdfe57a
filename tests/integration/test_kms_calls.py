"""How often the data-key cache lets PAI call KMS, counted on the emulator's real KMS API."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from pai_core.bootstrap import Container
from pai_local.stack import RunningStack

pytestmark = pytest.mark.integration


def counting(container: Container) -> Counter[str]:
    calls: Counter[str] = Counter()
    kms_client: Any = container.key_service._inner._client  # type: ignore[attr-defined]

    def count(event_name: str, **_: object) -> None:
        calls[event_name.rsplit(".", 1)[-1]] += 1

    kms_client.meta.events.register("before-call.kms.*", count)
    return calls


def test_kms_calls_per_100_stores_and_per_cold_read(stack: RunningStack) -> None:
    writer = Container(stack.settings)  # a fresh composition root: a cold Lambda container
    calls = counting(writer)
    stored = [
        writer.memories.remember(
            stack.settings.owner, content=f"kms counting memory {i}", category="kmscount", metadata={}
        )
        for i in range(100)
    ]
    assert calls == Counter({"GenerateDataKey": 1})  # 200 values encrypted (content + metadata), one KMS call

    reader = Container(stack.settings)
    reads = counting(reader)
    for memory in stored:
        assert reader.memories.recall(stack.settings.owner, memory.id).content == memory.content
    assert reads == Counter({"Decrypt": 1})  # one unwrap of the shared data key, then the cache
    print(f"\nKMS calls: {sum(calls.values())} per 100 stores; {sum(reads.values())} per 100 cold reads")
