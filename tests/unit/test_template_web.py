"""The web app's hosting in infra/template.yaml (issue 15), read from the template itself: moto's
CloudFormation skips AWS::CloudFront::* and AWS::S3::BucketPolicy (and AWS::ApiGatewayV2::*, where
CORS lives), so this is where the distribution, its origin access control, the bucket's policy, the
Content-Security-Policy and the API's CORS are checked."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from pai_core.config import REPO_ROOT
from pai_local.template import Template

TEMPLATE = Template.load(Env="dev")
REGION = "eu-west-1"
NAMES = {
    "AWS::Region": REGION,
    "AWS::URLSuffix": "amazonaws.com",
    "AWS::AccountId": "111122223333",
    "AWS::Partition": "aws",
    "WebDistribution.DomainName": "d111111abcdef8.cloudfront.net",
    "WebDistribution": "E2QWRUHEXAMPLE",
    "WebBucket.Arn": "arn:aws:s3:::pai-web-111122223333-dev",
}
NO_VALUE = object()  # AWS::NoValue: an item of a list that is not there
CACHING_OPTIMIZED = "658327ea-f89d-4fab-a63d-7e88639e58f6"  # AWS's managed cache policy


def props(logical_id: str) -> dict[str, Any]:
    return TEMPLATE.properties(logical_id)


def evaluate(value: Any, parameters: dict[str, str]) -> Any:
    """The intrinsics the web block uses (Ref, Sub, If, Join, Split), as CloudFormation resolves them
    for the given parameters."""
    names = {**NAMES, **{k: str(v.get("Default", "")) for k, v in TEMPLATE.document["Parameters"].items()}}
    names.update(parameters)
    conditions = {
        "HasWebApp": names["WebApp"] != "false",
        "HasWebCdn": names["WebApp"] == "true",
        "HasWebConnectOrigins": names["WebConnectOrigins"] != "",
        "HasCorsExtraOrigins": names["CorsExtraOrigins"] != "",
    }
    if isinstance(value, list):
        return [item for item in (evaluate(item, parameters) for item in value) if item is not NO_VALUE]
    if not isinstance(value, dict):
        return value
    if value == {"Ref": "AWS::NoValue"}:
        return NO_VALUE
    if "Ref" in value:
        return names[value["Ref"]]
    if "Fn::If" in value:
        condition, yes, no = value["Fn::If"]
        return evaluate(yes if conditions[condition] else no, parameters)
    if "Fn::Join" in value:
        separator, items = value["Fn::Join"]
        return separator.join(evaluate(items, parameters))
    if "Fn::Split" in value:
        separator, text = value["Fn::Split"]
        return evaluate(text, parameters).split(separator)
    if "Fn::Sub" in value:
        text, local = (value["Fn::Sub"], {}) if isinstance(value["Fn::Sub"], str) else value["Fn::Sub"]
        scope = {**names, **{k: evaluate(v, parameters) for k, v in local.items()}}
        return re.sub(r"\$\{([A-Za-z0-9:.]+)\}", lambda m: scope[m.group(1)], text)
    return {key: evaluate(item, parameters) for key, item in value.items()}


def csp(parameters: dict[str, str] | None = None) -> dict[str, list[str]]:
    config = props("WebResponseHeadersPolicy")["ResponseHeadersPolicyConfig"]
    policy = evaluate(
        config["SecurityHeadersConfig"]["ContentSecurityPolicy"]["ContentSecurityPolicy"], parameters or {}
    )
    assert "\n" not in policy
    directives = [d.split() for d in policy.split(";") if d.strip()]
    return {d[0]: d[1:] for d in directives}


def test_the_web_bucket_is_private_and_encrypted() -> None:
    bucket = props("WebBucket")
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    assert len(bucket["PublicAccessBlockConfiguration"]) == 4
    (rule,) = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"] == {"SSEAlgorithm": "AES256"}
    assert bucket["OwnershipControls"]["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]  # no ACLs
    assert "WebsiteConfiguration" not in bucket  # never a public website endpoint
    assert evaluate(bucket["BucketName"], {}) == "pai-web-111122223333-dev"


def test_only_the_distribution_reads_the_bucket_and_only_over_tls() -> None:
    policy = props("WebBucketPolicy")
    assert policy["Bucket"] == {"Ref": "WebBucket"}
    statements = evaluate(policy["PolicyDocument"]["Statement"], {})
    allows = [s for s in statements if s["Effect"] == "Allow"]
    assert allows == [
        {
            "Sid": "CloudFrontReadsThroughOriginAccessControl",
            "Effect": "Allow",
            "Principal": {"Service": "cloudfront.amazonaws.com"},
            "Action": "s3:GetObject",
            # Objects only, not the bucket: CloudFront cannot list it.
            "Resource": "arn:aws:s3:::pai-web-111122223333-dev/*",
            "Condition": {
                "StringEquals": {"AWS:SourceArn": "arn:aws:cloudfront::111122223333:distribution/E2QWRUHEXAMPLE"}
            },
        }
    ]
    (deny,) = [s for s in statements if s["Effect"] == "Deny"]
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert deny["Principal"] == "*" and deny["Action"] == "s3:*"
    # Without CloudFront (WebApp=bucket-only) nobody may read it at all.
    bucket_only = evaluate(policy["PolicyDocument"]["Statement"], {"WebApp": "bucket-only"})
    assert [s["Effect"] for s in bucket_only] == ["Deny"]


def test_cloudfront_reaches_the_bucket_through_origin_access_control() -> None:
    oac = props("WebOriginAccessControl")["OriginAccessControlConfig"]
    assert (oac["OriginAccessControlOriginType"], oac["SigningBehavior"], oac["SigningProtocol"]) == (
        "s3",
        "always",
        "sigv4",
    )
    config = props("WebDistribution")["DistributionConfig"]
    (origin,) = config["Origins"]
    assert origin["DomainName"] == {"Fn::GetAtt": ["WebBucket", "RegionalDomainName"]}
    assert origin["OriginAccessControlId"] == {"Fn::GetAtt": ["WebOriginAccessControl", "Id"]}
    assert origin["S3OriginConfig"] == {"OriginAccessIdentity": ""}  # OAC, not the legacy identity
    assert config["DefaultRootObject"] == "index.html"
    behavior = config["DefaultCacheBehavior"]
    assert behavior["TargetOriginId"] == origin["Id"]
    assert behavior["ViewerProtocolPolicy"] == "redirect-to-https"
    assert behavior["AllowedMethods"] == ["GET", "HEAD"]
    assert behavior["CachePolicyId"] == CACHING_OPTIMIZED
    assert behavior["ResponseHeadersPolicyId"] == {"Ref": "WebResponseHeadersPolicy"}


def test_the_csp_allows_only_the_page_itself_and_the_apis_origins() -> None:
    exact = "https://abc123.execute-api.eu-west-1.amazonaws.com https://xyz.lambda-url.eu-west-1.on.aws"
    policy = csp({"WebConnectOrigins": exact})
    assert policy == {
        "default-src": ["'none'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'", *exact.split()],
        "form-action": ["'none'"],
        "frame-ancestors": ["'none'"],
        "base-uri": ["'none'"],
    }
    # Before the first deploy knows the API: this region's API Gateway and Function URL domains only.
    fallback = csp()["connect-src"]
    assert fallback == [
        "'self'",
        f"https://*.execute-api.{REGION}.amazonaws.com",
        f"https://*.lambda-url.{REGION}.on.aws",
    ]
    for parameters in ({}, {"WebConnectOrigins": exact}):
        sources = [s for values in csp(parameters).values() for s in values]
        assert not any("unsafe" in s for s in sources)
        assert "*" not in sources and "https:" not in sources and "http:" not in sources
        others = [s for s in sources if s.startswith("http")]
        assert all(s.endswith((f".{REGION}.amazonaws.com", f".{REGION}.on.aws")) for s in others), others


def test_the_csp_is_the_one_web_csp_json_defines() -> None:
    """web/csp.json is the policy's one definition, which the local gateway serves; CloudFront's
    header must say the same, plus the API's origins in connect-src."""
    definition = REPO_ROOT / "web" / "csp.json"
    if not definition.exists():
        pytest.skip("web/csp.json is not in this tree (the web app is another branch's): nothing to compare")
    directives = json.loads(definition.read_text(encoding="utf-8"))["directives"]
    origins = "https://abc123.execute-api.eu-west-1.amazonaws.com"
    expected = {**directives, "connect-src": [*directives["connect-src"], origins]}
    assert csp({"WebConnectOrigins": origins}) == expected


