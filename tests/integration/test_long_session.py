"""A session far longer than the model's window still gets answered: history is cut to the budget."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from pai_core.adapters.dynamodb_conversations import DynamoConversationRepository
from pai_core.models import Turn
from pai_local.stack import RunningStack
from tests.integration.support import ApiClient, RecordingChatModel

pytestmark = pytest.mark.integration


def test_a_session_far_longer_than_the_window_never_overflows(
    api: ApiClient,
    stack: RunningStack,
    chat_model: RecordingChatModel,
    conversations: DynamoConversationRepository,
) -> None:
    session = f"long-{time.time_ns()}"
    start = datetime.now(UTC) - timedelta(hours=1)
    sentence = "We talked about the weather, the garden, the tomatoes and the neighbour's noisy dog again. "
    for index in range(400):
        role = "user" if index % 2 == 0 else "assistant"
        conversations.append(
            stack.settings.owner,
            session,
            Turn(role=role, content=f"turn {index}: {sentence * 3}", at=start + timedelta(seconds=index)),
        )
    stored_tokens = 400 * chat_model.count_tokens(f"turn 0: {sentence * 3}")
    assert stored_tokens > 10 * chat_model.context_tokens  # far longer than the window

    # What is under test is the prompt PAI builds, not the model's words: a scripted reply keeps the
    # test from waiting on the small model to read a full window on a busy machine.
    with chat_model.answering("The weather, the garden and the dog."):
        result = api.post("/chat", {"message": "What did we talk about?", "sessionId": session, "useMemory": False})

    assert result.status == 200, result
    prompt = chat_model.last_prompt
    prompt_tokens = sum(chat_model.count_tokens(m.content) + 8 for m in prompt)
    assert prompt_tokens <= chat_model.context_tokens - stack.settings.llm_max_output_tokens
    history = [m.content for m in prompt[1:-1]]
    assert history, "some history fits"
    assert history[-1].startswith("turn 399:")  # the newest turns are the ones kept
    assert result.json["usage"]["inputTokens"] + result.json["usage"]["outputTokens"] <= chat_model.context_tokens
