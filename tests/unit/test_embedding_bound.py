"""What one text may cost to embed is bounded (pai_core.embedding.onnx_embedder.bounded_windows),
and a text within the bound is embedded exactly as before."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pytest
from tokenizers import Encoding

from pai_core.config import DEFAULT_EMBEDDING_MODEL_DIR
from pai_core.embedding import OnnxEmbedder, l2_normalize
from pai_core.embedding.onnx_embedder import MAX_WINDOWS_PER_TEXT, PREFIX_WINDOWS, bounded_windows
from pai_core.requests import MAX_CONTENT_CHARS


class CountingEmbedder(OnnxEmbedder):
    """Records how many windows each call hands the model."""

    def __init__(self) -> None:
        super().__init__(DEFAULT_EMBEDDING_MODEL_DIR)
        self.windows_embedded: list[int] = []

    def _embed_windows(self, windows: Sequence[Encoding]) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        self.windows_embedded.append(len(windows))
        return super()._embed_windows(windows)

    def every_window(self, text: str) -> npt.NDArray[np.float32]:
        """The embedding as it was before the bound: the token-weighted mean over all windows."""
        encoding = self._tokenizer.encode(text)
        vectors, tokens = super()._embed_windows([encoding, *encoding.overflowing])
        if len(vectors) == 1:
            return vectors[0]
        return l2_normalize((vectors * tokens[:, None]).sum(axis=0, keepdims=True))[0]

    def window_count(self, text: str) -> int:
        return 1 + len(self._tokenizer.encode(text).overflowing)


@pytest.fixture(scope="module")
def embedder() -> CountingEmbedder:
    return CountingEmbedder()


@pytest.mark.parametrize("count", [1, 2, MAX_WINDOWS_PER_TEXT - 1, MAX_WINDOWS_PER_TEXT])
def test_texts_within_the_bound_keep_every_window(count: int) -> None:
    windows = list(range(count))
    assert bounded_windows(windows) == windows  # type: ignore[arg-type]


@pytest.mark.parametrize("count", [MAX_WINDOWS_PER_TEXT + 1, 40, 451, 5000])
def test_past_the_bound_the_prefix_and_an_even_sample_reaching_the_end(count: int) -> None:
    windows = list(range(count))
    kept: list[int] = bounded_windows(windows)  # type: ignore[arg-type, assignment]
    assert len(kept) == MAX_WINDOWS_PER_TEXT
    assert kept[:PREFIX_WINDOWS] == list(range(PREFIX_WINDOWS))
    assert kept == sorted(set(kept))  # in text order, none twice
    assert kept[-1] == count - 1
    gaps = np.diff(kept[PREFIX_WINDOWS:])
    assert gaps.max() - gaps.min() <= 1  # spread evenly over the rest


def test_the_prefix_must_leave_room_for_a_sample() -> None:
    with pytest.raises(ValueError, match="prefix"):
        bounded_windows([], limit=4, prefix=4)


def test_the_longest_text_a_store_takes_embeds_a_bounded_number_of_windows(embedder: CountingEmbedder) -> None:
    # One token per character: the most windows MAX_CONTENT_CHARS characters can make.
    text = "!" * MAX_CONTENT_CHARS
    assert embedder.window_count(text) > 20 * MAX_WINDOWS_PER_TEXT
    embedder.windows_embedded.clear()
    vector = embedder.embed([text])
    assert embedder.windows_embedded == [MAX_WINDOWS_PER_TEXT]
    assert vector.shape == (1, embedder.dimensions)
    assert float(np.linalg.norm(vector[0])) == pytest.approx(1.0, abs=1e-5)


def test_a_batch_is_bounded_per_text(embedder: CountingEmbedder) -> None:
    embedder.windows_embedded.clear()
    embedder.embed(["!" * MAX_CONTENT_CHARS, "a short note", "?" * MAX_CONTENT_CHARS])
    assert embedder.windows_embedded == [2 * MAX_WINDOWS_PER_TEXT + 1]


def test_texts_within_the_bound_get_exactly_the_vector_they_got_before(embedder: CountingEmbedder) -> None:
    short = "Dinner with Ana on Friday at the Italian place near the station."
    within = " ".join(f"note {i} about the garden, the bees and the plum tree." for i in range(100))
    assert embedder.window_count(short) == 1
    assert 1 < embedder.window_count(within) <= MAX_WINDOWS_PER_TEXT
    np.testing.assert_array_equal(embedder.embed([short])[0], embedder.every_window(short))
    # The same windows and weights; only the order of the float additions differs.
    np.testing.assert_allclose(embedder.embed([within])[0], embedder.every_window(within), rtol=0, atol=1e-6)


def test_a_text_past_the_bound_stays_close_to_its_full_embedding(embedder: CountingEmbedder) -> None:
    sentences = [
        "The cabin's wifi password is on the fridge.",
        "Ana's birthday is on the third of May.",
        "The dentist moved my appointment to Tuesday.",
        "We keep the bees at the far end of the garden.",
    ]
    text = " ".join(sentences[i % len(sentences)] for i in range(1500))
    assert embedder.window_count(text) > MAX_WINDOWS_PER_TEXT
    assert float(embedder.embed([text])[0] @ embedder.every_window(text)) >= 0.99