@pytest.mark.parametrize(
    "value",
    [
        "https://a.example; script-src *",
        "https://a.example 'unsafe-inline'",
        "http://a.example",
        "https://a.example:8443",
        "*",
        "https://a.example https://b.example ",
    ],
)
def test_connect_origins_cannot_smuggle_directives_or_weaken_the_csp(value: str) -> None:
    pattern = TEMPLATE.document["Parameters"]["WebConnectOrigins"]["AllowedPattern"]
    assert re.fullmatch(pattern, value) is None


def test_the_security_headers() -> None:
    headers = props("WebResponseHeadersPolicy")["ResponseHeadersPolicyConfig"]["SecurityHeadersConfig"]
    assert all(header["Override"] is True for header in headers.values())
    assert headers["StrictTransportSecurity"]["AccessControlMaxAgeSec"] >= 31536000
    assert headers["ContentTypeOptions"] == {"Override": True}  # nosniff
    assert headers["ReferrerPolicy"]["ReferrerPolicy"] == "no-referrer"
    assert headers["FrameOptions"]["FrameOption"] == "DENY"


def test_cors_allows_the_web_app_and_make_runs_origins_never_any() -> None:
    cors = props("HttpApi")["CorsConfiguration"]
    assert evaluate(cors["AllowOrigins"], {}) == [
        "http://127.0.0.1:8080",
        "http://localhost:8080",
        "https://d111111abcdef8.cloudfront.net",
    ]
    extra = evaluate(cors["AllowOrigins"], {"WebApp": "false", "CorsExtraOrigins": "https://pai.example.org"})
    assert extra == ["http://127.0.0.1:8080", "http://localhost:8080", "https://pai.example.org"]
    pattern = TEMPLATE.document["Parameters"]["CorsExtraOrigins"]["AllowedPattern"]
    for wide in ("*", "https://*.example.org", "null", "https://a.example/path"):
        assert re.fullmatch(pattern, wide) is None, wide
    assert "authorization" in cors["AllowHeaders"]


