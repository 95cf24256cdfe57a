"""Chat latency of the offline model: in-process (llama.cpp, the baseline) and as PAI serves it
(llama-cpp-python's server in a supervised child process, on loopback, the same GGUF), in one run.

Prints time to first token (p50 over a few prompts) and generation speed (tokens/s) for each, and
the ratio between them (the HTTP path against in-process as the baseline).
"""

from __future__ import annotations

import math
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pai_core.adapters.llm_local import local_server_chat_model
from pai_core.config import Settings
from pai_core.errors import PaiError, UpstreamUnavailable
from pai_core.models import ChatMessage, Completion, TextDelta, Usage
from pai_core.ports import ChatModel
from pai_local.emulator import free_port
from pai_local.model_server import ModelServer, ModelServerCommand

PROMPTS = [
    "Name three things to pack for a rainy weekend.",
    "Explain in two sentences why the sky is blue.",
    "Suggest a name for a grey cat.",
    "What is a good breakfast before a long run?",
    "Give me one tip for remembering people's names.",
]
MAX_TOKENS = 96
THREADS = 2


def measure(model: ChatModel) -> dict[str, float]:
    """Medians over the prompts that were answered; a prompt the model failed on (a 503's
    UpstreamUnavailable: a timeout, a crashed model process) is counted in `failed` instead."""
    first_token: list[float] = []
    speeds: list[float] = []
    failed = 0
    for prompt in PROMPTS:
        messages = [
            ChatMessage(role="system", content="You are a helpful assistant."),
            ChatMessage(role="user", content=prompt),
        ]
        started = time.perf_counter()
        first: float | None = None
        final: Completion | None = None
        try:
            for item in model.stream(messages, max_tokens=MAX_TOKENS):
                if first is None:
                    first = time.perf_counter()
                if isinstance(item, Completion):
                    final = item
        except PaiError as exc:
            print(f"[chat_latency] a prompt failed (counted, not timed): {exc.message}", file=sys.stderr)
            failed += 1
            continue
        ended = time.perf_counter()
        if first is None or final is None:
            failed += 1
            continue
        first_token.append(first - started)
        if final.usage.output_tokens > 1 and ended > first:
            speeds.append((final.usage.output_tokens - 1) / (ended - first))
    return {
        "ttft_p50_ms": statistics.median(first_token) * 1000 if first_token else math.nan,
        "tokens_per_s": statistics.median(speeds) if speeds else math.nan,
        "failed": failed,
    }


@contextmanager
def supervised_server(gguf: Path, log: Path) -> Iterator[ModelServer]:
    """The offline model as PAI serves it: llama-cpp-python's server in a supervised child."""
    server = ModelServer(ModelServerCommand(gguf, 2048, THREADS), port=free_port(), log_path=log)
    with server.serving():
        yield server


def run() -> list[tuple[str, dict[str, float]]]:
    gguf = Settings.from_env({}).resolve_local_llm_path()
    local = LlamaCppChatModel(gguf, context_tokens=2048, threads=THREADS)
    measure(local)  # warm-up: first-load effects are cold start, not chat latency
    results = [("in-process llama.cpp (the baseline; PAI no longer runs this)", measure(local))]
    del local
    with tempfile.TemporaryDirectory() as scratch, supervised_server(gguf, Path(scratch) / "model.log") as server:
        served = local_server_chat_model(
            url=server.url, model_path=gguf, context_tokens=2048, timeout_seconds=60, max_attempts=1
        )
        measure(served)
        results.append(("`local`: llama.cpp server in a supervised child, HTTP on loopback", measure(served)))
    return results


def table(results: list[tuple[str, dict[str, float]]]) -> str:
    base = results[0][1]
    lines = [
        f"Chat: SmolLM2-135M-Instruct Q4_1, {THREADS} threads, up to {MAX_TOKENS} tokens, "
        f"median of {len(PROMPTS)} prompts",
        "",
        "| path | time to first token (ms) | tokens/s | TTFT vs in-process | tokens/s vs in-process | failed prompts |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, numbers in results:
        # NaN (every prompt failed) formats as "nan" and spreads through the ratios: no exception.
        ttft_ratio = numbers["ttft_p50_ms"] / base["ttft_p50_ms"]
        speed_ratio = numbers["tokens_per_s"] / base["tokens_per_s"]
        lines.append(
            f"| {name} | {numbers['ttft_p50_ms']:.0f} | {numbers['tokens_per_s']:.0f} | "
            f"{ttft_ratio:.2f}x | {speed_ratio:.2f}x | {numbers['failed']:.0f} |"
        )
    return "\n".join(lines)


class LlamaCppChatModel:
    """The offline model run in this process, as PAI once did: the baseline the server path is
    measured against. PAI itself never runs llama.cpp in the API's process (pai_local.model_server)."""

    def __init__(self, model_path: Path, *, context_tokens: int, threads: int, temperature: float = 0.3) -> None:
        try:
            from llama_cpp import Llama
        except ImportError as exc:  # an optional dependency: say what to install
            raise RuntimeError("the offline model needs llama-cpp-python: make setup installs it") from exc
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


if __name__ == "__main__":
    print(table(run()))
