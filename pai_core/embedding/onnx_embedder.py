"""Sentence embeddings with onnxruntime + tokenizers + numpy only (no torch at run time).

Texts longer than the model's window (256 word pieces for all-MiniLM-L6-v2) are not cut: the
tokenizer splits them into overlapping windows, each window is embedded like a short text, and the
text's embedding is the token-weighted mean of its window embeddings, L2-normalized. A text that
fits one window gets exactly what sentence-transformers would give it.

What one text may cost is bounded: past MAX_WINDOWS_PER_TEXT windows, only the first
PREFIX_WINDOWS and a sample spread evenly over the rest (the last window included) are embedded.
Embedding is linear in windows, and a 100,000-character text can hold hundreds of them (one token
per character for CJK or punctuation), so without the bound a handful of large stores could hold
every instance of the memory function for tens of seconds each. The beginning of a text is where
its subject usually is; the sample keeps the rest of it in the mean.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from tokenizers import Encoding, Tokenizer

MANIFEST_FILE = "manifest.json"
TOKENIZER_FILE = "tokenizer.json"
WINDOW_OVERLAP_TOKENS = 32
MAX_WINDOWS_PER_TEXT = 16
PREFIX_WINDOWS = 8


@dataclass(frozen=True)
class ModelManifest:
    onnx_file: str
    dimensions: int
    max_seq_length: int

    @classmethod
    def load(cls, model_dir: Path) -> ModelManifest:
        raw = json.loads((model_dir / MANIFEST_FILE).read_text(encoding="utf-8"))
        return cls(
            onnx_file=str(raw["onnx_file"]),
            dimensions=int(raw["dimensions"]),
            max_seq_length=int(raw["max_seq_length"]),
        )


class OnnxEmbedder:
    def __init__(self, model_dir: Path, *, batch_size: int = 32, threads: int | None = None) -> None:
        manifest = ModelManifest.load(model_dir)
        self.dimensions = manifest.dimensions
        self.max_tokens = manifest.max_seq_length
        self._batch_size = batch_size
        self._tokenizer = Tokenizer.from_file(str(model_dir / TOKENIZER_FILE))
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(max_length=self.max_tokens, stride=WINDOW_OVERLAP_TOKENS)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads is not None:
            options.intra_op_num_threads = threads
        self._session = ort.InferenceSession(
            str(model_dir / manifest.onnx_file), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._input_names = {node.name for node in self._session.get_inputs()}

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        windows: list[Encoding] = []
        text_of_window: list[int] = []
        for text_index, encoding in enumerate(self._tokenizer.encode_batch(list(texts))):
            for window in bounded_windows([encoding, *encoding.overflowing]):
                windows.append(window)
                text_of_window.append(text_index)
        window_vectors, window_tokens = self._embed_windows(windows)
        if len(windows) == len(texts):
            return window_vectors
        # Token-weighted mean of each text's (unit) window vectors, then back to unit length.
        combined = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        np.add.at(combined, np.asarray(text_of_window), window_vectors * window_tokens[:, None])
        return l2_normalize(combined)

    def _embed_windows(self, windows: Sequence[Encoding]) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        vectors = np.zeros((len(windows), self.dimensions), dtype=np.float32)
        tokens = np.zeros(len(windows), dtype=np.float32)
        # Batching windows of similar length wastes less work on padding.
        order = sorted(range(len(windows)), key=lambda i: len(windows[i].ids))
        for start in range(0, len(order), self._batch_size):
            batch = order[start : start + self._batch_size]
            inputs = _pad([windows[i] for i in batch])
            feed = {name: value for name, value in inputs.items() if name in self._input_names}
            token_embeddings = self._session.run(None, feed)[0]
            vectors[batch] = l2_normalize(mean_pool(token_embeddings, inputs["attention_mask"]))
            tokens[batch] = inputs["attention_mask"].sum(axis=1)
        return vectors, tokens


def bounded_windows(
    windows: Sequence[Encoding], *, limit: int = MAX_WINDOWS_PER_TEXT, prefix: int = PREFIX_WINDOWS
) -> list[Encoding]:
    """The windows of one text that are embedded: all of them up to `limit`; past it the first
    `prefix`, then `limit - prefix` spread evenly over the rest, from its first to its last."""
    if not 0 < prefix < limit:
        raise ValueError("the prefix must leave room for a sample in the limit")
    if len(windows) <= limit:
        return list(windows)
    rest = len(windows) - prefix
    sample = np.linspace(prefix, len(windows) - 1, num=min(limit - prefix, rest)).round().astype(int)
    return [*windows[:prefix], *(windows[i] for i in sorted(set(sample.tolist())))]


def _pad(windows: Sequence[Encoding]) -> dict[str, npt.NDArray[np.int64]]:
    length = max(len(window.ids) for window in windows)
    arrays = {name: np.zeros((len(windows), length), dtype=np.int64) for name in _INPUTS}
    for row, window in enumerate(windows):
        size = len(window.ids)
        arrays["input_ids"][row, :size] = window.ids
        arrays["attention_mask"][row, :size] = window.attention_mask
        arrays["token_type_ids"][row, :size] = window.type_ids
    return arrays


_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def mean_pool(
    token_embeddings: npt.NDArray[np.float32], attention_mask: npt.NDArray[np.int64]
) -> npt.NDArray[np.float32]:
    mask = attention_mask[..., None].astype(np.float32)
    summed = (token_embeddings * mask).sum(axis=1)
    counts = np.clip(mask.sum(axis=1), 1e-9, None)
    return np.asarray(summed / counts, dtype=np.float32)


def l2_normalize(vectors: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.asarray(vectors / np.clip(norms, 1e-12, None), dtype=np.float32)
