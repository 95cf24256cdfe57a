"""What the operator scripts say when AWS or the emulator cannot be used (scripts/_aws.py): one line
naming the cause, for each kind of failure botocore reports; and which endpoints count as local
(those get the emulator's credentials). The scripts' runs against a real emulator are in
tests/integration/test_operator_scripts.py; the failures an emulator cannot produce are here."""

from __future__ import annotations

import sys
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError, ReadTimeoutError

from pai_core.config import REPO_ROOT
from pai_core.errors import UpstreamUnavailable

sys.path.insert(0, str(REPO_ROOT / "scripts"))
from _aws import explain, is_loopback


def client_error(code: str, message: str = "details") -> ClientError:
    response: Any = {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": 400}}
    return ClientError(response, "GetItem")


def wrapped(cause: Exception) -> UpstreamUnavailable:
    """As pai_core's adapters raise it (translated_aws_errors)."""
    try:
        raise UpstreamUnavailable("DynamoDB cannot be reached") from cause
    except UpstreamUnavailable as exc:
        return exc


LOCAL = {"endpoint_url": "http://127.0.0.1:4566", "region": "us-east-1", "env": "dev", "table": "pai-api-keys-dev"}
REMOTE = {"endpoint_url": None, "region": "eu-west-1", "env": "prod", "table": "pai-api-keys-prod"}


@pytest.mark.parametrize(
    ("exc", "where", "expected"),
    [
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:4566"), LOCAL, "nothing answers at http://127.0.0.1"),
        (EndpointConnectionError(endpoint_url="https://dynamodb"), REMOTE, "cannot connect to AWS (eu-west-1)"),
        (client_error("ResourceNotFoundException"), LOCAL, "has no table pai-api-keys-dev in us-east-1"),
        (client_error("ResourceNotFoundException"), REMOTE, "is the stack pai-prod deployed"),
        (client_error("UnrecognizedClientException", "The security token is invalid"), REMOTE, "refused the cred"),
        (client_error("ExpiredTokenException"), REMOTE, "refused the credentials (ExpiredTokenException)"),
        (client_error("AccessDeniedException", "not authorized"), REMOTE, "not authorized"),
        (NoCredentialsError(), REMOTE, "no usable AWS credentials"),
        (ReadTimeoutError(endpoint_url="https://dynamodb"), REMOTE, "did not answer in time"),
        (client_error("SomethingElse", "odd"), REMOTE, "answered SomethingElse: odd"),
    ],
)
@pytest.mark.parametrize("as_raised", [lambda e: e, wrapped], ids=["botocore", "through-pai-core"])
def test_each_failure_is_explained_in_one_line(
    exc: Exception, where: dict[str, Any], expected: str, as_raised: Any
) -> None:
    line = explain(as_raised(exc), **where)
    assert expected in line
    assert "\n" not in line


@pytest.mark.parametrize(
    ("url", "local"),
    [
        ("http://127.0.0.1:4566", True),
        ("http://localhost:4566", True),
        ("http://127.8.9.10:4566", True),
        ("http://[::1]:4566", True),
        ("http://0.0.0.0:4566", False),
        ("http://localstack:4566", False),
        ("https://dynamodb.eu-west-1.amazonaws.com", False),
        ("http://127.0.0.1.example.com:4566", False),
        (None, False),
        ("", False),
    ],
)
def test_which_endpoints_are_local(url: str | None, local: bool) -> None:
    assert is_loopback(url) is local
