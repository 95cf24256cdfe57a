"""Destroy PAI: every stored object version, the stack with its tables, functions and logs, the
artifacts, and the KMS key (scheduled for deletion: AWS keeps a key 7 to 30 days before it is gone).

This is the user's right to deletion: nothing of the environment's data survives it. Safe to run twice."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from _aws import Target, common_arguments, target_from
from botocore.exceptions import ClientError

from pai_core.adapters.s3 import delete_versions

KEY_DELETION_WINDOW_DAYS = 7


def stack_resources(cloudformation: Any, stack: str) -> dict[str, str]:
    try:
        pages = cloudformation.get_paginator("list_stack_resources").paginate(StackName=stack)
        return {
            r["ResourceType"] + "/" + r["LogicalResourceId"]: r.get("PhysicalResourceId", "")
            for page in pages
            for r in page["StackResourceSummaries"]
        }
    except ClientError as exc:
        if "does not exist" in str(exc):
            return {}
        raise


def destroy(target: Target) -> None:
    cloudformation, s3, kms = target.client("cloudformation"), target.client("s3"), target.client("kms")
    resources = stack_resources(cloudformation, target.stack_name)
    buckets = [physical for kind, physical in resources.items() if kind.startswith("AWS::S3::Bucket/") and physical]
    keys = [physical for kind, physical in resources.items() if kind.startswith("AWS::KMS::Key/") and physical]
    for bucket in buckets:
        try:
            print(f"emptying s3://{bucket} (every version): {delete_versions(s3, bucket)} removed", flush=True)
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "NoSuchBucket":
                raise
    if resources:
        print(f"deleting stack {target.stack_name} ...", flush=True)
        cloudformation.delete_stack(StackName=target.stack_name)
        cloudformation.get_waiter("stack_delete_complete").wait(
            StackName=target.stack_name, WaiterConfig={"Delay": 5, "MaxAttempts": 360}
        )
    else:
        print(f"no stack {target.stack_name}", flush=True)
    for key_id in keys:
        schedule_key_deletion(kms, key_id)
    artifacts = target.artifacts_bucket
    try:
        removed = delete_versions(s3, artifacts)
        s3.delete_bucket(Bucket=artifacts)
        print(f"deleted artifacts bucket {artifacts} ({removed} object versions)", flush=True)
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "NoSuchBucket":
            raise


def schedule_key_deletion(kms: Any, key_id: str) -> None:
    """CloudFormation schedules a deleted key's deletion itself; this makes sure, and is idempotent."""
    try:
        state = kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"]
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "NotFoundException":
            return
        raise
    if state not in {"PendingDeletion", "PendingReplicaDeletion"}:
        kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=KEY_DELETION_WINDOW_DAYS)
    print(f"KMS key {key_id} is scheduled for deletion", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    common_arguments(parser)
    parser.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    args = parser.parse_args(argv)
    target = target_from(args)
    if not args.yes:
        if not sys.stdin.isatty():
            print("refusing to destroy without confirmation: pass --yes", file=sys.stderr)
            return 2
        answer = input(f"Destroy stack {target.stack_name} and ALL its data in {target.region}? Type the env name: ")
        if answer.strip() != target.env:
            print("not destroyed")
            return 1
    started = time.monotonic()
    destroy(target)
    print(f"destroyed {target.stack_name} in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
