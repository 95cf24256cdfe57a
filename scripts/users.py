"""Administer one user's data, locally or in AWS: export it, rotate their keys, or forget them.

    python scripts/users.py export --user alice [--out alice.json]
    python scripts/users.py rotate-key --user alice
    python scripts/users.py forget --user alice --yes

The same use cases the API serves the user (POST /account), run with the operator's credentials
(the standard AWS chain) for a request that arrives another way. `--endpoint-url` points at an
emulator, e.g. the one `make run` starts on http://127.0.0.1:4566 (a loopback URL implies the
emulator's credentials and `make run`'s region).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from _aws import Target, common_arguments, explain, target_from
from botocore.exceptions import BotoCoreError, ClientError

from handlers.memory import export_json
from pai_core.bootstrap import Container
from pai_core.config import ConfigError, Settings
from pai_core.errors import PaiError, UpstreamUnavailable


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/users.py", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("export", "print (or write) everything the user stored, decrypted"),
        ("rotate-key", "seal the user's new records under a new branch key version; old ones stay readable"),
        ("forget", "destroy the user's keys, then delete their memories, conversations, snapshots and API keys"),
    ):
        command = commands.add_parser(name, help=help_text)
        common_arguments(command)
        command.add_argument("--user", required=True, help="the user id (as their API key maps to)")
        command.add_argument("--bucket", help="the knowledge bucket (default: derived from the account and env)")
        if name == "export":
            command.add_argument("--out", type=Path, help="write the export here (mode 0600) instead of stdout")
        if name == "forget":
            command.add_argument("--yes", action="store_true", help="confirm: this cannot be undone")
    args = parser.parse_args(argv)
    region = args.region
    try:
        target = target_from(args)
        region = target.region
        container = Container(
            Settings.from_env(
                env=args.env,
                region=target.region,
                endpoint_url=args.endpoint_url,
                knowledge_bucket=bucket_of(target, args),
            )
        )
        return run(args, container)
    except (UpstreamUnavailable, ClientError, BotoCoreError) as exc:
        print(f"users: {explain(exc, endpoint_url=args.endpoint_url, region=region, env=args.env)}", file=sys.stderr)
        return 1
    except PaiError as exc:
        print(f"users: {exc.message}", file=sys.stderr)
        return 1
    except ConfigError as exc:
        print(f"users: {exc}", file=sys.stderr)
        return 1


def run(args: argparse.Namespace, container: Container) -> int:
    if args.command == "export":
        text = json.dumps(export_json(args.user, container.account.export(args.user)), ensure_ascii=False, indent=2)
        if args.out is None:
            print(text)
        else:
            args.out.touch(mode=0o600)
            args.out.write_text(text + "\n", encoding="utf-8")
            print(f"wrote {args.out}")
        return 0
    if args.command == "rotate-key":
        print(f"{args.user}: new records are sealed under key version {container.keyring.rotate(args.user)}")
        return 0
    if not args.yes:
        print("users: forgetting cannot be undone; add --yes to confirm", file=sys.stderr)
        return 2
    report = container.account.forget(args.user)
    print(
        f"{args.user}: forgotten: {report.key_versions} key items destroyed, {report.memories} memories, "
        f"{report.conversation_turns} conversation turns, {report.snapshot_versions} snapshot versions deleted, "
        f"{report.api_keys} API keys revoked"
    )
    return 0


def bucket_of(target: Target, args: argparse.Namespace) -> str | None:
    """The knowledge bucket, when it exists: only index snapshots live there."""
    bucket = args.bucket or f"pai-knowledge-base-{target.account}-{target.env}"
    try:
        target.client("s3").head_bucket(Bucket=bucket)
    except ClientError as exc:
        # Only a missing bucket is a deployment without snapshots; anything else (refused
        # credentials, say) is the operator's to see.
        if args.bucket or str(exc.response.get("Error", {}).get("Code")) not in {"404", "NoSuchBucket", "NotFound"}:
            raise
        print(f"users: no bucket {bucket}; index snapshots are not touched", file=sys.stderr)
        return None
    return bucket


if __name__ == "__main__":
    sys.exit(main())
