"""The stack on LocalStack, whatever backend the session uses: runs only where a Docker engine answers."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import boto3
import pytest

from pai_core.bootstrap import set_container
from pai_core.config import Settings
from pai_local.emulator import free_port
from pai_local.stack import RunningStack, start_stack
from tests.integration.support import (
    LOCALSTACK_IMAGE,
    REGION,
    ApiClient,
    Emulator,
    docker_problem,
    find_plaintext,
    localstack_endpoint,
    new_env,
)

pytestmark = pytest.mark.integration


@contextlib.contextmanager
def localstack_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """The session's LocalStack when it runs on one, else a container of our own."""
    emulator: Emulator = request.getfixturevalue("emulator")
    if emulator.kind == "localstack" and emulator.endpoint_url is not None:
        yield emulator.endpoint_url
    else:
        with localstack_endpoint() as url:
            yield url


def test_localstack_backend(request: pytest.FixtureRequest) -> None:
    problem = docker_problem()
    if problem is not None:
        pytest.skip(f"LocalStack ({LOCALSTACK_IMAGE}) needs Docker, and no Docker engine answers: {problem}")
    session_stack: RunningStack = request.getfixturevalue("stack")
    with localstack_url(request) as url:
        # Its own environment: its own tables, key alias and bucket, even on the session's LocalStack.
        running = start_stack(
            Settings(env=new_env("ls"), region=REGION, endpoint_url=url),
            emulator_port=free_port(),
            gateway_port=free_port(),
            chat_model=session_stack.container.chat_model,
        )
        try:
            assert running.emulator is None, "the stack must use LocalStack, not start moto"
            issued = running.container.api_keys.issue(running.settings.owner)
            api = ApiClient(running.gateway_url, api_key=issued.key)
            content = "Stored in LocalStack: the spare bike lock key is in the blue jar."
            stored = api.post("/memory", {"action": "store", "content": content, "metadata": {"k": "v"}})
            assert stored.status == 201, stored

            result = api.post("/memory", {"action": "retrieve", "id": stored.json["id"]})

            assert result.status == 200, result
            assert result.json["content"] == content
            assert result.json["metadata"] == {"k": "v"}
            item = (
                boto3.session.Session(region_name=REGION)
                .client("dynamodb", endpoint_url=url)
                .get_item(
                    TableName=running.settings.knowledge_table,
                    Key={"owner": {"S": running.settings.owner}, "id": {"S": stored.json["id"]}},
                )["Item"]
            )
            assert not find_plaintext(item, [content, "blue jar"])
        finally:
            running.stop()
            # start_stack installed its own process-wide container and stop() removed it.
            set_container(session_stack.container)
