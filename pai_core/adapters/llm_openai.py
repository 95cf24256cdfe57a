"""Any OpenAI-compatible chat completions endpoint (OpenAI, Ollama, vLLM, llama.cpp's server, LM
Studio) as the chat model, through the official `openai` client."""

from __future__ import annotations

import math
import queue
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from time import monotonic
from typing import Any

import openai

from pai_core.adapters.token_estimate import estimate_tokens
from pai_core.deadline import ensure_time_for, has_time_for
from pai_core.errors import UpstreamInvalidResponse, UpstreamUnavailable
from pai_core.models import ChatMessage, Completion, TextDelta, Usage

# Waits between attempts, as the openai client's own: 0.5 s doubling up to 8 s, less up to 25% jitter.
FIRST_RETRY_WAIT_SECONDS = 0.5
LONGEST_BACKOFF_SECONDS = 8.0
# A longer Retry-After is passed on to our caller (with the 503) rather than waited out here.
LONGEST_ASKED_WAIT_SECONDS = 60.0
_RETRYABLE_STATUS = {408, 409, 429}


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
        http_client: Any = None,
        token_counter: Callable[[str], int] | None = None,
        extra_body: Mapping[str, Any] | None = None,
    ) -> None:
        """`token_counter`: the model's own tokenizer when the caller has it (the offline model),
        else the documented estimate. `extra_body`: sampling options the endpoint accepts beyond
        OpenAI's own (llama.cpp's repeat_penalty, say)."""
        # Retries are made here, not by the client: the client would honour a Retry-After of up to
        # two minutes, far past any function's timeout (see _create).
        self._max_attempts = max(max_attempts, 1)
        self._timeout_seconds = timeout_seconds
        self._client = openai.OpenAI(
            base_url=base_url, api_key=api_key, timeout=timeout_seconds, max_retries=0, http_client=http_client
        )
        self.name = model
        self.context_tokens = context_tokens
        self._temperature = temperature
        self._count_tokens = token_counter or estimate_tokens
        self._extra_body = dict(extra_body) if extra_body else None

    def count_tokens(self, text: str) -> int:
        return self._count_tokens(text)

    def _create(self, **request: Any) -> tuple[Any, float]:
        """One chat completions call, and when (monotonic time) its successful attempt began.
        Connection errors, timeouts, 408/409/429 and 5xx are retried after an exponential backoff
        with jitter (or the Retry-After asked for), up to the configured attempts, and only while the
        wait and a whole attempt fit the request's deadline (pai_core.deadline); otherwise the last
        failure stands, with its Retry-After."""
        attempt = 1
        while True:
            ensure_time_for(self._timeout_seconds, "a model call")
            started = monotonic()
            try:
                return self._client.chat.completions.create(**request), started
            except openai.APIError as exc:
                if attempt >= self._max_attempts or not _retryable(exc):
                    raise
                wait = _wait_before_retry(attempt, exc)
                if wait > LONGEST_ASKED_WAIT_SECONDS or not has_time_for(wait + self._timeout_seconds):
                    raise
            time.sleep(wait)
            attempt += 1

    def _request(self, messages: Sequence[ChatMessage], max_tokens: int) -> dict[str, Any]:
        request: dict[str, Any] = {
            "model": self.name,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "max_tokens": max_tokens,
            "temperature": self._temperature,
        }
        if self._extra_body:
            request["extra_body"] = self._extra_body
        return request

    def complete(self, messages: Sequence[ChatMessage], *, max_tokens: int) -> Completion:
        # The timeout is per read, and the endpoint sends nothing until the reply is complete:
        # each attempt is bounded by it as a whole.
        with _translated_errors():
            response, _ = self._create(**self._request(messages, max_tokens))
        try:
            text = (response.choices[0].message.content or "").strip()
        except (AttributeError, IndexError, TypeError) as exc:
            raise UpstreamInvalidResponse(
                "the model endpoint answered with something that is not a chat reply"
            ) from exc
        return Completion(
            text=text, model=response.model or self.name, usage=self._usage(response.usage, messages, text)
        )

    def response_format(self, schema: Mapping[str, Any], schema_name: str) -> dict[str, Any]:
        """OpenAI's structured outputs: decoding constrained to the schema."""
        return {"type": "json_schema", "json_schema": {"name": schema_name, "schema": dict(schema), "strict": True}}

    def complete_structured(
        self, messages: Sequence[ChatMessage], *, schema: Mapping[str, Any], schema_name: str, max_tokens: int
    ) -> Completion:
        """A reply held to a JSON schema (pai_core.learning.model.StructuredModel), at temperature 0."""
        request = self._request(messages, max_tokens)
        request["temperature"] = 0.0
        request["response_format"] = self.response_format(schema, schema_name)
        with _translated_errors():
            response, _ = self._create(**request)
        try:
            text = (response.choices[0].message.content or "").strip()
        except (AttributeError, IndexError, TypeError) as exc:
            raise UpstreamInvalidResponse("the model endpoint answered with something that is not a reply") from exc
        return Completion(
            text=text, model=response.model or self.name, usage=self._usage(response.usage, messages, text)
        )

    def stream(self, messages: Sequence[ChatMessage], *, max_tokens: int) -> Iterator[TextDelta | Completion]:
        pieces: list[str] = []
        usage: Any = None
        model = self.name
        with _translated_errors():
            # Only opening the stream is retried: once a piece of the reply is out, it stands.
            chunks, started = self._create(
                **self._request(messages, max_tokens), stream=True, stream_options={"include_usage": True}
            )
            # The client's timeout bounds each read, not a reply trickling in for minutes: the
            # attempt that opened the stream has the timeout for all of it.
            for chunk in within_deadline(chunks, started + self._timeout_seconds):
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


