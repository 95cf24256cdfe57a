"""issue 16, parts 1 and 5 in infra/template.yaml: the streamed chat's Function URL behind the
Lambda Web Adapter, and SnapStart's versions and aliases (read from the template itself: moto's
CloudFormation has no AWS::Lambda::Url or AWS::Lambda::Alias)."""

from __future__ import annotations

from typing import Any

from pai_local.template import Template

TEMPLATE = Template.load(Env="dev")
SNAPSTART = Template.load(Env="dev", EnableSnapStart="true")


def props(logical_id: str) -> dict[str, Any]:
    return TEMPLATE.properties(logical_id)


def test_the_function_url_streams_and_authenticates_in_the_function() -> None:
    url = props("ChatStreamFunctionUrl")
    assert url["InvokeMode"] == "RESPONSE_STREAM"
    assert url["AuthType"] == "NONE"  # clients hold API keys, not SigV4 credentials
    assert url["TargetFunctionArn"] == {"Fn::GetAtt": ["ChatStreamFunction", "Arn"]}
    permissions = [
        spec["Properties"]
        for spec in TEMPLATE.of_type("AWS::Lambda::Permission").values()
        if TEMPLATE.chosen(spec["Properties"]["FunctionName"]) == {"Ref": "ChatStreamFunction"}
    ]
    assert {p["Action"] for p in permissions} == {"lambda:InvokeFunctionUrl", "lambda:InvokeFunction"}
    url_permission = next(p for p in permissions if p["Action"] == "lambda:InvokeFunctionUrl")
    assert url_permission["FunctionUrlAuthType"] == "NONE"
    invoke = next(p for p in permissions if p["Action"] == "lambda:InvokeFunction")
    assert invoke["InvokedViaFunctionUrl"] is True  # only through the URL
    assert TEMPLATE.document["Outputs"]["ChatStreamUrl"]["Value"] == {
        "Fn::GetAtt": ["ChatStreamFunctionUrl", "FunctionUrl"]
    }


def test_the_function_url_allows_only_the_web_apps_origins() -> None:
    cors = props("ChatStreamFunctionUrl")["Cors"]
    origins = cors["AllowOrigins"]
    assert "*" not in origins
    assert {"http://127.0.0.1:8080", "http://localhost:8080"} <= {o for o in origins if isinstance(o, str)}
    assert {"Fn::If": ["HasWebAppOrigin", {"Ref": "WebAppOrigin"}, {"Ref": "AWS::NoValue"}]} in origins
    assert {h.lower() for h in cors["AllowHeaders"]} == {"authorization", "content-type", "idempotency-key"}
    assert cors["AllowMethods"] == ["POST"]


def test_the_stream_function_runs_the_web_adapter_in_response_stream_mode() -> None:
    function = props("ChatStreamFunction")
    variables = function["Environment"]["Variables"]
    assert function["Handler"] == "run.sh"
    assert variables["AWS_LAMBDA_EXEC_WRAPPER"] == "/opt/bootstrap"
    assert variables["AWS_LWA_INVOKE_MODE"] == "response_stream"
    assert variables["PAI_AUTH_CACHE_SECONDS"] == {"Ref": "AuthCacheSeconds"}  # the API's key cache time
    assert variables["PAI_API_KEYS_TABLE"] == {"Ref": "ApiKeysTable"}
    adapter = function["Layers"][-1]["Fn::Sub"]
    assert ":layer:LambdaAdapterLayerArm64:${LambdaAdapterLayerVersion}" in adapter
    assert "${AWS::Region}" in adapter
    assert function["Layers"][:2] == [{"Ref": "DepsLayer"}, {"Ref": "ModelLayer"}]
    assert (function["Runtime"], function["Architectures"]) == ("python3.12", ["arm64"])
    assert function["Code"] == props("ChatFunction")["Code"]  # the same artifact
    # Everyone can reach the URL: its concurrency is capped on its own.
    assert function["ReservedConcurrentExecutions"] == {"Ref": "ChatStreamConcurrency"}
    assert int(TEMPLATE.document["Parameters"]["ChatStreamConcurrency"]["Default"]) <= 10


