"""Deploy PAI to AWS (or an emulator): bundle, upload, create or update the stack, publish the web
app, print the URLs.

Safe to run twice: artifacts are content-addressed, an unchanged stack is left alone."""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import bundle
import webapp
from _aws import Target, common_arguments, target_from
from botocore.exceptions import ClientError

REPO_ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = REPO_ROOT / "infra" / "template.yaml"
ARTIFACTS = ("function", "deps-layer", "model-layer")
WEB_DIR = REPO_ROOT / "web"


def ensure_bundle(output: Path, *, rebuild: bool) -> dict[str, dict[str, Any]]:
    manifest = output / "manifest.json"
    if rebuild or not manifest.exists():
        print("building the Lambda bundle ...", flush=True)
        bundle.build(output)
    artifacts: dict[str, dict[str, Any]] = json.loads(manifest.read_text())
    return artifacts


def ensure_artifacts_bucket(target: Target) -> str:
    s3, name = target.client("s3"), target.artifacts_bucket
    try:
        s3.head_bucket(Bucket=name)
        return name
    except ClientError as exc:
        if exc.response["Error"]["Code"] not in {"404", "NoSuchBucket", "NotFound"}:
            raise
    if target.region == "us-east-1":
        s3.create_bucket(Bucket=name)
    else:
        s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": target.region})
    s3.put_public_access_block(
        Bucket=name,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        },
    )
    s3.put_bucket_encryption(
        Bucket=name,
        ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
        },
    )
    return name


