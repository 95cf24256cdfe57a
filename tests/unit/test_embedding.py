from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from pai_core.config import DEFAULT_EMBEDDING_MODEL_DIR
from pai_core.embedding import OnnxEmbedder, l2_normalize, mean_pool

MODEL_DIR = DEFAULT_EMBEDDING_MODEL_DIR


@pytest.fixture(scope="module")
def embedder() -> OnnxEmbedder:
    return OnnxEmbedder(MODEL_DIR)


def test_mean_pool_ignores_padding() -> None:
    tokens = np.array([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]], dtype=np.float32)
    mask = np.array([[1, 1, 0]])
    assert mean_pool(tokens, mask).tolist() == [[2.0, 3.0]]


def test_mean_pool_of_an_all_padding_row_is_zero_not_nan() -> None:
    pooled = mean_pool(np.ones((1, 2, 3), dtype=np.float32), np.zeros((1, 2), dtype=np.int64))
    assert np.all(np.isfinite(pooled))


def test_l2_normalize_has_a_zero_norm_guard() -> None:
    rows = l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]], dtype=np.float32))
    assert rows[0].tolist() == pytest.approx([0.6, 0.8])
    assert rows[1].tolist() == [0.0, 0.0]


def test_bundled_model_matches_the_fp32_reference(embedder: OnnxEmbedder) -> None:
    """The bundled int8 model against sentence-transformers' fp32 embeddings stored at build time."""
    sentences = json.loads((MODEL_DIR / "reference_sentences.json").read_text(encoding="utf-8"))
    reference = np.load(MODEL_DIR / "reference_embeddings.npy")
    assert len(sentences) >= 50
    batched = np.sum(embedder.embed(sentences) * reference, axis=1)
    one_by_one = np.array(
        [float(embedder.embed([text])[0] @ ref) for text, ref in zip(sentences, reference, strict=True)]
    )
    for cosines in (batched, one_by_one):
        assert cosines.min() >= 0.99
        assert cosines.mean() >= 0.995


def test_bundled_files_match_the_manifest() -> None:
    import hashlib

    manifest = json.loads((MODEL_DIR / "manifest.json").read_text(encoding="utf-8"))
    for name, facts in manifest["files"].items():
        data = (MODEL_DIR / name).read_bytes()
        assert len(data) == facts["bytes"], name
        assert hashlib.sha256(data).hexdigest() == facts["sha256"], name
    assert manifest["quality"]["min_cosine"] >= 0.99


def test_shape_dtype_and_unit_length(embedder: OnnxEmbedder) -> None:
    vectors = embedder.embed(["one", "two words", ""])
    assert vectors.shape == (3, 384)
    assert vectors.dtype == np.float32
    assert np.linalg.norm(vectors, axis=1) == pytest.approx([1.0, 1.0, 1.0], abs=1e-5)
    assert embedder.embed([]).shape == (0, 384)


def test_batching_changes_an_embedding_only_within_quantization_noise(embedder: OnnxEmbedder) -> None:
    # Dynamic int8 quantization picks one activation scale per tensor, i.e. per batch, so a text's
    # embedding depends slightly on its batch companions; it must stay well inside the parity bound.
    texts = [f"sentence number {i} about {'cats ' * (i % 7)}" for i in range(70)]
    batched = embedder.embed(texts)
    one_by_one = np.vstack([embedder.embed([text]) for text in texts[:5]])
    assert np.sum(batched[:5] * one_by_one, axis=1).min() >= 0.995


def test_meaning_beats_wording(embedder: OnnxEmbedder) -> None:
    pet, allergy, query = embedder.embed(
        ["My cat is called Miso", "I am allergic to peanuts", "What is my pet's name?"]
    )
    assert float(query @ pet) > float(query @ allergy) + 0.2


def test_long_text_is_embedded_whole_not_cut(embedder: OnnxEmbedder) -> None:
    """Past the 256-token window the text is split into overlapping windows, all of which count."""
    head = "The quarterly budget review covers marketing spend and hiring plans. " * 40
    tail = "My grandmother's lasagna recipe uses ricotta, nutmeg and fresh basil. " * 40
    assert len(embedder._tokenizer.encode(head + tail).overflowing) >= 2
    whole = embedder.embed([head + tail])[0]
    cut_at_window = embedder.embed([head])[0]
    about_tail = embedder.embed(["a lasagna recipe with ricotta and basil"])[0]
    assert np.linalg.norm(whole) == pytest.approx(1.0, abs=1e-5)
    # A truncating embedder would see only the budget text and miss the recipe entirely.
    assert float(whole @ about_tail) > float(cut_at_window @ about_tail) + 0.1


def test_run_time_import_path_has_no_torch() -> None:
    code = (
        "import sys; import handlers.memory, handlers.search, handlers.chat, pai_core.embedding;"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'torch', 'sentence_transformers', 'transformers', 'optimum', 'llama_cpp', 'moto', 'pai_local'});"
        "print(','.join(bad))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""
