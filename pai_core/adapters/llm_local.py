"""The offline chat model: SmolLM2-135M-Instruct (GGUF) run by llama-cpp-python, no key, no network."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pai_core.errors import UpstreamUnavailable
from pai_core.models import ChatMessage, Completion, Usage


class LlamaCppChatModel:
    def __init__(self, model_path: Path, *, context_tokens: int, threads: int, temperature: float = 0.3) -> None:
        try:
            from llama_cpp import Llama
        except ImportError as exc:  # an optional dependency: say what to install
            raise RuntimeError("the offline model needs llama-cpp-python: pip install -e '.[local]'") from exc
        self.name = model_path.stem
        self.context_tokens = context_tokens
        self._temperature = temperature
        self._llm: Any = Llama(
            model_path=str(model_path), n_ctx=context_tokens, n_threads=threads, verbose=False, seed=7
        )
        # One llama.cpp context serves one generation at a time.
        self._lock = threading.Lock()

    def count_tokens(self, text: str) -> int:
        with self._lock:
            return len(self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def complete(self, messages: Sequence[ChatMessage], *, max_tokens: int) -> Completion:
        payload = [{"role": message.role, "content": message.content} for message in messages]
        try:
            with self._lock:
                result = self._llm.create_chat_completion(
                    messages=payload, max_tokens=max_tokens, temperature=self._temperature, repeat_penalty=1.1
                )
        except (RuntimeError, ValueError) as exc:
            raise UpstreamUnavailable("the local model failed to answer") from exc
        text = (result["choices"][0]["message"].get("content") or "").strip()
        usage = result.get("usage") or {}
        return Completion(
            text=text,
            model=self.name,
            usage=Usage(
                input_tokens=int(usage.get("prompt_tokens", 0)), output_tokens=int(usage.get("completion_tokens", 0))
            ),
        )
