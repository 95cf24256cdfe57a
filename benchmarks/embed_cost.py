"""What the largest text a store accepts costs to embed, with the per-text window bound and without it.

    python -m benchmarks.embed_cost

The baseline (every window embedded, as before the bound) runs in the same process on the same
texts: the bounded embedder's own code with the bound lifted. CPU seconds are the process's
(`time.process_time`), on one onnxruntime thread, as a Lambda of about one vCPU has; the best of
`--repeat` runs is kept.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from pai_core.config import DEFAULT_EMBEDDING_MODEL_DIR
from pai_core.embedding import onnx_embedder
from pai_core.embedding.onnx_embedder import MAX_WINDOWS_PER_TEXT, OnnxEmbedder
from pai_core.requests import MAX_CONTENT_CHARS

_PROSE = (
    "the quick brown fox jumps over the lazy dog while my assistant remembers notes about travel plans "
    "family birthdays the dentist on tuesday and the wifi password for the cabin"
)


def texts(chars: int = MAX_CONTENT_CHARS) -> dict[str, str]:
    rng = random.Random(7)
    words = _PROSE.split(" ")
    english = " ".join(rng.choice(words) for _ in range(chars))[:chars]
    # One token per character: the most windows a text of this length can make.
    cjk = "".join(chr(rng.randint(0x4E00, 0x9FFF)) for _ in range(chars))
    return {"English prose": english, "CJK (1 token/char)": cjk}


def cpu_seconds(run: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        run()
        best = min(best, time.process_time() - start)
    return best


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_EMBEDDING_MODEL_DIR)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args(argv)
    embedder = OnnxEmbedder(args.model_dir, threads=1)
    embedder.embed(["warm up"])
    bounded = onnx_embedder.bounded_windows
    print(f"| text ({MAX_CONTENT_CHARS:,} chars) | windows | embedded | CPU s, all windows | CPU s, bounded |")
    print("|---|---:|---:|---:|---:|")
    for name, text in texts().items():
        encoding = embedder._tokenizer.encode(text)
        windows = 1 + len(encoding.overflowing)
        embedded = len(bounded([encoding, *encoding.overflowing]))
        bounded_cost = cpu_seconds(lambda text=text: embedder.embed([text]), args.repeat)  # type: ignore[misc]
        onnx_embedder.bounded_windows = lambda windows, **_: list(windows)  # type: ignore[assignment]
        try:
            unbounded_cost = cpu_seconds(lambda text=text: embedder.embed([text]), 1)  # type: ignore[misc]
        finally:
            onnx_embedder.bounded_windows = bounded
        print(f"| {name} | {windows} | {embedded} | {unbounded_cost:.2f} | {bounded_cost:.2f} |")
    print(f"\nAt most {MAX_WINDOWS_PER_TEXT} windows of {embedder.max_tokens} tokens are embedded per text.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
