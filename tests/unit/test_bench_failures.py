"""The benchmark's failed requests (benchmarks/bench.py): a request that does not answer 2xx, or a
handler that raises, is recorded and left out of the timings, never raised; rows whose requests all
failed render as n/a. The whole run with a failure injected is tests/integration/test_bench_smoke.py."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from benchmarks import bench
from pai_core.config import Settings


class StubModule:
    """A handler module answering with `status`, or raising; records the contexts it was given."""

    def __init__(self, status: int = 200, *, raises: Exception | None = None) -> None:
        self.status = status
        self.raises = raises
        self.remaining: list[int] = []

    def handler(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        self.remaining.append(context.get_remaining_time_in_millis())
        if self.raises is not None:
            raise self.raises
        if self.status >= 300:
            body = {"error": {"code": "service_unavailable", "message": "not enough time left"}}
            return {"statusCode": self.status, "body": json.dumps(body)}
        return {"statusCode": self.status, "body": json.dumps({"results": []})}


def handler(module: StubModule, requests: bench.Requests) -> bench.Handler:
    container: Any = SimpleNamespace(settings=Settings())
    return bench.Handler(container, module, requests)


@pytest.fixture(autouse=True)
def no_container_left_behind() -> Any:
    yield
    bench.set_container(None)


def test_a_failed_answer_is_recorded_not_raised() -> None:
    requests = bench.Requests()
    call = handler(StubModule(503), requests)
    assert call("POST /search", {"query": "q"}) is None
    assert requests.failures == ["POST /search: 503 service_unavailable: not enough time left"]
    assert requests.made == 1


def test_a_raising_handler_is_recorded_not_raised() -> None:
    requests = bench.Requests()
    assert handler(StubModule(raises=RuntimeError("boom")), requests)("POST /search", {}) is None
    assert requests.failures == ["POST /search: RuntimeError: boom"]


def test_a_good_answer_is_timed() -> None:
    requests = bench.Requests()
    answer = handler(StubModule(200), requests)("POST /search", {"query": "q"})
    assert answer is not None
    assert answer[1] == {"results": []}
    assert requests.failures == []


def test_the_chosen_requests_get_no_time_left_and_only_they() -> None:
    module = StubModule(200)
    requests = bench.Requests(fail_at=frozenset({2, 4}))
    call = handler(module, requests)
    for _ in range(5):
        call("POST /search", {"query": "q"})
    assert [millis == 0 for millis in module.remaining] == [False, True, False, True, False]


def test_only_the_answers_that_succeeded_are_timed() -> None:
    assert bench.succeeded([(0.5, {}), None, (0.25, {}), None]) == [0.5, 0.25]
    assert all(math.isnan(value) for value in bench.percentiles([]))


def test_cells_of_a_row_with_nothing_measured_are_n_a() -> None:
    assert bench.ms(math.nan) == "n/a"
    assert bench.ratio(math.nan, 12.0) == "n/a"
    assert bench.ratio(100.0, math.nan) == "n/a"
    assert bench.ratio(100.0, 4.0) == "25x"
    assert bench.dollars(math.nan) == "n/a"
    assert bench.seconds_cell(math.nan) == "n/a"


def test_a_cold_start_that_failed_is_a_row_of_its_own() -> None:
    results = {
        "cold_start_memories": 300,
        "cold_starts": [
            {"handler": "search", "failed": 2, "error": "the process failed: MemoryError"},
            {
                "handler": "memory",
                "process_s": 2.5,
                "import_s": 0.7,
                "model_load_s": 0.4,
                "container_s": 0.012,
                "first_request_s": 0.6,
                "second_request_s": 0.03,
                "restored_first_request_s": 0.5,
                "statuses": [503, 201, 201],
                "failed": 1,
                "error": "answered 503",
            },
        ],
        "search": [],
    }
    section = "\n".join(bench._cold_section(results))
    assert "| search |" + " n/a |" * 8 + " 2 (the process failed: MemoryError) |" in section
    # SnapStart removes the import and the model load (0.70 + 0.40); a restore still builds a new root.
    assert "| memory | 2.50 | 0.70 | 0.012 | 0.40 | 0.60 | 30.0 | 0.50 | 1.10 | 1 (answered 503) |" in section


def test_make_bench_keeps_the_offline_model_section_another_benchmark_wrote(tmp_path: Path) -> None:
    output = tmp_path / "RESULTS.md"
    output.write_text("# old\n\n## Search\nold numbers\n\n## Offline chat model\n| model | correct |\n| a | 1 |\n")
    report = bench._with_kept_sections("# new\n\n## Search\nnew numbers\n", output)
    assert "new numbers" in report and "old numbers" not in report
    assert report.endswith("## Offline chat model\n| model | correct |\n| a | 1 |\n")
