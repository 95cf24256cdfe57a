"""Any OpenAI-compatible chat completions endpoint (OpenAI, Ollama, vLLM, llama.cpp's server, LM
Studio) as the chat model, through the official `openai` client."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import openai

from pai_core.adapters.token_estimate import estimate_tokens
from pai_core.deadline import remaining_seconds
from pai_core.errors import UpstreamInvalidResponse, UpstreamUnavailable
from pai_core.models import ChatMessage, Completion, TextDelta, Usage

# The client waits up to 8 s between attempts, or what a Retry-After header asks for up to two minutes.
LONGEST_RETRY_WAIT_SECONDS = 120.0


class OpenAiChatModel:
    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        model: str,
        context_tokens: int,
        timeout_seconds: float,
        max_attempts: int,
        temperature: float = 0.3,
    ) -> None:
        # The client retries connection errors, 408/409/429 and 5xx with exponential backoff and
        # jitter (honouring Retry-After); max_retries counts retries, not attempts.
        self._max_retries = max(max_attempts - 1, 0)
        self._timeout_seconds = timeout_seconds
        self._client = openai.OpenAI(
            base_url=base_url, api_key=api_key, timeout=timeout_seconds, max_retries=self._max_retries
        )
        self.name = model
        self.context_tokens = context_tokens
        self._temperature = temperature

    def count_tokens(self, text: str) -> int:
        return estimate_tokens(text)

    def _client_within_deadline(self) -> openai.OpenAI:
        """The client, making no more attempts than the request's deadline has room for
        (pai_core.deadline): none when not even one fits, no retry whose wait could overrun it."""
        remaining = remaining_seconds()
        if remaining is None:
            return self._client
        if remaining < self._timeout_seconds:
            raise UpstreamUnavailable("not enough time left in this request for a model call")
        retries = self._max_retries
        while retries and (retries + 1) * self._timeout_seconds + retries * LONGEST_RETRY_WAIT_SECONDS > remaining:
            retries -= 1
        return self._client if retries == self._max_retries else self._client.with_options(max_retries=retries)

    def _request(self, messages: Sequence[ChatMessage], max_tokens: int) -> dict[str, Any]:
        return {
            "model": self.name,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "max_tokens": max_tokens,
            "temperature": self._temperature,
        }

    def complete(self, messages: Sequence[ChatMessage], *, max_tokens: int) -> Completion:
        with _translated_errors():
            response = self._client_within_deadline().chat.completions.create(**self._request(messages, max_tokens))
        try:
            text = (response.choices[0].message.content or "").strip()
        except (AttributeError, IndexError, TypeError) as exc:
            raise UpstreamInvalidResponse(
                "the model endpoint answered with something that is not a chat reply"
            ) from exc
        return Completion(
            text=text, model=response.model or self.name, usage=self._usage(response.usage, messages, text)
        )

    def stream(self, messages: Sequence[ChatMessage], *, max_tokens: int) -> Iterator[TextDelta | Completion]:
        pieces: list[str] = []
        usage: Any = None
        model = self.name
        with _translated_errors():
            chunks = self._client_within_deadline().chat.completions.create(
                **self._request(messages, max_tokens), stream=True, stream_options={"include_usage": True}
            )
            for chunk in chunks:
                model = chunk.model or model
                usage = chunk.usage or usage
                for choice in chunk.choices or []:
                    text = choice.delta.content if choice.delta else None
                    if text:
                        pieces.append(text)
                        yield TextDelta(text)
        text = "".join(pieces).strip()
        yield Completion(text=text, model=model, usage=self._usage(usage, messages, text))

    def _usage(self, reported: Any, messages: Sequence[ChatMessage], reply: str) -> Usage:
        """The endpoint's own counts when it reports them, else the documented estimate."""
        if reported is not None and reported.prompt_tokens is not None:
            return Usage(input_tokens=int(reported.prompt_tokens), output_tokens=int(reported.completion_tokens or 0))
        prompt = sum(self.count_tokens(m.content) for m in messages)
        return Usage(input_tokens=prompt, output_tokens=self.count_tokens(reply))


@contextmanager
def _translated_errors() -> Iterator[None]:
    try:
        yield
    except openai.RateLimitError as exc:
        raise UpstreamUnavailable("the model endpoint is throttling", retry_after_seconds=_retry_after(exc)) from exc
    except (openai.APIConnectionError, openai.InternalServerError) as exc:  # includes timeouts
        raise UpstreamUnavailable("the model endpoint is unavailable") from exc
    except openai.APIStatusError as exc:
        raise UpstreamInvalidResponse(f"the model endpoint refused the request ({exc.status_code})") from exc
    except openai.APIError as exc:  # a response it could not parse, a stream that broke off
        raise UpstreamInvalidResponse("the model endpoint answered with something unusable") from exc


def _retry_after(exc: openai.APIStatusError) -> int:
    try:
        return max(1, math.ceil(float(exc.response.headers.get("retry-after", "1"))))
    except ValueError:
        return 1
