"""What the operator scripts share: argument parsing, the boto3 session, names, and saying in one
line why AWS (or the emulator) could not be used."""

from __future__ import annotations

import argparse
import ipaddress
import os
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ProfileNotFound,
    ReadTimeoutError,
)

from pai_core.errors import PaiError

CLIENT_CONFIG = Config(retries={"max_attempts": 5, "mode": "standard"})

# AWS answering that it does not accept the credentials (as opposed to "not found" or "throttled").
_CREDENTIAL_ERRORS = {
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "InvalidSignatureException",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "ExpiredTokenException",
    "AccessDenied",
    "AccessDeniedException",
    "InvalidAccessKeyId",
}


@dataclass(frozen=True)
class Target:
    env: str
    region: str
    endpoint_url: str | None
    session: Any

    @property
    def stack_name(self) -> str:
        return f"pai-{self.env}"

    @property
    def emulated(self) -> bool:
        return is_loopback(self.endpoint_url)

    def client(self, service: str) -> Any:
        return self.session.client(service, endpoint_url=self.endpoint_url, config=CLIENT_CONFIG)

    @property
    def account(self) -> str:
        return str(self.client("sts").get_caller_identity()["Account"])

    @property
    def artifacts_bucket(self) -> str:
        return f"pai-artifacts-{self.account}-{self.region}-{self.env}"

    def where(self) -> str:
        return self.endpoint_url or f"AWS ({self.region})"


def common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env", default="dev", help="environment name (default dev)")
    parser.add_argument("--region", default=None, help="AWS region (default: the standard chain's, else us-east-1)")
    parser.add_argument(
        "--endpoint-url",
        default=None,
        help="an AWS emulator's URL, e.g. http://127.0.0.1:4566 (`make run`'s); a loopback URL implies the"
        " emulator's credentials (test/test)",
    )


def is_loopback(endpoint_url: str | None) -> bool:
    if not endpoint_url:
        return False
    host = urlsplit(endpoint_url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def ensure_listening(endpoint_url: str) -> None:
    """EndpointConnectionError at once when nothing listens at a local endpoint, rather than after
    botocore's retries with backoff (which are for a remote service's blips, not a stopped stack)."""
    parts = urlsplit(endpoint_url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", port), timeout=2):
            return
    except OSError:
        raise EndpointConnectionError(endpoint_url=endpoint_url) from None


def use_emulator_credentials() -> None:
    """Emulators take any key; the operator's real credentials (or an expired SSO session, a
    profile this machine lacks) have no business in traffic to a process on this machine. Set in
    the environment, so every client the script builds (pai_core's composition root too) uses them."""
    # The same pair pai_local's embedded emulator runs with; imported late, only for a local endpoint.
    from pai_local.emulator import EMULATOR_CREDENTIALS

    os.environ.update(EMULATOR_CREDENTIALS)
    os.environ.pop("AWS_SESSION_TOKEN", None)
    os.environ.pop("AWS_PROFILE", None)


def target_from(args: argparse.Namespace) -> Target:
    """The standard credential chain and region (environment, profile, SSO, instance role), or,
    when --endpoint-url is a loopback address, the emulator's credentials and `make run`'s region
    (the environment's, else us-east-1, as pai_core.config reads it: never a profile's)."""
    if is_loopback(args.endpoint_url):
        ensure_listening(args.endpoint_url)
        use_emulator_credentials()
        region = args.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        session = boto3.session.Session(region_name=region)
        return Target(env=args.env, region=region, endpoint_url=args.endpoint_url, session=session)
    session = boto3.session.Session(region_name=args.region) if args.region else boto3.session.Session()
    region = session.region_name or "us-east-1"
    if session.region_name is None:
        session = boto3.session.Session(region_name=region)
    return Target(env=args.env, region=region, endpoint_url=args.endpoint_url, session=session)


def explain(  # noqa: PLR0911 (one early answer per kind of failure)
    exc: BaseException, *, endpoint_url: str | None, region: str | None, env: str, table: str | None = None
) -> str:
    """One line for the operator: what could not be used, and what to do about it. `exc` is what a
    call raised: a botocore error, or pai_core's domain error wrapping one."""
    cause: BaseException | None = exc
    while isinstance(cause, PaiError) and cause.__cause__ is not None:
        cause = cause.__cause__
    where = endpoint_url or f"AWS ({region or 'the default region'})"
    local = is_loopback(endpoint_url)
    if isinstance(cause, EndpointConnectionError | ConnectTimeoutError | ConnectionClosedError):
        if local:
            return f"nothing answers at {endpoint_url}: is `make run` going (it serves the emulator there)?"
        return f"cannot connect to {where}: check the URL, the region and the network"
    if isinstance(cause, ReadTimeoutError):
        return f"{where} did not answer in time: try again"
    if isinstance(cause, NoCredentialsError | PartialCredentialsError | ProfileNotFound):
        return (
            f"no usable AWS credentials ({cause}): set them up for the standard chain (AWS_PROFILE,"
            " `aws sso login`, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)"
        )
    if isinstance(cause, NoRegionError):
        return "no AWS region: pass --region"
    if isinstance(cause, ClientError):
        error = cause.response.get("Error", {})
        code, message = str(error.get("Code", "")), str(error.get("Message", ""))
        if code == "ResourceNotFoundException":
            missing = f"table {table}" if table else f"pai-{env} tables ({message or 'not found'})"
            if local:
                return (
                    f"the emulator at {endpoint_url} has no {missing} in {region}: does `make run` run there"
                    f" with PAI_ENV={env}? (pass the --env and --region it runs with)"
                )
            return f"{where} has no {missing}: is the stack pai-{env} deployed (`make deploy`)?"
        if code in _CREDENTIAL_ERRORS:
            return f"{where} refused the credentials ({code}): {message}"
        return f"{where} answered {code or 'an error'}: {message}"
    if isinstance(cause, BotoCoreError):
        return f"AWS SDK error talking to {where}: {cause}"
    return str(getattr(exc, "message", exc))
