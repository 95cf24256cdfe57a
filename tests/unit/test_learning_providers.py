"""Structured output per provider, as pai_core.learning.model asks for it: OpenAI's json_schema
response format, llama.cpp server's schema-as-grammar form, and a forced tool on Bedrock's Converse.
The OpenAI-compatible endpoint is an httpx transport in this process (no socket)."""

from __future__ import annotations

import json
from typing import Any

import httpx2

from pai_core.adapters.llm_bedrock import BedrockChatModel
from pai_core.adapters.llm_local import LocalServerChatModel
from pai_core.adapters.llm_openai import OpenAiChatModel
from pai_core.learning.model import EXTRACTION_SCHEMA, SCHEMA_NAME, extraction_messages, parse_decisions

ANSWER = {"facts": [{"fact": "I live in Oslo.", "action": "add", "replaces": None}]}


def endpoint(sent: list[dict[str, Any]]) -> httpx2.Client:
    def answer(request: httpx2.Request) -> httpx2.Response:
        sent.append(json.loads(request.content))
        body = {
            "id": "c",
            "object": "chat.completion",
            "created": 0,
            "model": "m",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": json.dumps(ANSWER)}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 120, "completion_tokens": 20, "total_tokens": 140},
        }
        return httpx2.Response(200, json=body)

    return httpx2.Client(transport=httpx2.MockTransport(answer))


def structured(model: Any) -> Any:
    return model.complete_structured(
        extraction_messages("I live in Oslo.", []), schema=EXTRACTION_SCHEMA, schema_name=SCHEMA_NAME, max_tokens=300
    )


def test_openai_compatible_asks_for_the_json_schema() -> None:
    sent: list[dict[str, Any]] = []
    model = OpenAiChatModel(
        base_url="http://llm.test/v1",
        api_key="k",
        model="m",
        context_tokens=2048,
        timeout_seconds=5,
        max_attempts=1,
        http_client=endpoint(sent),
    )
    completion = structured(model)
    assert parse_decisions(completion.text, 0) is not None
    assert (completion.usage.input_tokens, completion.usage.output_tokens) == (120, 20)
    (request,) = sent
    assert request["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": SCHEMA_NAME, "schema": EXTRACTION_SCHEMA, "strict": True},
    }
    assert request["temperature"] == 0.0 and request["max_tokens"] == 300


def test_the_local_server_gets_the_schema_as_its_grammar() -> None:
    sent: list[dict[str, Any]] = []
    model = LocalServerChatModel(
        base_url="http://llm.test/v1",
        api_key="k",
        model="m",
        context_tokens=2048,
        timeout_seconds=5,
        max_attempts=1,
        http_client=endpoint(sent),
    )
    structured(model)
    assert sent[0]["response_format"] == {"type": "json_object", "schema": EXTRACTION_SCHEMA}


class StubBedrock:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []

    def converse(self, **request: Any) -> dict[str, Any]:
        self.requests.append(request)
        return {
            "output": {"message": {"content": [{"toolUse": {"toolUseId": "t", "name": SCHEMA_NAME, "input": ANSWER}}]}},
            "usage": {"inputTokens": 150, "outputTokens": 30},
        }


def test_bedrock_forces_a_tool_whose_input_is_the_schema() -> None:
    client = StubBedrock()
    model = BedrockChatModel(client, "anthropic.claude-3-haiku-20240307-v1:0", context_tokens=16000)  # type: ignore[arg-type]
    completion = structured(model)
    assert json.loads(completion.text) == ANSWER
    (request,) = client.requests
    assert request["toolConfig"]["toolChoice"] == {"tool": {"name": SCHEMA_NAME}}
    assert request["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"] == {"json": EXTRACTION_SCHEMA}
