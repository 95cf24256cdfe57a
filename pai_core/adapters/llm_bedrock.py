"""Amazon Bedrock as the chat model, through the Converse API (any model Converse serves)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from pai_core.adapters.aws_errors import error_code
from pai_core.errors import UpstreamInvalidResponse, UpstreamUnavailable
from pai_core.models import ChatMessage, Completion, Usage

if TYPE_CHECKING:
    from mypy_boto3_bedrock_runtime import BedrockRuntimeClient

# Bedrock gives no tokenizer; count generously (about 3 characters a token, where English averages ~4)
# so that a prompt we think fits really does.
CHARS_PER_TOKEN_ESTIMATE = 3.0
_RETRY_LATER = {
    "ThrottlingException",
    "ServiceUnavailableException",
    "ModelTimeoutException",
    "ModelNotReadyException",
    "InternalServerException",
    "ServiceQuotaExceededException",
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
        return math.ceil(len(text) / CHARS_PER_TOKEN_ESTIMATE)

    def complete(self, messages: Sequence[ChatMessage], *, max_tokens: int) -> Completion:
        system = [{"text": m.content} for m in messages if m.role == "system"]
        try:
            response: Any = self._client.converse(
                modelId=self.name,
                system=system,  # type: ignore[arg-type]
                messages=converse_messages(messages),  # type: ignore[arg-type]
                inferenceConfig={"maxTokens": max_tokens, "temperature": self._temperature},
            )
        except ClientError as exc:
            code = error_code(exc)
            if code in _RETRY_LATER:
                raise UpstreamUnavailable(f"Bedrock is unavailable ({code})", retry_after_seconds=2) from exc
            # Validation, access and model errors: the deployment is misconfigured or the model refused.
            raise UpstreamInvalidResponse(f"Bedrock refused the request ({code})") from exc
        except BotoCoreError as exc:  # connection failures and read timeouts, after botocore's retries
            raise UpstreamUnavailable("Bedrock cannot be reached") from exc
        try:
            blocks = response["output"]["message"]["content"]
            text = "".join(block.get("text", "") for block in blocks).strip()
            usage = response.get("usage", {})
            return Completion(
                text=text,
                model=self.name,
                usage=Usage(
                    input_tokens=int(usage.get("inputTokens", 0)), output_tokens=int(usage.get("outputTokens", 0))
                ),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise UpstreamInvalidResponse("Bedrock answered with something that is not a chat reply") from exc


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
