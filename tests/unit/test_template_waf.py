"""The optional CloudFront + AWS WAF front of the API (EnableWaf, off by default): a per-IP
rate-based rule that answers PAI's own 429 before API Gateway, the authorizer or any function."""

from __future__ import annotations

import json

from pai_local.template import Template

TEMPLATE = Template.load(Env="dev")
CACHING_DISABLED = "4135ea2d-6df8-44a3-9df3-4b5a84be39ad"
ALL_VIEWER_EXCEPT_HOST_HEADER = "b689b0a8-53d0-40ab-baf2-68738e2966ac"


def test_it_is_off_by_default_and_only_ever_made_in_us_east_1() -> None:
    parameters = TEMPLATE.document["Parameters"]
    assert parameters["EnableWaf"]["Default"] == "false"
    assert parameters["EnableWaf"]["AllowedValues"] == ["true", "false"]
    assert TEMPLATE.document["Conditions"]["WafEnabled"] == {
        "Fn::And": [
            {"Fn::Equals": [{"Ref": "EnableWaf"}, "true"]},
            {"Fn::Equals": [{"Ref": "AWS::Region"}, "us-east-1"]},
        ]
    }
    # Asking for it elsewhere fails the stack instead of silently leaving it out.
    rule = TEMPLATE.document["Rules"]["WafNeedsUsEast1"]
    assert rule["RuleCondition"] == {"Fn::Equals": [{"Ref": "EnableWaf"}, "true"]}
    assert rule["Assertions"][0]["Assert"] == {"Fn::Equals": [{"Ref": "AWS::Region"}, "us-east-1"]}
    for name in ("ApiWebAcl", "ApiDistribution"):
        assert TEMPLATE.resources[name]["Condition"] == "WafEnabled"
    output = TEMPLATE.document["Outputs"]["ProtectedApiUrl"]
    assert output["Condition"] == "WafEnabled"
    assert output["Value"] == {"Fn::Sub": "https://${ApiDistribution.DomainName}"}


def test_the_rate_based_rule_answers_pais_own_429_per_client_address() -> None:
    acl = TEMPLATE.properties("ApiWebAcl")
    assert acl["Scope"] == "CLOUDFRONT"
    assert acl["DefaultAction"] == {"Allow": {}}
    (rule,) = acl["Rules"]
    statement = rule["Statement"]["RateBasedStatement"]
    assert statement == {
        "AggregateKeyType": "IP",
        "EvaluationWindowSec": 300,
        "Limit": {"Ref": "WafRequestsPerFiveMinutes"},
    }
    block = rule["Action"]["Block"]["CustomResponse"]
    assert block["ResponseCode"] == 429
    body = acl["CustomResponseBodies"][block["CustomResponseBodyKey"]]
    assert body["ContentType"] == "APPLICATION_JSON"
    error = json.loads(body["Content"])["error"]
    assert set(error) == {"code", "message"} and error["code"] == "rate_limited"  # the API's own 429 code
    limit = TEMPLATE.document["Parameters"]["WafRequestsPerFiveMinutes"]
    assert limit["MinValue"] >= 10  # WAF's smallest rate limit


def test_cloudfront_caches_nothing_and_passes_the_api_key_on() -> None:
    config = TEMPLATE.properties("ApiDistribution")["DistributionConfig"]
    assert config["WebACLId"] == {"Fn::GetAtt": ["ApiWebAcl", "Arn"]}
    (origin,) = config["Origins"]
    assert origin["DomainName"] == {"Fn::Sub": "${HttpApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}"}
    assert origin["CustomOriginConfig"]["OriginProtocolPolicy"] == "https-only"
    behavior = config["DefaultCacheBehavior"]
    assert behavior["TargetOriginId"] == origin["Id"]
    # No caching, and every viewer header but Host (API Gateway routes by its own host name); with
    # caching disabled that includes Authorization.
    assert behavior["CachePolicyId"] == CACHING_DISABLED
    assert behavior["OriginRequestPolicyId"] == ALL_VIEWER_EXCEPT_HOST_HEADER
    assert {"GET", "POST", "OPTIONS"} <= set(behavior["AllowedMethods"])
    assert behavior["ViewerProtocolPolicy"] == "https-only"
