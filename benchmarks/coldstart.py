"""One handler's cold start, in a fresh interpreter (run by bench.py, one process per handler):
import time, composition root, embedding model load, and the first request (for search: the index
load included), then a second, warm request. Then what SnapStart would make of it, in the same
process: the before-snapshot hook (handlers/_snapstart.py), then a restored environment's path:
the after-restore hook and its first request (import and model load are in the snapshot). Prints
one JSON line.

    python -m benchmarks.coldstart search|memory|chat   (settings from BENCH_* variables)
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

from benchmarks.events import FakeLambdaContext, api_event


class _InstantChatModel:
    """No LLM: the chat function's own cold path (storage, memory search, prompt) is what is timed."""

    name = "bench-stub"
    context_tokens = 2048

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def complete(self, messages: Sequence[Any], *, max_tokens: int) -> Any:
        from pai_core.models import Completion, Usage

        return Completion(text="Noted.", model=self.name, usage=Usage(input_tokens=1, output_tokens=1))

    def stream(self, messages: Sequence[Any], *, max_tokens: int) -> Iterator[Any]:
        yield self.complete(messages, max_tokens=max_tokens)


REQUESTS = {
    "search": ("POST /search", {"query": "Where did I leave the passport?", "topK": 5}),
    "memory": ("POST /memory", {"action": "store", "content": "Cold start: the spare key is under the blue pot."}),
    "chat": ("POST /chat", {"message": "What did my sister say about Lisbon?", "sessionId": "bench-cold"}),
}


def main() -> None:
    name = sys.argv[1]
    t0 = time.perf_counter()
    module = importlib.import_module(f"handlers.{name}")
    imported = time.perf_counter() - t0

    from pai_core.bootstrap import Container, set_container
    from pai_core.config import Settings

    settings = Settings(
        env=os.environ["BENCH_ENV"],
        region=os.environ.get("AWS_REGION", "us-east-1"),
        endpoint_url=os.environ["BENCH_ENDPOINT"],
        owner=os.environ["BENCH_OWNER"],
        # As deployed: the search and chat functions have the bucket (index snapshots), memory has not.
        knowledge_bucket=os.environ["BENCH_BUCKET"] if name in {"search", "chat"} else None,
        search_ann_threshold=int(os.environ["BENCH_ANN_THRESHOLD"]),
        # As in the run that started it: the benchmark's own searches just before (hundreds by the same
        # owner within the minute) must not make these requests 429s.
        rate_limit_per_minute=1_000_000,
    )
    t0 = time.perf_counter()
    container = Container(settings, chat_model=_InstantChatModel() if name == "chat" else None)
    set_container(container)
    container_build = time.perf_counter() - t0
    t0 = time.perf_counter()
    container.embedder.embed(["warm the session"])
    model_load = time.perf_counter() - t0

    route, body = REQUESTS[name]
    t0 = time.perf_counter()
    first = module.handler(api_event(route, body, user=settings.owner), FakeLambdaContext(name))
    first_request = time.perf_counter() - t0
    if name == "memory":
        body = {**body, "content": "Cold start: a second memory."}
    t0 = time.perf_counter()
    second = module.handler(api_event(route, body, user=settings.owner), FakeLambdaContext(name))
    second_request = time.perf_counter() - t0

    from handlers import _snapstart

    _snapstart.before_snapshot()
    if name == "memory":
        body = {**body, "content": "Cold start: a memory after a restore."}
    t0 = time.perf_counter()
    _snapstart.after_restore(
        build=lambda: Container(settings, chat_model=_InstantChatModel() if name == "chat" else None)
    )
    restored = module.handler(api_event(route, body, user=settings.owner), FakeLambdaContext(name))
    restored_request = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "handler": name,
                "import_s": imported,
                "model_load_s": model_load,
                "container_s": container_build,
                "restored_first_request_s": restored_request,
                "first_request_s": first_request,
                "second_request_s": second_request,
                "statuses": [first["statusCode"], second["statusCode"], restored["statusCode"]],
            }
        )
    )


if __name__ == "__main__":
    main()