def test_web_outputs_and_the_switch() -> None:
    outputs = TEMPLATE.document["Outputs"]
    assert evaluate(outputs["WebAppUrl"]["Value"], {}) == "https://d111111abcdef8.cloudfront.net"
    assert outputs["WebBucketName"]["Value"] == {"Ref": "WebBucket"}
    assert outputs["WebDistributionId"]["Value"] == {"Ref": "WebDistribution"}
    parameter = TEMPLATE.document["Parameters"]["WebApp"]
    assert parameter["Default"] == "true"
    assert set(parameter["AllowedValues"]) == {"true", "false", "bucket-only"}
    # Every CloudFront resource and output naming one exists only with CloudFront, so an emulator
    # without it (bucket-only) gets a stack whose outputs all resolve. (The API's own optional
    # distribution, EnableWaf, is off by default and has a condition of its own.)
    for name, spec in TEMPLATE.resources.items():
        if spec["Type"].startswith("AWS::CloudFront::"):
            assert "Condition" in spec, name
            if name.startswith("Web"):
                assert spec["Condition"] == "HasWebCdn", name
        if name.startswith("Web") and not spec["Type"].startswith("AWS::CloudFront::"):
            assert spec["Condition"] == "HasWebApp", name
    assert outputs["WebAppUrl"]["Condition"] == outputs["WebDistributionId"]["Condition"] == "HasWebCdn"
    assert outputs["WebBucketName"]["Condition"] == "HasWebApp"
