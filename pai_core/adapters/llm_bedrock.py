"""Amazon Bedrock as the chat model, through the Converse API (any model Converse serves)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from pai_core.adapters.aws_errors import error_code
from pai_core.adapters.token_estimate import estimate_tokens
from pai_core.errors import UpstreamInvalidResponse, UpstreamUnavailable
from pai_core.models import ChatMessage, Completion, TextDelta, Usage

if TYPE_CHECKING:
    from mypy_boto3_bedrock_runtime import BedrockRuntimeClient

_RETRY_LATER = {
    "ThrottlingException",
    "ServiceUnavailableException",
    "ModelTimeoutException",
    "ModelNotReadyException",
    "InternalServerException",
    "ServiceQuotaExceededException",
    "ModelStreamErrorException",
}


class BedrockChatModel:
    def __init__(
        self, client: BedrockRuntimeClient, model_id: str, *, context_tokens: int, temperature: float = 0.3
    ) -> None:
        self._client = client
        self.name = model_id
        self.context_tokens = context_tokens
        self._temperature = temperature

    def count_tokens(self, text: str) -> int:
        return estimate_tokens(text)

    def _request(self, messages: Sequence[ChatMessage], max_tokens: int) -> dict[str, Any]:
        return {
            "modelId": self.name,
            "system": [{"text": m.content} for m in messages if m.role == "system"],
            "messages": converse_messages(messages),
            "inferenceConfig": {"maxTokens": max_tokens, "temperature": self._temperature},
        }

    def complete(self, messages: Sequence[ChatMessage], *, max_tokens: int) -> Completion:
        with _translated_errors():
            response: Any = self._client.converse(**self._request(messages, max_tokens))
        try:
            blocks = response["output"]["message"]["content"]
            text = "".join(block.get("text", "") for block in blocks).strip()
            return Completion(text=text, model=self.name, usage=_usage(response.get("usage", {})))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise UpstreamInvalidResponse("Bedrock answered with something that is not a chat reply") from exc

    def complete_structured(
        self, messages: Sequence[ChatMessage], *, schema: Mapping[str, Any], schema_name: str, max_tokens: int
    ) -> Completion:
        """A reply held to a JSON schema (pai_core.learning.model.StructuredModel): the schema is a
        tool's input schema and the model is made to call that tool; its input is the JSON."""
        request = self._request(messages, max_tokens)
        request["inferenceConfig"]["temperature"] = 0.0
        request["toolConfig"] = {
            "tools": [
                {
                    "toolSpec": {
                        "name": schema_name,
                        "description": "Record the answer.",
                        "inputSchema": {"json": dict(schema)},
                    }
                }
            ],
            "toolChoice": {"tool": {"name": schema_name}},
        }
        with _translated_errors():
            response: Any = self._client.converse(**request)
        try:
            blocks = response["output"]["message"]["content"]
            calls = [block["toolUse"]["input"] for block in blocks if "toolUse" in block]
            text = json.dumps(calls[0]) if calls else "".join(block.get("text", "") for block in blocks).strip()
            return Completion(text=text, model=self.name, usage=_usage(response.get("usage", {})))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise UpstreamInvalidResponse("Bedrock answered with something that is not a reply") from exc

    def stream(self, messages: Sequence[ChatMessage], *, max_tokens: int) -> Iterator[TextDelta | Completion]:
        pieces: list[str] = []
        usage = Usage(input_tokens=0, output_tokens=0)
        with _translated_errors():
            response: Any = self._client.converse_stream(**self._request(messages, max_tokens))
            # Errors that happen mid-stream arrive as exception events, raised here by botocore.
            for event in response["stream"]:
                if "contentBlockDelta" in event:
                    text = event["contentBlockDelta"].get("delta", {}).get("text", "")
                    if text:
                        pieces.append(text)
                        yield TextDelta(text)
                elif "metadata" in event:
                    usage = _usage(event["metadata"].get("usage", {}))
        yield Completion(text="".join(pieces).strip(), model=self.name, usage=usage)


@contextmanager
def _translated_errors() -> Iterator[None]:
    try:
        yield
    except ClientError as exc:
        code = error_code(exc)
        code = code[:1].upper() + code[1:]  # ConverseStream's exception events are lower camel case
        if code in _RETRY_LATER:
            raise UpstreamUnavailable(f"Bedrock is unavailable ({code})", retry_after_seconds=2) from exc
        # Validation, access and model errors: the deployment is misconfigured or the model refused.
        raise UpstreamInvalidResponse(f"Bedrock refused the request ({code})") from exc
    except BotoCoreError as exc:  # connection failures and read timeouts, after botocore's retries
        raise UpstreamUnavailable("Bedrock cannot be reached") from exc


def _usage(raw: dict[str, Any]) -> Usage:
    return Usage(input_tokens=int(raw.get("inputTokens", 0)), output_tokens=int(raw.get("outputTokens", 0)))


def converse_messages(messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    """Converse wants user and assistant turns alternating, starting with the user: consecutive turns
    of one role (a user turn whose reply failed) are joined, and a leading assistant turn dropped."""
    merged: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "system":
            continue
        if not merged and message.role == "assistant":
            continue
        if merged and merged[-1]["role"] == message.role:
            merged[-1]["content"][0]["text"] += "\n\n" + message.content
        else:
            merged.append({"role": message.role, "content": [{"text": message.content}]})
    return merged
