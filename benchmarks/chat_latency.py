"""Chat latency of the offline model: in-process (llama.cpp) and through the OpenAI-compatible path
(llama-cpp-python's server on loopback, the same GGUF), measured in one run.

Prints time to first token (p50 over a few prompts) and generation speed (tokens/s) for each, and
the ratio between them (the HTTP path against in-process as the baseline).
"""

from __future__ import annotations

import math
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

from pai_core.adapters.llm_local import LlamaCppChatModel
from pai_core.adapters.llm_openai import OpenAiChatModel
from pai_core.config import Settings
from pai_core.errors import PaiError
from pai_core.models import ChatMessage, Completion
from pai_core.ports import ChatModel
from pai_local.emulator import free_port

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
def openai_compatible_server(gguf: str) -> Iterator[str]:
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            gguf,
            "--model_alias",
            "smollm2",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            "2048",
            "--n_threads",
            str(THREADS),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}/models", timeout=1)  # noqa: S310 (loopback)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("llama-cpp-python's server did not start") from None
                time.sleep(0.2)
        yield url
    finally:
        server.kill()
        server.wait(timeout=10)


def run() -> list[tuple[str, dict[str, float]]]:
    gguf = Settings.from_env({}).resolve_local_llm_path()
    local = LlamaCppChatModel(gguf, context_tokens=2048, threads=THREADS)
    measure(local)  # warm-up: first-load effects are cold start, not chat latency
    results = [("local (llama.cpp in-process)", measure(local))]
    del local
    with openai_compatible_server(str(gguf)) as url:
        remote = OpenAiChatModel(
            base_url=url, api_key="any", model="smollm2", context_tokens=2048, timeout_seconds=60, max_attempts=1
        )
        measure(remote)
        results.append(("openai-compatible (llama.cpp server, HTTP)", measure(remote)))
    return results


def table(results: list[tuple[str, dict[str, float]]]) -> str:
    base = results[0][1]
    lines = [
        f"Chat: SmolLM2-135M-Instruct Q4_1, {THREADS} threads, up to {MAX_TOKENS} tokens, "
        f"median of {len(PROMPTS)} prompts",
        "",
        "| path | time to first token (ms) | tokens/s | TTFT vs local | tokens/s vs local | failed prompts |",
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


if __name__ == "__main__":
    print(table(run()))
