"""Token counts for providers that expose no tokenizer (Bedrock, OpenAI-compatible endpoints).

They serve many models with many tokenizers; English averages about 4 characters a token. We count
3, generously on purpose, so that a prompt we think fits the model's window really does."""

from __future__ import annotations

import math

CHARS_PER_TOKEN_ESTIMATE = 3.0


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN_ESTIMATE)
