"""scripts/deploy.py and scripts/destroy.py against moto's server: its CloudFormation creates the
KMS, DynamoDB, S3, IAM, Logs and Lambda resources (it skips AWS::ApiGatewayV2::*, which the unit
tests check from the template itself). Then destroy, and nothing of PAI may remain."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3
import pytest

from pai_core.config import REPO_ROOT
from pai_local.provision import provision
from pai_local.template import Template
from tests.integration.test_bundle import built_bundle  # noqa: F401 (a fixture, shared)

ENV = "deploytest"
pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore:Tried to parse:UserWarning"),
]


def run_script(name: str, endpoint: str, *args: str, env: str = ENV) -> tuple[subprocess.CompletedProcess[str], float]:
    environ = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / name), "--env", env, "--endpoint-url", endpoint, *args],
        capture_output=True,
        text=True,
        env=environ,
        timeout=300,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    return result, time.monotonic() - started


def clients(endpoint: str) -> Any:
    session = boto3.session.Session(region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test")
    return lambda service: session.client(service, endpoint_url=endpoint)


def pai_leftovers(client: Any, stack_keys: list[str]) -> dict[str, list[str]]:
    """What is left of the stack's environment (names end in -{ENV}; the harness's own end otherwise)."""
    mine = f"-{ENV}"
    return {
        "tables": [t for t in client("dynamodb").list_tables()["TableNames"] if t.endswith(mine)],
        "buckets": [b["Name"] for b in client("s3").list_buckets()["Buckets"] if b["Name"].endswith(mine)],
        "queues": [q for q in client("sqs").list_queues().get("QueueUrls", []) if q.endswith(mine)],
        "functions": [
            f["FunctionName"]
            for f in client("lambda").list_functions()["Functions"]
            if f["FunctionName"].endswith(mine)
        ],
        "stacks": [
            s["StackName"]
            for s in client("cloudformation").describe_stacks()["Stacks"]
            if s["StackName"] == f"pai-{ENV}" and s["StackStatus"] != "DELETE_COMPLETE"
        ],
        "live_keys": [k for k in stack_keys if key_state(client, k) not in {"PendingDeletion", "Gone"}],
        "aliases": [a["AliasName"] for a in client("kms").list_aliases()["Aliases"] if a["AliasName"].endswith(mine)],
        "topics": [t["TopicArn"] for t in client("sns").list_topics()["Topics"] if t["TopicArn"].endswith(mine)],
    }


def key_state(client: Any, key_id: str) -> str:
    try:
        return str(client("kms").describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"])
    except client("kms").exceptions.NotFoundException:
        return "Gone"


def normalized_table(description: dict[str, Any]) -> dict[str, Any]:
    table = description["Table"]
    return {
        "keys": table["KeySchema"],
        "attributes": sorted(table["AttributeDefinitions"], key=lambda a: a["AttributeName"]),
        "indexes": sorted(
            (
                {"name": i["IndexName"], "keys": i["KeySchema"], "projection": i["Projection"]}
                for i in table.get("GlobalSecondaryIndexes", [])
            ),
            key=lambda i: i["name"],
        ),
        "billing": table.get("BillingModeSummary", {}).get("BillingMode"),
        "sse": table.get("SSEDescription", {}).get("SSEType"),
    }


def test_deploy_then_destroy_leaves_nothing(moto_endpoint: str, built_bundle: Path) -> None:  # noqa: F811
    client = clients(moto_endpoint)
    # moto's CloudFormation has no AWS::Lambda::Url (the unit tests check it from the template itself);
    # the streamed chat's function is deployed all the same.
    no_url = "--no-chat-stream-url"
    deployed, deploy_seconds = run_script("deploy.py", moto_endpoint, "--bundle-dir", str(built_bundle), no_url)
    assert deployed.returncode == 0, deployed.stderr[-3000:]
    assert "ApiUrl" in deployed.stdout
    again, _ = run_script("deploy.py", moto_endpoint, "--bundle-dir", str(built_bundle), no_url)
    assert again.returncode == 0, again.stderr[-3000:]  # safe to run twice

    stack = client("cloudformation").describe_stacks(StackName=f"pai-{ENV}")["Stacks"][0]
    assert stack["StackStatus"].endswith("_COMPLETE")
    functions = {f["FunctionName"]: f for f in client("lambda").list_functions()["Functions"]}
    expected = {
        f"pai-chat-{ENV}": 512,
        f"pai-memory-{ENV}": 1024,
        f"pai-search-{ENV}": 2048,
        f"pai-authorizer-{ENV}": 256,
        f"pai-documents-{ENV}": 3008,
        f"pai-learning-{ENV}": 1024,
        f"pai-document-ingest-{ENV}": 3008,
        f"pai-chat-stream-{ENV}": 512,
    }
    assert {name: functions[name]["MemorySize"] for name in expected} == expected
    # Learning from chat: its queue (and dead-letter queue) and the mapping that feeds the function.
    queues = client("sqs").list_queues().get("QueueUrls", [])
    assert {url.rsplit("/", 1)[-1] for url in queues} >= {f"pai-learning-{ENV}", f"pai-learning-dlq-{ENV}"}
    mappings = client("lambda").list_event_source_mappings(FunctionName=f"pai-learning-{ENV}")["EventSourceMappings"]
    assert [m["EventSourceArn"].rsplit(":", 1)[-1] for m in mappings] == [f"pai-learning-{ENV}"]
    # Large documents: their queue (and dead-letter queue) and the mapping that feeds the ingest function.
    assert {url.rsplit("/", 1)[-1] for url in queues} >= {f"pai-documents-{ENV}", f"pai-documents-dlq-{ENV}"}
    mappings = client("lambda").list_event_source_mappings(FunctionName=f"pai-document-ingest-{ENV}")[
        "EventSourceMappings"
    ]
    assert [m["EventSourceArn"].rsplit(":", 1)[-1] for m in mappings] == [f"pai-documents-{ENV}"]
    # moto's CloudFormation drops Architectures and Layers; test_template_routes checks them in the template.
    assert {functions[name]["Runtime"] for name in expected} == {"python3.12"}
    layers = client("lambda").list_layers()["Layers"]
    assert len([layer for layer in layers if layer["LayerName"].startswith(f"pai-{ENV}")]) == 2  # moto's names
    tables = client("dynamodb").list_tables()["TableNames"]
    assert {f"pai-conversations-{ENV}", f"pai-knowledge-{ENV}"} <= set(tables)
    # (moto stores the template's key policy unserialized, so DescribeKey on this key fails in moto.)
    stack_keys = [
        r["PhysicalResourceId"]
        for r in client("cloudformation").list_stack_resources(StackName=f"pai-{ENV}")["StackResourceSummaries"]
        if r["ResourceType"] == "AWS::KMS::Key"
    ]
    aliases = {a["AliasName"]: a.get("TargetKeyId") for a in client("kms").list_aliases()["Aliases"]}
    assert len(stack_keys) == 1
    assert f"alias/pai-{ENV}" in aliases
    bucket = f"pai-knowledge-base-123456789012-{ENV}"
    assert bucket in {b["Name"] for b in client("s3").list_buckets()["Buckets"]}
    # Observability: the alarm topic, under the stack key. moto's CloudFormation skips the alarms, the
    # budget, the topic policy and the e-mail subscription (tests/unit/test_template_observability.py
    # checks them in the template); the dashboard is off by default.
    (topic,) = [t["TopicArn"] for t in client("sns").list_topics()["Topics"] if t["TopicArn"].endswith(f"-{ENV}")]
    assert topic.endswith(f":pai-alarms-{ENV}")
    assert client("sns").get_topic_attributes(TopicArn=topic)["Attributes"]["KmsMasterKeyId"] == stack_keys[0]

    # The local harness provisions from the same template: the same tables, whatever created them.
    local_env = f"{ENV}local"
    provision(Template.load(Env=local_env), boto3.session.Session(region_name="us-east-1"), endpoint_url=moto_endpoint)
    for table in ("conversations", "knowledge", "api-keys"):
        from_stack = normalized_table(client("dynamodb").describe_table(TableName=f"pai-{table}-{ENV}"))
        from_harness = normalized_table(client("dynamodb").describe_table(TableName=f"pai-{table}-{local_env}"))
        # moto's CloudFormation drops SSESpecification: that part is checked against the template below.
        assert from_harness.pop("sse") == "KMS"
        from_stack.pop("sse")
        assert from_harness == from_stack, table
    # moto's CloudFormation ignores TimeToLiveSpecification, so the harness's TTL is checked against the template.
    ttl = client("dynamodb").describe_time_to_live(TableName=f"pai-conversations-{local_env}")["TimeToLiveDescription"]
    spec = Template.load(Env=local_env).properties("ConversationsTable")["TimeToLiveSpecification"]
    assert (ttl["AttributeName"], ttl["TimeToLiveStatus"]) == (spec["AttributeName"], "ENABLED")

    local_bucket = f"pai-knowledge-base-123456789012-{local_env}"
    assert client("s3").get_bucket_versioning(Bucket=local_bucket)["Status"] == "Enabled"
    rules = {r["ID"]: r for r in client("s3").get_bucket_lifecycle_configuration(Bucket=local_bucket)["Rules"]}
    assert rules["intelligent-tiering"]["Transitions"] == [{"Days": 0, "StorageClass": "INTELLIGENT_TIERING"}]
    snapshots = rules["expire-replaced-index-snapshots"]  # old versions of search-index snapshots
    assert (snapshots["Filter"]["Prefix"], snapshots["NoncurrentVersionExpiration"]["NoncurrentDays"]) == ("index/", 1)
    block = client("s3").get_public_access_block(Bucket=local_bucket)["PublicAccessBlockConfiguration"]
    assert all(block.values())
    encryption = client("s3").get_bucket_encryption(Bucket=local_bucket)["ServerSideEncryptionConfiguration"]
    assert encryption["Rules"][0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"

    # Stored documents in several versions, and a delete marker: all must go. (moto's CloudFormation
    # ignores VersioningConfiguration, so versioning is switched on here as AWS would have it.)
    s3 = client("s3")
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(Bucket=bucket, Key="doc.txt", Body=b"v1")
    s3.put_object(Bucket=bucket, Key="doc.txt", Body=b"v2")
    s3.delete_object(Bucket=bucket, Key="doc.txt")

    destroyed, destroy_seconds = run_script("destroy.py", moto_endpoint, "--yes")
    assert destroyed.returncode == 0, destroyed.stderr[-3000:]
    nothing = {k: [] for k in ("tables", "buckets", "queues", "functions", "stacks", "live_keys", "aliases", "topics")}
    assert pai_leftovers(client, stack_keys) == nothing
    twice, _ = run_script("destroy.py", moto_endpoint, "--yes")
    assert twice.returncode == 0, twice.stderr[-3000:]
    print(f"\ndeploy {deploy_seconds:.1f} s, destroy {destroy_seconds:.1f} s against moto")


def test_destroy_refuses_without_confirmation(moto_endpoint: str) -> None:
    refused, _ = run_script("destroy.py", moto_endpoint)
    assert refused.returncode == 2
    assert "--yes" in refused.stderr
