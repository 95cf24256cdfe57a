"""The MCP server's tools, in process through the SDK's own client, against the fake API."""

from __future__ import annotations

import json

import anyio
import httpx2
from mcp import Client

from pai_client.api import Api, Settings
from pai_client.mcp_server import build_server
from tests.unit.test_cli import KEY, FakeApi


def run_with_client(fake: FakeApi, steps: object) -> None:
    api = Api(Settings("http://pai.test", KEY), transport=httpx2.MockTransport(fake.handle))

    async def main() -> None:
        async with Client(build_server(api)) as client:
            await steps(client)  # type: ignore[operator]

    anyio.run(main)


def test_tools_have_the_contracts_names_and_schemas() -> None:
    async def steps(client: Client) -> None:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        assert set(tools) == {"remember", "search", "list_memories", "forget"}
        assert tools["remember"].input_schema["required"] == ["content"]
        assert set(tools["search"].input_schema["properties"]) == {"query", "top_k", "sources"}
        assert set(tools["list_memories"].input_schema["properties"]) == {"category", "limit"}
        assert tools["forget"].input_schema["required"] == ["id"]
        assert all(tool.description and len(tool.description) > 40 for tool in tools.values())

    run_with_client(FakeApi(), steps)


def test_tools_return_the_apis_json_and_errors_are_tool_errors() -> None:
    fake = FakeApi()

    async def steps(client: Client) -> None:
        stored = await client.call_tool("remember", {"content": "I drink green tea", "category": "food"})
        assert not stored.is_error
        memory_id = json.loads(stored.content[0].text)["id"]  # type: ignore[union-attr]
        found = await client.call_tool("search", {"query": "green tea", "top_k": 3, "sources": ["memories"]})
        assert json.loads(found.content[0].text)["results"][0]["id"] == memory_id  # type: ignore[union-attr]
        assert json.loads(fake.requests[-1].content) == {"query": "green tea", "topK": 3, "sources": ["memories"]}
        listed = await client.call_tool("list_memories", {"limit": 5})
        assert json.loads(listed.content[0].text)["items"][0]["content"] == "I drink green tea"  # type: ignore[union-attr]
        gone = await client.call_tool("forget", {"id": memory_id})
        assert json.loads(gone.content[0].text) == {"id": memory_id, "deleted": True}  # type: ignore[union-attr]
        again = await client.call_tool("forget", {"id": memory_id})
        assert again.is_error
        assert "no such memory (not_found, HTTP 404)" in again.content[0].text  # type: ignore[union-attr]
        bad = await client.call_tool("search", {"query": "x", "top_k": 0})
        assert bad.is_error

    run_with_client(fake, steps)
    assert fake.memories == {}
