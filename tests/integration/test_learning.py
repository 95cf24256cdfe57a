"""Learning from chat end to end, over HTTP against the emulator: a chat turn is queued (by
reference) on the template's learning queue, the local harness's poller hands it to the learning
function, and the learned memory is listed with origin "learned" and its session; a correction
updates it with history; "forget that ..." deletes it; learn:false and secrets learn nothing."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Any

import pytest

from pai_core.config import Settings
from pai_local.emulator import free_port
from pai_local.stack import RunningStack, start_stack
from tests.integration.support import REGION, ApiClient, Emulator, RecordingChatModel, new_env
from tests.integration.test_gateway_processes import LlmStub

pytestmark = pytest.mark.integration

# The contract's bound for the local stack.
LEARNED_WITHIN_SECONDS = 60.0


@pytest.fixture
def user_api(stack: RunningStack) -> ApiClient:
    """A user of their own: what other tests store never mixes with what is learned here."""
    owner = f"learn-{secrets.token_hex(4)}"
    issued = stack.container.api_keys.issue(owner, "learning tests")
    return ApiClient(stack.gateway_url, api_key=issued.key)


def learned(api: ApiClient) -> list[dict[str, Any]]:
    result = api.post("/memory", {"action": "list", "origin": "learned", "limit": 100})
    assert result.status == 200, result.json
    items: list[dict[str, Any]] = result.json["items"]
    return items


def wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + LEARNED_WITHIN_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not learned within {LEARNED_WITHIN_SECONDS:g} s")
        time.sleep(0.5)


def chat(api: ApiClient, model: RecordingChatModel, message: str, session: str, **extra: Any) -> dict[str, Any]:
    with model.answering("Good to know."):
        result = api.post("/chat", {"message": message, "sessionId": session, "useMemory": False, **extra})
    assert result.status == 200, result.json
    body: dict[str, Any] = result.json
    return body


def test_learn_correct_and_forget(user_api: ApiClient, chat_model: RecordingChatModel) -> None:
    reply = chat(user_api, chat_model, "By the way, I live in Berlin.", "learn-1")
    assert reply["learning"] == "queued"
    wait_for(lambda: [m["content"] for m in learned(user_api)] == ["I live in Berlin."])
    (memory,) = learned(user_api)
    assert memory["origin"] == "learned" and memory["source"] == {"sessionId": "learn-1"}

    assert chat(user_api, chat_model, "I moved from Berlin to Lisbon last month.", "learn-2")["learning"] == "queued"
    wait_for(lambda: [m["content"] for m in learned(user_api)] == ["I live in Lisbon."])
    assert learned(user_api)[0]["id"] == memory["id"]
    history = user_api.post("/memory", {"action": "history", "id": memory["id"]})
    assert history.status == 200
    versions = history.json["versions"]
    assert [v["content"] for v in versions] == ["I live in Berlin.", "I live in Lisbon."]
    assert versions[1]["reason"] == "corrected in chat" and versions[0]["validTo"] == versions[1]["validFrom"]

    forget = chat(user_api, chat_model, "Forget that I live in Lisbon", "learn-3")
    assert "forgotten" in forget["reply"] and "I live in Lisbon." in forget["reply"]
    assert learned(user_api) == []


def test_remember_that_stores_in_the_turn(user_api: ApiClient, chat_model: RecordingChatModel) -> None:
    asked = chat_model.prompt_count()
    reply = chat(user_api, chat_model, "Remember that my sister is called Ana.", "learn-4")
    assert reply["reply"] == "Got it, I'll remember that: My sister is called Ana."
    assert chat_model.prompt_count() == asked  # answered without the model
    (memory,) = learned(user_api)
    assert memory["content"] == "My sister is called Ana." and memory["source"] == {"sessionId": "learn-4"}


def test_learn_false_and_secrets_learn_nothing(user_api: ApiClient, chat_model: RecordingChatModel) -> None:
    assert chat(user_api, chat_model, "I love jazz.", "learn-5", learn=False)["learning"] == "off"
    refused = chat(user_api, chat_model, "Remember that my password is hunter2", "learn-5")
    assert "haven't stored" in refused["reply"]
    assert chat(user_api, chat_model, "My card is 4111 1111 1111 1111.", "learn-5")["learning"] == "queued"
    # A later turn is learned: by then the earlier ones have been read (or, for learn:false, never queued).
    chat(user_api, chat_model, "I work at Acme.", "learn-5")
    wait_for(lambda: any(m["content"] == "I work at Acme." for m in learned(user_api)))
    assert [m["content"] for m in learned(user_api)] == ["I work at Acme."]


def test_the_queue_carries_no_words(stack: RunningStack, aws: Callable[[str], Any]) -> None:
    url = stack.settings.learning_queue_url
    assert url is not None
    attributes = aws("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=["RedrivePolicy"])["Attributes"]
    assert "maxReceiveCount" in attributes["RedrivePolicy"]


def test_learned_in_worker_processes_as_make_run_serves(emulator: Emulator) -> None:
    """`make run`'s way: every function in its own worker processes, the learning function among
    them, fed by the harness's poller from the emulator's queue."""
    stub = LlmStub()
    settings = Settings(
        env=new_env("learn"),
        region=REGION,
        endpoint_url=emulator.endpoint_url,
        llm_provider="openai",
        openai_base_url=stub.base_url,
        openai_model="stub",
        llm_timeout_seconds=5,
        llm_max_attempts=1,
        learning_extraction="rules",
        local_concurrency=1,
    )
    running = start_stack(settings, emulator_port=free_port(), gateway_port=free_port(), execution="process")
    try:
        issued = running.container.api_keys.issue("learner", "process learning test")
        api = ApiClient(running.gateway_url, api_key=issued.key)
        sent = api.post("/chat", {"message": "I work at Initech these days.", "sessionId": "proc-1"})
        assert sent.status == 200, sent.json
        assert sent.json["learning"] == "queued"
        wait_for(lambda: [m["content"] for m in learned(api)] == ["I work at Initech."])
        assert learned(api)[0]["source"] == {"sessionId": "proc-1"}
    finally:
        running.stop()
        stub.stop()
