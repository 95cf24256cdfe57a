"""Create the template's key, tables and bucket in an emulator (or any endpoint), idempotently.

The properties come from infra/template.yaml and are translated to the matching API calls, so the
local stack cannot drift from the deployed one."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from pai_local.template import Template


@dataclass(frozen=True)
class Provisioned:
    kms_key_arn: str
    tables: dict[str, str]  # logical id -> table name
    bucket: str
    queues: dict[str, str] = field(default_factory=dict)  # logical id -> queue URL


def provision(template: Template, session: Any, *, endpoint_url: str | None) -> Provisioned:
    def client(service: str) -> Any:
        return session.client(service, endpoint_url=endpoint_url)

    identity = client("sts").get_caller_identity()
    template.parameters.update(
        {"AWS::AccountId": identity["Account"], "AWS::Region": session.region_name, "AWS::Partition": "aws"}
    )
    key_arn = _ensure_key(template, client("kms"))
    tables = {
        name: _ensure_table(template, name, client("dynamodb")) for name in template.of_type("AWS::DynamoDB::Table")
    }
    # The knowledge base only: the web app's bucket (WebBucket) exists in AWS alone, where CloudFront
    # serves it; locally the gateway serves web/ itself.
    bucket = _ensure_bucket(template, "KnowledgeBaseBucket", client("s3"), session.region_name)
    queues = _ensure_queues(template, client("sqs"))
    return Provisioned(kms_key_arn=key_arn, tables=tables, bucket=bucket, queues=queues)


def _ensure_queues(template: Template, sqs: Any) -> dict[str, str]:
    """Every SQS queue, dead-letter queues first (a redrive policy names its target's ARN)."""
    specs = template.of_type("AWS::SQS::Queue")
    ordered = sorted(specs, key=lambda logical_id: "RedrivePolicy" in specs[logical_id].get("Properties", {}))
    urls: dict[str, str] = {}
    for logical_id in ordered:
        props = template.resolve(template.properties(logical_id))
        attributes = {
            name: str(props[name]) for name in ("VisibilityTimeout", "MessageRetentionPeriod") if name in props
        }
        if "RedrivePolicy" in props:
            attributes["RedrivePolicy"] = json.dumps(props["RedrivePolicy"])
        url = sqs.create_queue(QueueName=props["QueueName"], Attributes=attributes)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        template.known[logical_id] = url
        template.known[f"{logical_id}.Arn"] = arn
        urls[logical_id] = url
    return urls


def _ensure_key(template: Template, kms: Any) -> str:
    (key_id,) = template.of_type("AWS::KMS::Key")
    (alias_id,) = template.of_type("AWS::KMS::Alias")
    alias = template.resolve(template.properties(alias_id)["AliasName"])
    try:
        metadata = kms.describe_key(KeyId=alias)["KeyMetadata"]
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "NotFoundException":
            raise
        # The key policy is AWS's business: the emulator does not enforce one, and its conditional
        # statements (Fn::If) would need the template's conditions evaluated.
        props = template.resolve({k: v for k, v in template.properties(key_id).items() if k != "KeyPolicy"})
        metadata = kms.create_key(
            Description=props["Description"], KeySpec=props["KeySpec"], KeyUsage=props["KeyUsage"]
        )["KeyMetadata"]
        if props.get("EnableKeyRotation"):
            kms.enable_key_rotation(KeyId=metadata["KeyId"])
        kms.create_alias(AliasName=alias, TargetKeyId=metadata["KeyId"])
    template.known[key_id] = metadata["KeyId"]
    template.known[f"{key_id}.Arn"] = metadata["Arn"]
    return str(metadata["Arn"])


def _ensure_table(template: Template, logical_id: str, dynamodb: Any) -> str:
    props = template.resolve(template.properties(logical_id))
    name = props["TableName"]
    template.known[logical_id] = name
    try:
        dynamodb.describe_table(TableName=name)
        return str(name)
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ResourceNotFoundException":
            raise
    request: dict[str, Any] = {
        "TableName": name,
        "BillingMode": props["BillingMode"],
        "AttributeDefinitions": props["AttributeDefinitions"],
        "KeySchema": props["KeySchema"],
    }
    if "GlobalSecondaryIndexes" in props:
        request["GlobalSecondaryIndexes"] = props["GlobalSecondaryIndexes"]
    if "SSESpecification" in props:
        sse = props["SSESpecification"]
        request["SSESpecification"] = {
            "Enabled": sse["SSEEnabled"],
            "SSEType": sse["SSEType"],
            "KMSMasterKeyId": sse["KMSMasterKeyId"],
        }
    dynamodb.create_table(**request)
    dynamodb.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    if "TimeToLiveSpecification" in props:
        dynamodb.update_time_to_live(TableName=name, TimeToLiveSpecification=props["TimeToLiveSpecification"])
    if props.get("PointInTimeRecoverySpecification", {}).get("PointInTimeRecoveryEnabled"):
        dynamodb.update_continuous_backups(
            TableName=name, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True}
        )
    return str(name)


