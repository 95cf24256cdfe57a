"""Create, list and revoke PAI API keys, in AWS or in an emulator (`make keys ARGS="create --user alice"`).

    create --user U [--label L]   a new key for user U, printed once (only its SHA-256 is stored)
    list [--user U]               one user's keys (the table's user index); without --user, every
                                  key (a Scan of the table: fine for an admin's tool, never a request path)
    revoke KEY_ID                 the key stops working within the stack's AuthCacheSeconds (60 s)

Every command takes --env, --region and --endpoint-url (e.g. http://127.0.0.1:4566 for `make run`'s
embedded emulator) and uses the standard AWS credential chain; a loopback --endpoint-url uses the
emulator's credentials instead, and the region `make run` uses.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import UTC, datetime

from _aws import Target, common_arguments, explain, target_from
from botocore.exceptions import BotoCoreError, ClientError

from pai_core.adapters.dynamodb_api_keys import DynamoApiKeyStore
from pai_core.auth import ApiKeyInfo, ApiKeys
from pai_core.config import ConfigError, Settings
from pai_core.errors import PaiError, UpstreamUnavailable
from pai_core.models import iso_utc


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="api_keys.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = root.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create", help="make a new key for a user and print it once")
    create.add_argument("--user", required=True, help="the user id the key stands for")
    create.add_argument("--label", default="", help="a note to recognize the key by (a device, a script)")
    listing = commands.add_parser("list", help="list keys (never the keys themselves)")
    listing.add_argument("--user", default=None, help="only this user's keys")
    revoke = commands.add_parser("revoke", help="revoke a key by its key id")
    revoke.add_argument("key_id", metavar="KEY_ID", help="the key id `list` shows (pai_<KEY_ID>_...)")
    for command in (create, listing, revoke):
        common_arguments(command)
    return root


def service(target: Target, table: str) -> ApiKeys:
    return ApiKeys(DynamoApiKeyStore(target.client("dynamodb"), table), SystemClock())


def describe(info: ApiKeyInfo) -> str:
    state = f"revoked {iso_utc(info.revoked_at)}" if info.revoked_at is not None else "active"
    return f"{info.key_id}  {info.user_id}  {iso_utc(info.created_at)}  {state}  {info.label}".rstrip()


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        table = Settings(env=args.env).api_keys_table
    except ConfigError as exc:
        print(f"api_keys: {exc}", file=sys.stderr)
        return 1
    region = args.region
    try:
        target = target_from(args)
        region = target.region
        keys = service(target, table)
        if args.command == "create":
            issued = keys.issue(args.user, args.label)
            print(f"created key {issued.info.key_id} for user {issued.info.user_id}")
            print("the API key (shown once; only its hash is stored): send it as 'Authorization: Bearer <key>'")
            print(issued.key)
        elif args.command == "list":
            listed = keys.list_keys(args.user)
            print("keyId  userId  createdAt  state  label")
            for info in listed:
                print(describe(info))
            print(f"{len(listed)} key(s)", file=sys.stderr)
        else:
            info = keys.revoke(args.key_id)
            print(f"revoked: {describe(info)}")
            print("API Gateway may accept it until its cached answer expires (AuthCacheSeconds, 60 s).")
    except (UpstreamUnavailable, ClientError, BotoCoreError) as exc:
        reason = explain(exc, endpoint_url=args.endpoint_url, region=region, env=args.env, table=table)
        print(f"api_keys: {reason}", file=sys.stderr)
        return 1
    except (PaiError, ConfigError) as exc:
        print(f"api_keys: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
