"""`pai mcp`: PAI's memory as a Model Context Protocol server on stdio (../shared/API.md, "Clients").

An MCP client (Claude Desktop, Cursor, an IDE agent) starts it as a child process; it acts for the
one user whose key it holds (PAI_API_KEY, or the key `make run` saved) and does nothing the HTTP API
would not let that user do. Each tool returns the API's JSON as text; an API error is a tool error
carrying the API's message, which a model can read and act on.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Literal

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import Field

from pai_client import __version__
from pai_client.api import Api, ApiError, JsonObject, Settings

INSTRUCTIONS = """\
PAI is the user's private, encrypted long-term memory. Use `search` before answering anything that may
depend on what the user told you before (preferences, people, plans, projects, their documents).
Use `remember` for durable facts the user states about themselves or asks you to keep, one fact per
call, in their words; never store secrets such as passwords or API keys. Use `forget` only when the
user asks to delete something, with an id from `search` or `list_memories`."""


def build_server(api: Api) -> MCPServer:
    # Warnings only: at INFO the SDK and httpx2 log every call, which an MCP client shows as noise.
    server: MCPServer = MCPServer("pai", instructions=INSTRUCTIONS, version=__version__, log_level="WARNING")

    async def call(operation: Callable[[], JsonObject]) -> str:
        try:
            result = await anyio.to_thread.run_sync(operation)
        except ApiError as exc:
            raise ToolError(exc.line()) from None
        return json.dumps(result, ensure_ascii=False)

    @server.tool(
        description=(
            "Store one memory for the user: a durable fact, preference or note, in plain words. "
            'Returns the stored memory\'s {"id", "category", "createdAt"}.'
        ),
        annotations=ToolAnnotations(title="Remember", read_only_hint=False, destructive_hint=False),
        structured_output=False,
    )
    async def remember(
        content: Annotated[str, Field(description="The fact or note to keep, 1..100000 characters.")],
        category: Annotated[
            str | None,
            Field(description="Optional category, lowercase [a-z0-9_-], e.g. 'work' or 'health'. Default 'general'."),
        ] = None,
    ) -> str:
        return await call(lambda: api.remember(content, category))

    @server.tool(
        description=(
            "Search the user's memories and document passages by meaning and keywords. Returns "
            '{"results": [...]} most relevant first; each has "kind" (memory or document), "id", "content", '
            '"score", and for a document passage "name" and "page".'
        ),
        annotations=ToolAnnotations(title="Search memory", read_only_hint=True),
        structured_output=False,
    )
    async def search(
        query: Annotated[str, Field(description="What to look for, in natural language.")],
        top_k: Annotated[int | None, Field(description="How many results, 1..50 (default 5).", ge=1, le=50)] = None,
        sources: Annotated[
            list[Literal["memories", "documents"]] | None,
            Field(description="Where to look: 'memories', 'documents' or both (default both).", min_length=1),
        ] = None,
    ) -> str:
        return await call(lambda: api.search(query, top_k, None, list(sources) if sources else None))

    @server.tool(
        description=(
            'List the user\'s memories, newest first. Returns {"items": [memory, ...], "cursor"}; a memory has '
            '"id", "content", "category", "createdAt" and "origin".'
        ),
        annotations=ToolAnnotations(title="List memories", read_only_hint=True),
        structured_output=False,
    )
    async def list_memories(
        category: Annotated[str | None, Field(description="Only this category.")] = None,
        limit: Annotated[int | None, Field(description="How many, 1..100 (default 20).", ge=1, le=100)] = None,
    ) -> str:
        return await call(lambda: api.list_memories(category, limit))

    @server.tool(
        description=(
            "Delete one of the user's memories for good, by its id (from search or list_memories). "
            'Returns {"id", "deleted": true}. Only when the user asks to forget something.'
        ),
        annotations=ToolAnnotations(title="Forget a memory", read_only_hint=False, destructive_hint=True),
        structured_output=False,
    )
    async def forget(id: Annotated[str, Field(description="The memory's id.")]) -> str:
        return await call(lambda: api.forget(id))

    return server


def serve(settings: Settings) -> None:
    """Runs until the client closes stdin. Nothing but protocol messages may go to stdout."""
    with Api(settings) as api:
        build_server(api).run("stdio")
