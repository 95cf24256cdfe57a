"""The template's Observability block (issue 16, part 4), read from infra/template.yaml: moto's
CloudFormation creates the alarm topic but skips alarms, budgets and topic policies, so what they
say is checked here."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from pai_core.config import REPO_ROOT
from pai_local.template import Template

TEMPLATE = Template.load(Env="dev")
RESOURCES = TEMPLATE.resources
PARAMETERS = TEMPLATE.document["Parameters"]
CONDITIONS = TEMPLATE.document["Conditions"]
FUNCTIONS = sorted(TEMPLATE.of_type("AWS::Lambda::Function"))
TABLES = sorted(TEMPLATE.of_type("AWS::DynamoDB::Table"))
ALARMS = TEMPLATE.of_type("AWS::CloudWatch::Alarm")
TOPIC = {"Ref": "AlarmTopic"}


def metric_stats(alarm: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {query["Id"]: query["MetricStat"] for query in alarm["Properties"]["Metrics"] if "MetricStat" in query}


def returned_expression(alarm: dict[str, Any]) -> str:
    (returned,) = [query for query in alarm["Properties"]["Metrics"] if query.get("ReturnData")]
    expression = returned["Expression"]
    return str(expression["Fn::Sub"] if isinstance(expression, dict) else expression)


def alarms_on(namespace: str, dimension: str) -> dict[str, list[str]]:
    """Which resource each alarm of `namespace` watches (by the dimension's Ref), alarm names by resource."""
    watched: dict[str, list[str]] = {}
    for name, alarm in ALARMS.items():
        refs = {
            value["Ref"]
            for stat in metric_stats(alarm).values()
            if stat["Metric"]["Namespace"] == namespace
            for d in stat["Metric"]["Dimensions"]
            if d["Name"] == dimension and isinstance(value := d["Value"], dict)
        }
        for ref in refs:
            watched.setdefault(ref, []).append(name)
    return watched


def test_every_function_has_an_error_rate_alarm_above_five_percent() -> None:
    watched = alarms_on("AWS/Lambda", "FunctionName")
    assert sorted(watched) == FUNCTIONS
    for function, (alarm_name,) in watched.items():
        alarm = ALARMS[alarm_name]
        props = alarm["Properties"]
        stats = metric_stats(alarm)
        assert {s["Metric"]["MetricName"] for s in stats.values()} == {"Errors", "Invocations"}
        dimensions = [{"Name": "FunctionName", "Value": {"Ref": function}}]
        assert all(s["Stat"] == "Sum" and s["Metric"]["Dimensions"] == dimensions for s in stats.values())
        # A rate in percent, and none below the minimum number of invocations.
        assert returned_expression(alarm) == (
            "IF(invocations >= ${AlarmMinInvocations}, 100 * errors / invocations, 0)"
        )
        assert (props["ComparisonOperator"], props["Threshold"]) == ("GreaterThanThreshold", 5)


def test_every_table_has_a_throttling_alarm() -> None:
    watched = alarms_on("AWS/DynamoDB", "TableName")
    assert sorted(watched) == TABLES
    for (alarm_name,) in watched.values():
        alarm = ALARMS[alarm_name]
        names = {s["Metric"]["MetricName"] for s in metric_stats(alarm).values()}
        assert names == {"ReadThrottleEvents", "WriteThrottleEvents"}
        assert returned_expression(alarm) == "reads + writes"
        props = alarm["Properties"]
        assert (props["ComparisonOperator"], props["Threshold"]) == ("GreaterThanOrEqualToThreshold", 1)


def test_the_api_has_a_5xx_alarm_on_its_stage() -> None:
    watched = alarms_on("AWS/ApiGateway", "ApiId")
    assert list(watched) == ["HttpApi"]
    (alarm_name,) = watched["HttpApi"]
    alarm = ALARMS[alarm_name]
    stats = metric_stats(alarm)
    assert {s["Metric"]["MetricName"] for s in stats.values()} == {"5xx", "Count"}
    stage = TEMPLATE.properties("ApiStage")["StageName"]
    assert all({"Name": "Stage", "Value": stage} in s["Metric"]["Dimensions"] for s in stats.values())
    assert "100 * errors / requests" in returned_expression(alarm)
    assert (alarm["Properties"]["ComparisonOperator"], alarm["Properties"]["Threshold"]) == ("GreaterThanThreshold", 5)


@pytest.mark.parametrize("name", sorted(ALARMS))
def test_each_alarm_notifies_the_topic_and_an_idle_stack_is_not_alarming(name: str) -> None:
    alarm = ALARMS[name]
    props = alarm["Properties"]
    assert alarm["Condition"] == "AlarmsEnabled"
    assert props["AlarmActions"] == [TOPIC] and props["OKActions"] == [TOPIC]
    assert props["TreatMissingData"] == "notBreaching"
    assert (props["EvaluationPeriods"], props["DatapointsToAlarm"]) == (1, 1)
    # Standard resolution: a high-resolution alarm costs three times as much.
    assert all(stat["Period"] >= 60 for stat in metric_stats(alarm).values())
    assert props["AlarmName"]["Fn::Sub"].startswith("pai-${Env}-")


def test_alarm_count_matches_the_readme_price() -> None:
    # 8 functions + 6 tables + the API, each of two metrics: the $3.00 a month the README states.
    assert len(ALARMS) == len(FUNCTIONS) + len(TABLES) + 1 == 15
    assert all(len(metric_stats(alarm)) == 2 for alarm in ALARMS.values())
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert "15 alarms" in readme and "$3.00" in readme


def test_the_topic_is_encrypted_by_the_stack_key_that_lets_only_this_topics_publishers_in() -> None:
    topic = TEMPLATE.properties("AlarmTopic")
    assert topic["KmsMasterKeyId"] == {"Ref": "PaiKey"}
    topic_name = topic["TopicName"]["Fn::Sub"]
    statements = {s.get("Sid"): s for s in TEMPLATE.properties("PaiKey")["KeyPolicy"]["Statement"]}
    for sid, service in (("AlarmsPublishToTheAlarmTopic", "cloudwatch"), ("BudgetsPublishToTheAlarmTopic", "budgets")):
        statement = statements[sid]
        assert statement["Principal"] == {"Service": f"{service}.amazonaws.com"}
        assert sorted(statement["Action"]) == ["kms:Decrypt", "kms:GenerateDataKey*"]
        context = statement["Condition"]["StringEquals"]["kms:EncryptionContext:aws:sns:topicArn"]["Fn::Sub"]
        assert context.endswith(f":{topic_name}")
    policy = TEMPLATE.properties("AlarmTopicPolicy")
    assert policy["Topics"] == [TOPIC]
    publishers = {
        s["Principal"]["Service"] for s in policy["PolicyDocument"]["Statement"] if s["Action"] == "sns:Publish"
    }
    assert publishers == {"cloudwatch.amazonaws.com", "budgets.amazonaws.com"}
    assert all(
        s["Condition"]["StringEquals"]["aws:SourceAccount"] == {"Ref": "AWS::AccountId"}
        for s in policy["PolicyDocument"]["Statement"]
    )


def test_the_email_subscription_is_optional() -> None:
    subscription = RESOURCES["AlarmEmailSubscription"]
    assert subscription["Condition"] == "HasAlarmEmail"
    assert subscription["Properties"]["Protocol"] == "email"
    assert subscription["Properties"]["Endpoint"] == {"Ref": "AlarmEmail"}
    assert PARAMETERS["AlarmEmail"]["Default"] == ""
    pattern = re.compile(PARAMETERS["AlarmEmail"]["AllowedPattern"])
    assert pattern.match("") and pattern.match("me@example.com") and not pattern.match("not an address")
    assert CONDITIONS["HasAlarmEmail"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "AlarmEmail"}, ""]}]}


