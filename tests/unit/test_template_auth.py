"""infra/template.yaml's authentication: the API key authorizer on every route but GET /health, its
function and least-privilege role, its cache, the keys table."""

from __future__ import annotations

from typing import Any

from pai_local.template import Template

TEMPLATE = Template.load(Env="dev")


def props(logical_id: str) -> dict[str, Any]:
    return TEMPLATE.properties(logical_id)


def test_every_route_but_health_has_the_api_key_authorizer() -> None:
    routes = {
        spec["Properties"]["RouteKey"]: spec["Properties"]
        for spec in TEMPLATE.of_type("AWS::ApiGatewayV2::Route").values()
    }
    assert "GET /health" in routes
    for key, route in routes.items():
        if key == "GET /health":
            assert route.get("AuthorizationType", "NONE") == "NONE"
            assert "AuthorizerId" not in route
        else:
            assert route["AuthorizationType"] == "CUSTOM", key
            assert route["AuthorizerId"] == {"Ref": "ApiKeyAuthorizer"}, key


def test_the_authorizer_is_an_uncached_request_authorizer_with_simple_responses() -> None:
    (name,) = TEMPLATE.of_type("AWS::ApiGatewayV2::Authorizer")
    authorizer = props(name)
    assert authorizer["AuthorizerType"] == "REQUEST"
    assert authorizer["AuthorizerPayloadFormatVersion"] == "2.0"
    assert authorizer["EnableSimpleResponses"] is True
    assert authorizer["IdentitySource"] == ["$request.header.Authorization"]
    # API Gateway caches nothing: it would keep an "unavailable" answer as long as a good one. The
    # authorizer's container remembers good keys for AuthCacheSeconds instead.
    assert authorizer["AuthorizerResultTtlInSeconds"] == 0
    variables = props("AuthorizerFunction")["Environment"]["Variables"]
    assert variables["PAI_AUTH_CACHE_SECONDS"] == {"Ref": "AuthCacheSeconds"}
    assert "${AuthorizerFunction.Arn}" in TEMPLATE.chosen(authorizer["AuthorizerUri"])["Fn::Sub"]
    parameter = TEMPLATE.document["Parameters"]["AuthCacheSeconds"]
    assert (parameter["Default"], parameter["MinValue"], parameter["MaxValue"]) == (60, 0, 3600)


def test_api_gateway_may_invoke_the_authorizer_and_only_through_it() -> None:
    permissions = [
        spec["Properties"]
        for spec in TEMPLATE.of_type("AWS::Lambda::Permission").values()
        if TEMPLATE.chosen(spec["Properties"]["FunctionName"]) == {"Ref": "AuthorizerFunction"}
    ]
    assert len(permissions) == 1
    (permission,) = permissions
    assert permission["Principal"] == "apigateway.amazonaws.com"
    assert permission["SourceArn"]["Fn::Sub"].endswith("${HttpApi}/authorizers/${ApiKeyAuthorizer}")


def test_the_authorizer_function_is_small_and_carries_no_model() -> None:
    function = props("AuthorizerFunction")
    assert function["Handler"] == "handlers.authorizer.handler"
    assert (function["Runtime"], function["Architectures"]) == ("python3.12", ["arm64"])
    assert function["MemorySize"] <= 256 and function["Timeout"] <= 10
    assert function["Layers"] == [{"Ref": "DepsLayer"}]
    assert function["Code"] == props("MemoryFunction")["Code"]  # the same artifact
    assert function["Role"] == {"Fn::GetAtt": ["AuthorizerFunctionRole", "Arn"]}
    assert function["Environment"]["Variables"]["PAI_API_KEYS_TABLE"] == {"Ref": "ApiKeysTable"}


def test_the_authorizer_role_reads_one_key_and_nothing_else() -> None:
    role = props("AuthorizerFunctionRole")
    statements = [s for policy in role["Policies"] for s in policy["PolicyDocument"]["Statement"]]
    assert statements == [
        {
            "Effect": "Allow",
            "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
            "Resource": {"Fn::GetAtt": ["AuthorizerLogGroup", "Arn"]},
        },
        {"Effect": "Allow", "Action": ["dynamodb:GetItem"], "Resource": {"Fn::GetAtt": ["ApiKeysTable", "Arn"]}},
    ]
    # No AWSLambdaBasicExecutionRole (logs:CreateLogGroup on * is not needed); X-Ray segments only with
    # EnableTracing (tests/unit/test_template_observability.py).
    assert role["ManagedPolicyArns"] == [
        {
            "Fn::If": [
                "TracingEnabled",
                {"Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/AWSXRayDaemonWriteAccess"},
                {"Ref": "AWS::NoValue"},
            ]
        }
    ]


def test_no_other_function_can_read_or_make_keys() -> None:
    """Revoking a user's keys (forgetting them) may query the user index, which holds no digests,
    and mark keys revoked; reading a key's digest or writing a key is the authorizer's and the
    administrator's business only."""
    table, index = {"Fn::GetAtt": ["ApiKeysTable", "Arn"]}, {"Fn::Sub": "${ApiKeysTable.Arn}/index/user-index"}
    allowed = {"dynamodb:Query": [index], "dynamodb:UpdateItem": [table]}
    for name, spec in TEMPLATE.of_type("AWS::IAM::Role").items():
        if name in ("AuthorizerFunctionRole", "ChatStreamFunctionRole"):  # the latter runs the authorizer's code
            continue
        for policy in spec["Properties"]["Policies"]:
            for statement in policy["PolicyDocument"]["Statement"]:
                resources = statement.get("Resource", []) if isinstance(statement, dict) else []
                resources = resources if isinstance(resources, list) else [resources]
                touching = [r for r in resources if "ApiKeysTable" in str(r)]
                for action in statement.get("Action", []) if touching else []:
                    assert all(r in allowed.get(action, []) for r in touching), (name, action)


def test_the_keys_table_is_keyed_by_key_id_with_a_user_index_and_the_stack_key() -> None:
    table = props("ApiKeysTable")
    assert TEMPLATE.resolve(table["TableName"]) == "pai-api-keys-dev"
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["KeySchema"] == [{"AttributeName": "keyId", "KeyType": "HASH"}]
    (index,) = table["GlobalSecondaryIndexes"]
    assert index["IndexName"] == "user-index"
    assert index["KeySchema"][0] == {"AttributeName": "userId", "KeyType": "HASH"}
    assert "digest" not in index["Projection"].get("NonKeyAttributes", [])
    assert index["Projection"]["ProjectionType"] != "ALL"  # the digests stay out of the index
    assert table["SSESpecification"] == {"SSEEnabled": True, "SSEType": "KMS", "KMSMasterKeyId": {"Ref": "PaiKey"}}


def test_the_keys_table_name_is_the_one_settings_derive() -> None:
    from pai_core.config import Settings

    template = Template.load(Env="prod")
    assert template.resolve(template.properties("ApiKeysTable")["TableName"]) == Settings(env="prod").api_keys_table