def test_the_stream_role_adds_bedrock_streaming_and_the_key_check_to_the_chat_roles() -> None:
    def actions(role: str) -> dict[str, set[str]]:
        granted: dict[str, set[str]] = {}
        for policy in props(role)["Policies"]:
            for listed in policy["PolicyDocument"]["Statement"]:
                statement = TEMPLATE.chosen(listed)
                if isinstance(statement, dict) and "Action" in statement:
                    granted.setdefault(str(statement["Resource"]), set()).update(statement["Action"])
        return granted

    chat, stream = actions("ChatFunctionRole"), actions("ChatStreamFunctionRole")
    model = str({"Fn::Sub": "arn:${AWS::Partition}:bedrock:${AWS::Region}::foundation-model/${BedrockModelId}"})
    assert "bedrock:InvokeModelWithResponseStream" in stream[model]
    assert stream[str({"Fn::GetAtt": ["ApiKeysTable", "Arn"]})] == {"dynamodb:GetItem"}
    for resource, granted in chat.items():
        if all(action.startswith("logs:") for action in granted):
            continue  # each function writes to its own log group only
        assert granted <= stream[resource], resource
    assert stream[str({"Fn::GetAtt": ["ChatStreamLogGroup", "Arn"]})] == {"logs:CreateLogStream", "logs:PutLogEvents"}


def test_local_harness_serves_the_stream_function_itself_not_through_the_gateway() -> None:
    from pai_local.functions import functions_from_template

    assert "run" not in {spec.name for spec in functions_from_template(TEMPLATE)}
    assert all(route.handler != "run.sh" for route in TEMPLATE.routes())


def test_snapstart_is_off_by_default_and_applies_to_every_function_when_on() -> None:
    parameter = TEMPLATE.document["Parameters"]["EnableSnapStart"]
    assert parameter["Default"] == "false"
    assert not TEMPLATE.condition("SnapStartOn") and SNAPSTART.condition("SnapStartOn")
    functions = TEMPLATE.of_type("AWS::Lambda::Function")
    for name, spec in functions.items():
        setting = spec["Properties"]["SnapStart"]
        assert setting == {"Fn::If": ["SnapStartOn", {"ApplyOn": "PublishedVersions"}, {"Ref": "AWS::NoValue"}]}, name
    aliases = {
        spec["Properties"]["FunctionName"]["Ref"]: spec for spec in TEMPLATE.of_type("AWS::Lambda::Alias").values()
    }
    assert set(aliases) == set(functions)
    for function, alias in aliases.items():
        assert alias["Condition"] == "SnapStartOn" and alias["Properties"]["Name"] == "live"
        version_id = alias["Properties"]["FunctionVersion"]["Fn::GetAtt"][0]
        version = TEMPLATE.resources[version_id]
        assert version["Properties"]["FunctionName"] == {"Ref": function}
        # A new code artifact publishes a new version (a Version's properties replace it when changed).
        assert "${CodeKey}" in version["Properties"]["Description"]["Fn::Sub"]


def test_with_snapstart_everything_invokes_the_live_alias_and_without_it_the_function() -> None:
    for template, expect_alias in ((TEMPLATE, False), (SNAPSTART, True)):
        targets: list[Any] = []
        for spec in template.of_type("AWS::ApiGatewayV2::Integration").values():
            targets.append(spec["Properties"]["IntegrationUri"])
        for kind in ("AWS::Lambda::Permission", "AWS::Lambda::EventSourceMapping"):
            targets += [spec["Properties"]["FunctionName"] for spec in template.of_type(kind).values()]
        for target in targets:
            chosen = template.chosen(target)
            logical_id = chosen["Fn::GetAtt"][0] if "Fn::GetAtt" in chosen else chosen["Ref"]
            kind = template.resources[logical_id]["Type"]
            assert kind == ("AWS::Lambda::Alias" if expect_alias else "AWS::Lambda::Function"), target
        (authorizer,) = template.of_type("AWS::ApiGatewayV2::Authorizer").values()
        uri = template.chosen(authorizer["Properties"]["AuthorizerUri"])["Fn::Sub"]
        assert ("${AuthorizerLiveAlias}" in uri) is expect_alias
        qualifier = template.chosen(template.properties("ChatStreamFunctionUrl")["Qualifier"])
        assert (qualifier != {"Ref": "AWS::NoValue"}) is expect_alias
    # The routes the local gateway serves are the same either way.
    assert [(r.method, r.path, r.handler) for r in SNAPSTART.routes()] == [
        (r.method, r.path, r.handler) for r in TEMPLATE.routes()
    ]


def test_the_local_function_url_allows_the_local_pages_and_leaves_out_the_distribution() -> None:
    from pai_local.function_url import cors_from_template

    cors = cors_from_template(TEMPLATE, extra_origins=("http://127.0.0.1:9999",))
    # The web distribution's origin is in the template's list, but the local stack has no distribution.
    assert cors.allow_origins == ("http://127.0.0.1:8080", "http://localhost:8080", "http://127.0.0.1:9999")
    assert "*" not in cors.allow_origins