def test_the_budget_is_monthly_parameterized_and_notifies_at_80_actual_and_100_forecast() -> None:
    (name,) = TEMPLATE.of_type("AWS::Budgets::Budget")
    budget = TEMPLATE.properties(name)
    assert budget["Budget"]["BudgetLimit"] == {"Amount": {"Ref": "MonthlyBudgetUsd"}, "Unit": "USD"}
    assert (budget["Budget"]["BudgetType"], budget["Budget"]["TimeUnit"]) == ("COST", "MONTHLY")
    assert PARAMETERS["MonthlyBudgetUsd"]["Type"] == "Number"
    notifications = {
        (n["Notification"]["NotificationType"], n["Notification"]["Threshold"]): n
        for n in budget["NotificationsWithSubscribers"]
    }
    assert set(notifications) == {("ACTUAL", 80), ("FORECASTED", 100)}
    for notification in notifications.values():
        assert notification["Notification"]["ThresholdType"] == "PERCENTAGE"
        assert notification["Subscribers"] == [{"SubscriptionType": "SNS", "Address": TOPIC}]


def test_the_dashboard_is_optional_and_its_body_is_json() -> None:
    dashboard = RESOURCES["Dashboard"]
    assert dashboard["Condition"] == "DashboardEnabled" and PARAMETERS["EnableDashboard"]["Default"] == "false"
    # Every ${...} as CloudFormation would fill it in: plain names, nothing to escape in JSON.
    body = re.sub(
        r"\$\{([A-Za-z0-9:]+)\}",
        lambda m: "dev" if m[1] == "Env" else "x-" + m[1].replace(":", ""),
        dashboard["Properties"]["DashboardBody"]["Fn::Sub"],
    )
    widgets = json.loads(body)["widgets"]
    assert len(widgets) >= 6
    text = json.dumps(widgets)
    for metric in ("Requests", "SearchIndexRefresh", "KmsCalls", "ModelInputTokens", "LearningTurns"):
        assert metric in text
    assert "PAI/dev" in text


def test_tracing_is_a_parameter_off_by_default() -> None:
    assert PARAMETERS["EnableTracing"]["Default"] == "false"
    assert CONDITIONS["TracingEnabled"] == {"Fn::Equals": [{"Ref": "EnableTracing"}, "true"]}
    xray = {
        "Fn::If": [
            "TracingEnabled",
            {"Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/AWSXRayDaemonWriteAccess"},
            {"Ref": "AWS::NoValue"},
        ]
    }
    for name in FUNCTIONS:
        props = TEMPLATE.properties(name)
        assert props["TracingConfig"] == {"Mode": {"Fn::If": ["TracingEnabled", "Active", "PassThrough"]}}
        variables = props["Environment"]["Variables"]
        assert variables["POWERTOOLS_TRACE_DISABLED"] == {"Fn::If": ["TracingEnabled", "false", "true"]}
        assert variables["PAI_METRICS_NAMESPACE"] == {
            "Fn::If": ["MetricsEnabled", {"Fn::Sub": "PAI/${Env}"}, {"Ref": "AWS::NoValue"}]
        }
        # Lambda refuses Active tracing to a role that cannot write segments.
        role = props["Role"]["Fn::GetAtt"][0]
        assert xray in TEMPLATE.properties(role)["ManagedPolicyArns"], role
