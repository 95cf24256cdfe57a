"""The offline chat model: SmolLM2-135M-Instruct (GGUF) run by llama-cpp-python, no key, no network."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from pai_core.errors import UpstreamUnavailable
from pai_core.models import ChatMessage, Completion, TextDelta, Usage


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

    def stream(self, messages: Sequence[ChatMessage], *, max_tokens: int) -> Iterator[TextDelta | Completion]:
        pieces: list[str] = []
        generated = 0
        # The lock is held while the caller consumes the stream, and released if it stops early.
        with self._lock:
            try:
                chunks = self._llm.create_chat_completion(
                    messages=_payload(messages),
                    max_tokens=max_tokens,
                    temperature=self._temperature,
                    repeat_penalty=1.1,
                    stream=True,
                )
                for chunk in chunks:
                    text = chunk["choices"][0]["delta"].get("content") or ""
                    if text:
                        generated += 1  # llama.cpp streams one token per chunk
                        pieces.append(text)
                        yield TextDelta(text)
                context_used = int(self._llm.n_tokens)
            except (RuntimeError, ValueError) as exc:
                raise UpstreamUnavailable("the local model failed to answer") from exc
        yield Completion(
            text="".join(pieces).strip(),
            model=self.name,
            usage=Usage(input_tokens=max(context_used - generated, 0), output_tokens=generated),
        )

    def complete(self, messages: Sequence[ChatMessage], *, max_tokens: int) -> Completion:
        payload = _payload(messages)
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


def _payload(messages: Sequence[ChatMessage]) -> list[dict[str, str]]:
    return [{"role": message.role, "content": message.content} for message in messages]