class StreamDeadlineExceeded(UpstreamUnavailable):
    """A streamed reply that did not end within the model call's timeout."""


def within_deadline(chunks: Iterable[Any], deadline: float, *, clock: Callable[[], float] = monotonic) -> Iterator[Any]:
    """The chunks of a stream, until `deadline` (by `clock`), then StreamDeadlineExceeded.

    A helper thread reads them, so that waiting can stop at the deadline even while a read is
    blocked (a stalled or frozen server). That thread closes the stream once its read returns (the
    client's per-read timeout bounds that wait), read to the end or left. The stream's own errors
    are raised here, in the reader's thread."""
    handoff: queue.SimpleQueue[tuple[bool, Any]] = queue.SimpleQueue()
    abandoned = threading.Event()
    end = object()

    def pump() -> None:
        try:
            for chunk in chunks:
                if abandoned.is_set():
                    break
                handoff.put((True, chunk))
            handoff.put((True, end))
        except BaseException as exc:  # handed to the reader, who raises it
            handoff.put((False, exc))
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()

    threading.Thread(target=pump, name="model-stream", daemon=True).start()
    try:
        while True:
            remaining = deadline - clock()
            try:
                if remaining <= 0:
                    raise queue.Empty
                ok, item = handoff.get(timeout=remaining)
            except queue.Empty:
                raise StreamDeadlineExceeded("the model did not finish its reply in time") from None
            if not ok:
                raise item
            if item is end:
                return
            yield item
    finally:
        abandoned.set()


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


def _retryable(exc: openai.APIError) -> bool:
    if isinstance(exc, openai.APIConnectionError):  # includes timeouts
        return True
    return isinstance(exc, openai.APIStatusError) and (exc.status_code in _RETRYABLE_STATUS or exc.status_code >= 500)


def _wait_before_retry(attempt: int, exc: openai.APIError) -> float:
    if isinstance(exc, openai.APIStatusError):
        try:
            asked = float(exc.response.headers.get("retry-after", ""))
        except ValueError:
            asked = math.nan
        if math.isfinite(asked) and asked > 0:
            return asked
    backoff = min(FIRST_RETRY_WAIT_SECONDS * 2.0 ** (attempt - 1), LONGEST_BACKOFF_SECONDS)
    return backoff * (1 - 0.25 * random.random())


def _retry_after(exc: openai.APIStatusError) -> int:
    try:
        return max(1, math.ceil(float(exc.response.headers.get("retry-after", "1"))))
    except ValueError:
        return 1
