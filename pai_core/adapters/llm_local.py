"""The offline chat model (SmolLM2-135M-Instruct, GGUF): no key, no network.

llama.cpp runs it in a child process, llama-cpp-python's OpenAI-compatible server, which the local
harness starts and supervises (pai_local.model_server); this process is only its client, so a crash
in llama.cpp costs one request a 503 instead of taking the API down with it. The client is the
OpenAI-compatible adapter, with the model's own tokenizer for the prompt budget.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pai_core.adapters.llm_openai import OpenAiChatModel
from pai_core.models import ChatMessage, Completion

# Sampling as the model has always been run here: it repeats itself without a penalty.
SAMPLING = {"repeat_penalty": 1.1}


def local_model_name(model_path: Path) -> str:
    """The name replies report, and the alias the server is started with."""
    return model_path.stem


class LocalTokenizer:
    """The model's own tokenizer, in this process, with the vocabulary alone loaded: no weights and
    no ggml compute (which is where llama.cpp crashes), only the tokenizer's own code. Counting here
    rather than through the server's /tokenize keeps the prompt budget exact without a round trip
    per count (a prompt is counted piece by piece, dozens of times), and without waiting behind a
    reply being generated: the server serves /tokenize under the same lock as generation."""

    def __init__(self, model_path: Path) -> None:
        try:
            import llama_cpp
        except ImportError as exc:  # an optional dependency: say what to install
            raise RuntimeError("the offline model needs llama-cpp-python: make setup installs it") from exc
        self._vocab = _vocabulary(llama_cpp, model_path)
        self._lock = threading.Lock()

    def count(self, text: str) -> int:
        # "replace": a lone surrogate is a bad request, refused elsewhere; counting never fails on one.
        encoded = text.encode("utf-8", "replace")
        with self._lock:
            return len(self._vocab.tokenize(encoded, False, False))  # no BOS, no special tokens


def _vocabulary(llama_cpp: Any, model_path: Path) -> Any:
    """Something with tokenize(text, add_bos, special) over the vocabulary alone. llama-cpp-python's
    model wrapper loads it and nothing else; Llama(vocab_only=True) also sets up an (empty) context
    and warns on the console that the model has no training context, so it is only the fallback,
    should the wrapper move in a later release."""
    try:
        from llama_cpp._internals import LlamaModel
    except ImportError:
        return llama_cpp.Llama(model_path=str(model_path), vocab_only=True, verbose=False)
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    return LlamaModel(path_model=str(model_path), params=params, verbose=False)


class LocalServerChatModel(OpenAiChatModel):
    """The OpenAI-compatible client, but a plain reply is asked for as a stream and put together
    here. The server stops writing a streamed reply as soon as its reader leaves (a timeout, say),
    while a plain one is finished whoever still waits for it, and, one reply at a time, every
    request after it would wait too."""

    def response_format(self, schema: Mapping[str, Any], schema_name: str) -> dict[str, Any]:
        # llama-cpp-python's server turns a JSON schema into a grammar in this form (not OpenAI's).
        return {"type": "json_object", "schema": dict(schema)}

    def complete(self, messages: Sequence[ChatMessage], *, max_tokens: int) -> Completion:
        # stream() ends with exactly one Completion, or raises.
        return next(item for item in self.stream(messages, max_tokens=max_tokens) if isinstance(item, Completion))


def local_server_chat_model(
    *, url: str, model_path: Path, context_tokens: int, timeout_seconds: float, max_attempts: int
) -> LocalServerChatModel:
    """The `local` provider: a client of the offline model's server at `url` (its /v1 base)."""
    return LocalServerChatModel(
        base_url=url,
        api_key="no-key",  # the server is on loopback and asks for none; the client insists on one
        model=local_model_name(model_path),
        context_tokens=context_tokens,
        timeout_seconds=timeout_seconds,
        max_attempts=max_attempts,
        token_counter=LocalTokenizer(model_path).count,
        extra_body=SAMPLING,
    )