def _ensure_bucket(template: Template, logical_id: str, s3: Any, region: str) -> str:
    raw = template.properties(logical_id)
    name = template.resolve(raw["BucketName"])
    template.known[logical_id] = name
    template.known[f"{logical_id}.Arn"] = f"arn:aws:s3:::{name}"
    props = template.resolve(raw)
    try:
        s3.head_bucket(Bucket=name)
    except ClientError as exc:
        if exc.response["Error"]["Code"] not in {"404", "NoSuchBucket", "NotFound"}:
            raise
        if region == "us-east-1":
            s3.create_bucket(Bucket=name)
        else:
            s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": region})
    s3.put_bucket_versioning(Bucket=name, VersioningConfiguration=props["VersioningConfiguration"])
    s3.put_public_access_block(Bucket=name, PublicAccessBlockConfiguration=props["PublicAccessBlockConfiguration"])
    rules = [
        {
            "ApplyServerSideEncryptionByDefault": rule["ServerSideEncryptionByDefault"],
            "BucketKeyEnabled": rule.get("BucketKeyEnabled", False),
        }
        for rule in props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    ]
    s3.put_bucket_encryption(Bucket=name, ServerSideEncryptionConfiguration={"Rules": rules})
    if "LifecycleConfiguration" in props:
        rules = [_lifecycle_rule(rule) for rule in props["LifecycleConfiguration"]["Rules"]]
        s3.put_bucket_lifecycle_configuration(Bucket=name, LifecycleConfiguration={"Rules": rules})
    for policy_id, policy in template.of_type("AWS::S3::BucketPolicy").items():
        if policy["Properties"]["Bucket"] == {"Ref": logical_id}:
            document = _enforceable_locally(template.resolve(template.properties(policy_id)["PolicyDocument"]))
            if document["Statement"]:
                s3.put_bucket_policy(Bucket=name, Policy=json.dumps(document))
    return str(name)


def _enforceable_locally(document: dict[str, Any]) -> dict[str, Any]:
    """The policy less its conditional denies. Emulators reach the bucket over plain HTTP on
    loopback, and moto applies a Deny without evaluating its Condition: the template's
    DenyInsecureTransport (deny unless TLS) would refuse every object read and write."""
    statements = [s for s in document["Statement"] if not (s.get("Effect") == "Deny" and "Condition" in s)]
    return {**document, "Statement": statements}


def _lifecycle_rule(rule: dict[str, Any]) -> dict[str, Any]:
    """A CloudFormation lifecycle rule as the S3 API takes it."""
    translated: dict[str, Any] = {
        "ID": rule["Id"],
        "Status": rule["Status"],
        "Filter": {"Prefix": rule.get("Prefix", "")},
    }
    if "Transitions" in rule:
        translated["Transitions"] = [
            {"Days": t["TransitionInDays"], "StorageClass": t["StorageClass"]} for t in rule["Transitions"]
        ]
    if "NoncurrentVersionExpiration" in rule:
        translated["NoncurrentVersionExpiration"] = {
            "NoncurrentDays": rule["NoncurrentVersionExpiration"]["NoncurrentDays"]
        }
    return translated
