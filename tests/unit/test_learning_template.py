"""The learning path in the template: a queue with retries and a dead-letter queue, a function
with its own role, the chat role allowed only to send to that queue, and the off switch."""

from __future__ import annotations

from typing import Any

from pai_local.queues import sqs_mappings
from pai_local.template import Template


def role_statements(template: Template, role: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for policy in template.properties(role)["Policies"]:
        for statement in policy["PolicyDocument"]["Statement"]:
            if "Fn::If" in statement:
                found.extend(b for b in statement["Fn::If"][1:] if isinstance(b, dict) and "Effect" in b)
            else:
                found.append(statement)
    return found


def test_the_queue_retries_then_keeps_failures_in_a_dead_letter_queue() -> None:
    template = Template.load(Env="dev")
    queue = template.properties("LearningQueue")
    assert queue["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": ["LearningDeadLetterQueue", "Arn"]},
        "maxReceiveCount": 3,
    }
    function = template.properties("LearningFunction")
    assert queue["VisibilityTimeout"] >= 6 * function["Timeout"]
    assert queue["SqsManagedSseEnabled"] is True
    (mapping,) = [m for m in sqs_mappings(template) if m.queue_id == "LearningQueue"]
    assert (mapping.queue_id, mapping.handler, mapping.reports_failures) == (
        "LearningQueue",
        "handlers.learning.handler",
        True,
    )


def test_only_chat_sends_and_only_learning_receives() -> None:
    template = Template.load(Env="dev")
    sqs = {
        role: {a for s in role_statements(template, role) for a in s["Action"] if a.startswith("sqs:")}
        for role in template.of_type("AWS::IAM::Role")
    }
    assert sqs["ChatFunctionRole"] == {"sqs:SendMessage"}
    assert "sqs:SendMessage" not in sqs["LearningFunctionRole"]
    assert {"sqs:ReceiveMessage", "sqs:DeleteMessage"} <= sqs["LearningFunctionRole"]
    assert sqs["MemoryFunctionRole"] == sqs["SearchFunctionRole"] == sqs["AuthorizerFunctionRole"] == set()
    assert sqs["DocumentsFunctionRole"] == {"sqs:SendMessage"}  # to its own queue (tests/unit/test_document_ingest.py)
    for role in ("ChatFunctionRole", "LearningFunctionRole"):
        for statement in role_statements(template, role):
            if any(a.startswith("sqs:") for a in statement["Action"]):
                assert statement["Resource"] == {"Fn::GetAtt": ["LearningQueue", "Arn"]}
    # The learning function reads the user's turn, never writes one.
    for statement in role_statements(template, "LearningFunctionRole"):
        if statement["Resource"] == {"Fn::GetAtt": ["ConversationsTable", "Arn"]}:
            assert statement["Action"] == ["dynamodb:Query"]


def test_the_deployment_switch_reaches_the_chat_function() -> None:
    template = Template.load(Env="dev")
    variables = template.properties("ChatFunction")["Environment"]["Variables"]
    assert variables["PAI_LEARN_FROM_CHAT"] == {"Ref": "LearnFromChat"}
    assert variables["PAI_LEARNING_QUEUE_URL"] == {"Ref": "LearningQueue"}
    assert template.document["Parameters"]["LearnFromChat"]["AllowedValues"] == ["true", "false"]
