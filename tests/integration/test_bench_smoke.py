"""`make bench` with tiny sizes, so the benchmark cannot rot: it runs end to end (its own embedded
moto, in its own process) and writes every table. One of its searches is made to run out of time
(`--fail-request`: a Lambda context with no time left, so the real deadline check answers 503, as
one did on a loaded machine): the run records it against its row and goes on."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.integration.support import run_benchmark

pytestmark = pytest.mark.integration

SECTIONS = (
    "## Search latency, warm (ms)",
    "## Reads, writes and KMS calls per request",
    "## Monthly cost estimate",
    "## Cold start",
    "## Embedding (all-MiniLM-L6-v2)",
    "## Exact vs approximate index",
)
# A timed warm search at the first size (the 2 cold searches and 8 metered warm ones come first), so
# the per-request counts checked below are not the failed one's.
FAILED_REQUEST = 12


def test_the_benchmark_runs_small_and_writes_its_tables(tmp_path: Path) -> None:
    output = tmp_path / "RESULTS.md"
    finished = run_benchmark("bench", "--smoke", "--output", str(output), "--fail-request", str(FAILED_REQUEST))
    assert finished.returncode == 0, finished.stderr[-4000:]
    report = output.read_text(encoding="utf-8")
    assert report == finished.stdout.rstrip("\n") + "\n"  # printed and written alike
    for section in SECTIONS:
        assert section in report, section
    rows = re.findall(
        r"^\| ([\d,]+) \| .*?\| ([\d,.]+) \| ([\d,.]+) \| ≈?([\d,]+)x \| .*? \| (\d+) \|$", report, flags=re.MULTILINE
    )
    assert len(rows) == 2  # both sizes, each with the index's p50/p95, a speed-up over the scan, failures
    assert all(float(p50.replace(",", "")) > 0 for _, p50, _, _, _ in rows)

    # The search that ran out of time is counted in its row, named under the table, and timed nowhere.
    assert [int(failed) for *_, failed in rows] == [1, 0]
    (failure,) = re.findall(r"^At 300, failed: (.*)$", report, flags=re.MULTILINE)
    assert failure == "POST /search: 503 service_unavailable: not enough time left in this request for a DynamoDB call"
    assert f"request {FAILED_REQUEST} failed (counted, not timed)" in finished.stderr
    assert "Traceback" not in finished.stderr
    # A warm search with nothing changed reads the change stamp and the hits, and counts itself
    # against the user's request rate (one write), nothing more.
    assert re.search(
        r"search, index, warm, nothing changed \| [0-6]\.0 \| 1\.0 \| 0 \| BatchGetItem 1, GetItem 1, UpdateItem 1 \|",
        report,
    )
    assert "$" in report.split("## Monthly cost estimate", 1)[1]