def upload(target: Target, bucket: str, output: Path, artifacts: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Keys carry the content hash, so a new build means new keys and CloudFormation updates exactly
    the functions and layers whose bytes changed."""
    s3, keys = target.client("s3"), {}
    for name in ARTIFACTS:
        key = f"pai/{target.env}/{artifacts[name]['sha256'][:16]}/{name}.zip"
        try:
            s3.head_object(Bucket=bucket, Key=key)
        except ClientError:
            s3.upload_file(str(output / f"{name}.zip"), bucket, key)
        keys[name] = key
    return keys


def upload_template(target: Target, bucket: str) -> str:
    """CloudFormation takes at most 51,200 bytes of template inline (TemplateBody) and the template is
    larger: it reads it from the artifacts bucket instead (TemplateURL, up to 1 MB), with the caller's
    permission. Content-addressed like the bundle."""
    body = TEMPLATE.read_bytes()
    s3, key = target.client("s3"), f"pai/{target.env}/{hashlib.sha256(body).hexdigest()[:16]}/template.yaml"
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except ClientError:
        s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/x-yaml")
    suffix = "amazonaws.com.cn" if target.region.startswith("cn-") else "amazonaws.com"
    return f"https://{bucket}.s3.{target.region}.{suffix}/{key}"


def stack_exists(cloudformation: Any, name: str) -> bool:
    try:
        stacks = cloudformation.describe_stacks(StackName=name)["Stacks"]
    except ClientError as exc:
        if "does not exist" in str(exc):
            return False
        raise
    return bool(stacks) and stacks[0]["StackStatus"] != "DELETE_COMPLETE"


def stack_outputs(cloudformation: Any, name: str) -> dict[str, str]:
    if not stack_exists(cloudformation, name):
        return {}
    stack = cloudformation.describe_stacks(StackName=name)["Stacks"][0]
    return {output["OutputKey"]: output["OutputValue"] for output in stack.get("Outputs", [])}


def deploy_stack(
    target: Target, parameters: dict[str, str], *, template_url: str, role_arn: str | None = None
) -> dict[str, str]:
    """template_url: the template in the artifacts bucket (upload_template). role_arn: the role
    CloudFormation makes the resources with (infra/github-oidc.yaml's execution role, for a deploy
    from CI); without it, the caller's own credentials."""
    cloudformation = target.client("cloudformation")
    request = {
        "StackName": target.stack_name,
        "TemplateURL": template_url,
        "Parameters": [{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
        # Named roles (the key policy names them before they exist): CAPABILITY_NAMED_IAM.
        "Capabilities": ["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM"],
        "Tags": [{"Key": "app", "Value": "pai"}, {"Key": "env", "Value": target.env}],
        **({"RoleARN": role_arn} if role_arn else {}),
    }
    if stack_exists(cloudformation, target.stack_name):
        try:
            cloudformation.update_stack(**request)
        except ClientError as exc:
            if "No updates are to be performed" not in str(exc):
                raise
            print("stack is up to date", flush=True)
        else:
            print(f"updating stack {target.stack_name} ...", flush=True)
            cloudformation.get_waiter("stack_update_complete").wait(
                StackName=target.stack_name, WaiterConfig={"Delay": 5, "MaxAttempts": 360}
            )
    else:
        print(f"creating stack {target.stack_name} ...", flush=True)
        cloudformation.create_stack(**request, OnFailure="DELETE")
        cloudformation.get_waiter("stack_create_complete").wait(
            StackName=target.stack_name, WaiterConfig={"Delay": 5, "MaxAttempts": 360}
        )
    return stack_outputs(cloudformation, target.stack_name)


def deploy_with_web_origins(
    target: Target, parameters: dict[str, str], *, template_url: str, role_arn: str | None
) -> dict[str, str]:
    """The page's CSP names the API's origin and the API's CORS the page's, so CloudFormation cannot
    make either from the other in one pass: the CSP's origins are a parameter, taken from the stack's
    own outputs. The first deploy makes the API, then narrows the CSP to it in a second update; later
    ones pass the same origins and change nothing."""
    known = webapp.connect_origins(stack_outputs(target.client("cloudformation"), target.stack_name))
    outputs = deploy_stack(
        target, {**parameters, "WebConnectOrigins": known}, template_url=template_url, role_arn=role_arn
    )
    if parameters["WebApp"] == "true":
        made = webapp.connect_origins(outputs)
        if made != known:
            print(f"narrowing the web app's connect-src to {made} ...", flush=True)
            outputs = deploy_stack(
                target, {**parameters, "WebConnectOrigins": made}, template_url=template_url, role_arn=role_arn
            )
    return outputs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    common_arguments(parser)
    parser.add_argument("--rebuild", action="store_true", help="rebuild the bundle even if one exists")
    parser.add_argument("--bundle-dir", type=Path, default=bundle.DEFAULT_OUTPUT)
    parser.add_argument("--reserved-concurrency", default="10")
    parser.add_argument("--bedrock-model-id", default="anthropic.claude-3-haiku-20240307-v1:0")
    parser.add_argument(
        "--web",
        choices=("true", "false", "bucket-only"),
        default=None,
        help="host the web app (the template's WebApp): default true in AWS, bucket-only on an emulator"
        " (moto's CloudFormation makes no CloudFront distribution; pass true to one that does)",
    )
    parser.add_argument("--web-dir", type=Path, default=WEB_DIR, help="the web app's files (default web/)")
    parser.add_argument(
        "--cloudformation-role-arn",
        default=None,
        help="the role CloudFormation makes the stack's resources with (infra/github-oidc.yaml's"
        " CloudFormationRoleArn output; CI passes it); default: your own credentials",
    )
    parser.add_argument(
        "--parameter",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="another template parameter, e.g. AlarmEmail=you@example.com, MonthlyBudgetUsd=20, "
        "EnableDashboard=true, EnableTracing=true (repeatable; one left out takes its default)",
    )
    parser.add_argument(
        "--chat-stream-url",
        choices=("true", "false"),
        default=None,
        help="the streamed chat's public Function URL (the template's EnableChatStreamUrl): default true in"
        " AWS, false on an emulator (moto's CloudFormation makes no AWS::Lambda::Url; pass true to one that does)",
    )
    parser.add_argument(
        "--no-chat-stream-url",
        dest="chat_stream_url",
        action="store_const",
        const="false",
        help="no public Function URL for streamed chat: chat through the API only (its answers buffered)",
    )
    parser.add_argument("--snapstart", action="store_true", help="Lambda SnapStart on every function (billed)")
    args = parser.parse_args(argv)
    extra: dict[str, str] = {}
    for given in args.parameter:
        name, separator, value = given.partition("=")
        if not separator or not name.isalnum():
            parser.error(f"--parameter wants NAME=VALUE, got {given!r}")
        extra[name] = value
    target = target_from(args)
    web = args.web or ("bucket-only" if target.emulated else "true")
    started = time.monotonic()
    artifacts = ensure_bundle(args.bundle_dir, rebuild=args.rebuild)
    bucket = ensure_artifacts_bucket(target)
    keys = upload(target, bucket, args.bundle_dir, artifacts)
    outputs = deploy_with_web_origins(
        target,
        {
            "Env": target.env,
            "CodeBucket": bucket,
            "CodeKey": keys["function"],
            "DepsLayerKey": keys["deps-layer"],
            "ModelLayerKey": keys["model-layer"],
            "ReservedConcurrency": args.reserved_concurrency,
            "BedrockModelId": args.bedrock_model_id,
            "WebApp": web,
            **extra,
            "EnableChatStreamUrl": args.chat_stream_url or ("false" if target.emulated else "true"),
            "EnableSnapStart": "true" if args.snapstart else "false",
        },
        template_url=upload_template(target, bucket),
        role_arn=args.cloudformation_role_arn,
    )
    webapp.deploy_web(target, outputs, args.web_dir)
    print(f"deployed {target.stack_name} in {time.monotonic() - started:.1f} s")
    for key, value in sorted(outputs.items()):
        print(f"  {key}: {value}")
    print(f"API: {outputs.get('ApiUrl', '<ApiUrl>')}")
    if "WebAppUrl" in outputs:
        print(f"web app: {outputs['WebAppUrl']} (sign in with an API key)")
    print(f"try: curl -s {outputs.get('ApiUrl', '<ApiUrl>')}/health")
    print(f'every route but /health needs an API key: make keys ARGS="create --user you --env {target.env}"')
    return 0


if __name__ == "__main__":
    sys.exit(main())
