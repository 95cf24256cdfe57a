"""What deploy.py and destroy.py share: argument parsing, the boto3 session, names."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config

CLIENT_CONFIG = Config(retries={"max_attempts": 5, "mode": "standard"})


@dataclass(frozen=True)
class Target:
    env: str
    region: str
    endpoint_url: str | None
    session: Any

    @property
    def stack_name(self) -> str:
        return f"pai-{self.env}"

    def client(self, service: str) -> Any:
        return self.session.client(service, endpoint_url=self.endpoint_url, config=CLIENT_CONFIG)

    @property
    def account(self) -> str:
        return str(self.client("sts").get_caller_identity()["Account"])

    @property
    def artifacts_bucket(self) -> str:
        return f"pai-artifacts-{self.account}-{self.region}-{self.env}"


def common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env", default="dev", help="environment name (default dev)")
    parser.add_argument("--region", default=None, help="AWS region (default: the standard chain's, else us-east-1)")
    parser.add_argument("--endpoint-url", default=None, help="an AWS emulator's URL, e.g. http://127.0.0.1:4566")


def target_from(args: argparse.Namespace) -> Target:
    """The standard credential chain and region (environment, profile, SSO, instance role)."""
    session = boto3.session.Session(region_name=args.region) if args.region else boto3.session.Session()
    region = session.region_name or "us-east-1"
    if session.region_name is None:
        session = boto3.session.Session(region_name=region)
    return Target(env=args.env, region=region, endpoint_url=args.endpoint_url, session=session)
