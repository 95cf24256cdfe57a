"""infra/github-oidc.yaml's CloudFormationExecutionRole against infra/template.yaml: every resource
type the stack uses can be created and deleted with it, by the names the template gives, and no
other environment's; its function roles may have attached exactly the AWS managed policies the
template attaches. cfn-lint checks that the actions exist; only this checks that they suffice.

REQUIRED is the source of truth for "suffice". It is taken from the CloudFormation resource type
schemas (the registry schemas' handlers.create.permissions and handlers.delete.permissions, as
cfn-lint 1.58.0 bundles them: cfnlint/data/schemas/resources, schema_date 2026-10-20), less what
only a property the template does not set needs:
  AWS::DynamoDB::Table     imports, Kinesis streaming, contributor insights, replicas, resource policy,
                           iam:CreateServiceLinkedRole (global tables); its item reads (imports)
  AWS::Lambda::Function    VPC (ec2:*), EFS and S3 Files mounts, KmsKeyArn (kms:*), code signing,
                           capacity providers, runtime management, recursion and scaling settings (Put*)
  AWS::Lambda::Version     provisioned concurrency, runtime management, scaling (Put*)
  AWS::Lambda::Alias       provisioned concurrency (Put*), CodeDeploy
  AWS::Lambda::EventSourceMapping  kms:* (filter criteria encrypted with a key of one's own)
  AWS::Logs::LogGroup      data protection, index, bearer token and resource policies, delivery to
                           S3 or Firehose (delete keeps DeleteDataProtectionPolicy: the handler calls it)
  AWS::S3::Bucket          analytics, CORS, inventory, metrics, notification, replication, website,
                           accelerate, logging, object lock, ACLs, metadata tables, S3 Tables, ABAC
  AWS::CloudFront::Distribution  connection groups, VPC origins; CreateDistributionWithTags is
                           authorized as CreateDistribution plus TagResource (IAM has no such action)
  AWS::ApiGatewayV2::*     s3:GetObject (an API imported from S3), iam:PassRole (integration and
                           authorizer credentials)
  AWS::SNS::Topic          inline subscriptions, data protection, delivery-status roles (iam:*)
  AWS::WAFv2::WebACL       payments:GetConnectedAccount (not a managed rule group subscription here)
  AWS::Budgets::Budget     billing:GetBillingViewData (BillingViewArn)
EXTRA lists what a resource needs beyond its schema, each with where AWS documents it."""

from __future__ import annotations

import fnmatch
from typing import Any

import pytest
from cfnlint.schema import PROVIDER_SCHEMA_MANAGER

from pai_core.config import REPO_ROOT
from pai_local.template import Template

ACCOUNT = "123456789012"
REGION = "us-east-1"  # the WAF's (CLOUDFRONT scope) region, so every resource type is made there
PSEUDO = {"AWS::Region": REGION, "AWS::AccountId": ACCOUNT, "AWS::Partition": "aws", "AWS::URLSuffix": "amazonaws.com"}

# type: (create, delete)
REQUIRED: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "AWS::KMS::Key": (
        frozenset({"kms:CreateKey", "kms:PutKeyPolicy", "kms:EnableKeyRotation", "kms:TagResource"}),
        frozenset({"kms:DescribeKey", "kms:ScheduleKeyDeletion"}),
    ),
    "AWS::KMS::Alias": (frozenset({"kms:CreateAlias"}), frozenset({"kms:DeleteAlias"})),
    "AWS::DynamoDB::Table": (
        frozenset(
            {
                "dynamodb:CreateTable",
                "dynamodb:DescribeTable",
                "dynamodb:UpdateTimeToLive",
                "dynamodb:DescribeTimeToLive",
                "dynamodb:UpdateContinuousBackups",
                "dynamodb:DescribeContinuousBackups",
                "dynamodb:TagResource",
                "dynamodb:ListTagsOfResource",
                # SSE with the stack key.
                "kms:CreateGrant",
                "kms:DescribeKey",
                "kms:Decrypt",
                "kms:Encrypt",
            }
        ),
        frozenset({"dynamodb:DeleteTable", "dynamodb:DescribeTable"}),
    ),
    "AWS::S3::Bucket": (
        frozenset(
            {
                "s3:CreateBucket",
                "s3:PutBucketTagging",
                "s3:PutEncryptionConfiguration",
                "s3:PutBucketPublicAccessBlock",
                "s3:PutBucketOwnershipControls",
                "s3:PutBucketVersioning",
                "s3:PutLifecycleConfiguration",
                "s3:PutIntelligentTieringConfiguration",
                "s3:ListBucket",
            }
        ),
        frozenset({"s3:DeleteBucket", "s3:ListBucket"}),
    ),
    "AWS::S3::BucketPolicy": (
        frozenset({"s3:GetBucketPolicy", "s3:PutBucketPolicy"}),
        frozenset({"s3:GetBucketPolicy", "s3:DeleteBucketPolicy"}),
    ),
    "AWS::IAM::Role": (
        frozenset(
            {
                "iam:CreateRole",
                "iam:PutRolePolicy",
                "iam:AttachRolePolicy",
                "iam:GetRolePolicy",
                "iam:TagRole",
                "iam:GetRole",
            }
        ),
        frozenset(
            {
                "iam:DeleteRole",
                "iam:DetachRolePolicy",
                "iam:DeleteRolePolicy",
                "iam:GetRole",
                "iam:ListAttachedRolePolicies",
                "iam:ListRolePolicies",
            }
        ),
    ),
    "AWS::Lambda::LayerVersion": (
        frozenset({"lambda:PublishLayerVersion", "s3:GetObject", "s3:GetObjectVersion"}),
        frozenset({"lambda:GetLayerVersion", "lambda:DeleteLayerVersion"}),
    ),
    "AWS::Lambda::Function": (
        frozenset(
            {
                "lambda:CreateFunction",
                "lambda:GetFunction",
                "lambda:PutFunctionConcurrency",
                "lambda:GetLayerVersion",
                "lambda:TagResource",
                "lambda:GetRuntimeManagementConfig",
                "lambda:GetFunctionRecursionConfig",
                "lambda:GetFunctionCodeSigningConfig",
                "iam:PassRole",
                "s3:GetObject",
                "s3:GetObjectVersion",
            }
        ),
        frozenset({"lambda:DeleteFunction", "lambda:GetFunction"}),
    ),
    "AWS::Lambda::Version": (
        frozenset(
            {
                "lambda:PublishVersion",
                "lambda:GetFunctionConfiguration",
                "lambda:ListVersionsByFunction",
                "lambda:GetProvisionedConcurrencyConfig",
                "lambda:GetRuntimeManagementConfig",
            }
        ),
        frozenset({"lambda:GetFunctionConfiguration", "lambda:DeleteFunction"}),
    ),
    "AWS::Lambda::Alias": (
        frozenset({"lambda:CreateAlias", "lambda:GetProvisionedConcurrencyConfig"}),
        frozenset({"lambda:DeleteAlias", "lambda:GetAlias"}),
    ),
    "AWS::Lambda::Url": (frozenset({"lambda:CreateFunctionUrlConfig"}), frozenset({"lambda:DeleteFunctionUrlConfig"})),
    "AWS::Lambda::Permission": (frozenset({"lambda:AddPermission"}), frozenset({"lambda:RemovePermission"})),
    "AWS::Lambda::EventSourceMapping": (
        frozenset({"lambda:CreateEventSourceMapping", "lambda:GetEventSourceMapping", "lambda:TagResource"}),
        frozenset({"lambda:DeleteEventSourceMapping", "lambda:GetEventSourceMapping"}),
    ),
    "AWS::SQS::Queue": (
        frozenset(
            {"sqs:CreateQueue", "sqs:GetQueueUrl", "sqs:GetQueueAttributes", "sqs:ListQueueTags", "sqs:TagQueue"}
        ),
        frozenset({"sqs:DeleteQueue", "sqs:GetQueueAttributes"}),
    ),
    "AWS::Logs::LogGroup": (
        frozenset({"logs:DescribeLogGroups", "logs:CreateLogGroup", "logs:PutRetentionPolicy", "logs:TagResource"}),
        frozenset({"logs:DescribeLogGroups", "logs:DeleteLogGroup", "logs:DeleteDataProtectionPolicy"}),
    ),
    "AWS::ApiGatewayV2::Api": (
        frozenset({"apigateway:POST", "apigateway:PUT"}),
        frozenset({"apigateway:GET", "apigateway:DELETE"}),
    ),
    "AWS::ApiGatewayV2::Stage": (frozenset({"apigateway:POST"}), frozenset({"apigateway:DELETE"})),
    "AWS::ApiGatewayV2::Authorizer": (
        frozenset({"apigateway:POST"}),
        frozenset({"apigateway:GET", "apigateway:DELETE"}),
    ),
    "AWS::ApiGatewayV2::Integration": (
        frozenset({"apigateway:POST"}),
        frozenset({"apigateway:GET", "apigateway:DELETE"}),
    ),
    "AWS::ApiGatewayV2::Route": (frozenset({"apigateway:POST"}), frozenset({"apigateway:GET", "apigateway:DELETE"})),
    "AWS::CloudFront::Distribution": (
        frozenset(
            {
                "cloudfront:CreateDistribution",
                "cloudfront:GetDistribution",
                "cloudfront:GetDistributionConfig",
                "cloudfront:TagResource",
            }
        ),
        frozenset({"cloudfront:DeleteDistribution", "cloudfront:GetDistribution", "cloudfront:GetDistributionConfig"}),
    ),
    "AWS::CloudFront::OriginAccessControl": (
        frozenset({"cloudfront:CreateOriginAccessControl"}),
        frozenset({"cloudfront:DeleteOriginAccessControl", "cloudfront:GetOriginAccessControl"}),
    ),
    "AWS::CloudFront::ResponseHeadersPolicy": (
        frozenset({"cloudfront:CreateResponseHeadersPolicy"}),
        frozenset({"cloudfront:DeleteResponseHeadersPolicy", "cloudfront:GetResponseHeadersPolicy"}),
    ),
    "AWS::WAFv2::WebACL": (
        frozenset({"wafv2:CreateWebACL", "wafv2:GetWebACL", "wafv2:ListTagsForResource", "wafv2:TagResource"}),
        frozenset({"wafv2:DeleteWebACL", "wafv2:GetWebACL"}),
    ),
    "AWS::SNS::Topic": (
        frozenset({"sns:CreateTopic", "sns:TagResource", "sns:GetTopicAttributes"}),
        frozenset({"sns:GetTopicAttributes", "sns:DeleteTopic"}),
    ),
    "AWS::SNS::TopicPolicy": (frozenset({"sns:SetTopicAttributes"}), frozenset({"sns:SetTopicAttributes"})),
    "AWS::SNS::Subscription": (
        frozenset({"sns:Subscribe"}),
        frozenset({"sns:Unsubscribe", "sns:GetSubscriptionAttributes"}),
    ),
    "AWS::CloudWatch::Alarm": (
        frozenset(
            {
                "cloudwatch:PutMetricAlarm",
                "cloudwatch:DescribeAlarms",
                "cloudwatch:TagResource",
                "cloudwatch:ListTagsForResource",
            }
        ),
        frozenset({"cloudwatch:DeleteAlarms", "cloudwatch:DescribeAlarms"}),
    ),
    "AWS::CloudWatch::Dashboard": (
        frozenset({"cloudwatch:PutDashboard", "cloudwatch:GetDashboard", "cloudwatch:TagResource"}),
        frozenset({"cloudwatch:DeleteDashboards", "cloudwatch:GetDashboard"}),
    ),
    "AWS::Budgets::Budget": (
        frozenset({"budgets:ModifyBudget", "budgets:TagResource", "budgets:ViewBudget", "budgets:ListTagsForResource"}),
        frozenset({"budgets:ModifyBudget"}),
    ),
}

# What the caller needs to create a stage with access logs (API Gateway developer guide, 'Configure
# logging for HTTP APIs'); the deploy role's statement test (test_delivery.py) allows them unscoped.
ACCESS_LOG_ACTIONS = frozenset(
    {
        "logs:CreateLogDelivery",
        "logs:GetLogDelivery",
        "logs:UpdateLogDelivery",
        "logs:DeleteLogDelivery",
        "logs:ListLogDeliveries",
        "logs:PutResourcePolicy",
        "logs:DescribeResourcePolicies",
        "logs:DescribeLogGroups",
    }
)

# Beyond the schemas: (type, actions, where AWS says so).
EXTRA: list[tuple[str, frozenset[str], str]] = [
    (
        "AWS::ApiGatewayV2::Stage",
        ACCESS_LOG_ACTIONS,
        "API Gateway developer guide, 'Configure logging for HTTP APIs': the caller's permissions for access logs",
    ),
    (
        "AWS::CloudFront::Distribution",
        frozenset({"wafv2:GetWebACL", "wafv2:AssociateWebACL"}),
        "AWS WAF developer guide, 'Permissions for AssociateWebACL': a distribution's WebACLId (EnableWaf)",
    ),
]


def allowed(statements: list[dict[str, Any]], action: str, arn: str | None = None) -> bool:
    """Whether an Allow statement names the action (IAM wildcards, actions case-insensitive) and,
    when arn is given, a resource matching it. Conditions are not evaluated."""
    for statement in statements:
        if statement["Effect"] != "Allow":
            continue
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        if not any(fnmatch.fnmatchcase(action.lower(), pattern.lower()) for pattern in actions):
            continue
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        if arn is None or any(fnmatch.fnmatchcase(arn, pattern) for pattern in resources):
            return True
    return False


def execution_role(env: str) -> list[dict[str, Any]]:
    roles = Template.load(REPO_ROOT / "infra" / "github-oidc.yaml", Env=env, **PSEUDO)
    return [
        roles.resolve(statement)
        for policy in roles.properties("CloudFormationExecutionRole")["Policies"]
        for statement in policy["PolicyDocument"]["Statement"]
    ]


def stack(env: str) -> Template:
    return Template.load(REPO_ROOT / "infra" / "template.yaml", Env=env, **PSEUDO)


def test_the_table_names_every_resource_type_the_stack_uses() -> None:
    used = {spec["Type"] for spec in stack("dev").resources.values()}
    assert used == set(REQUIRED), "a new resource type needs its create and delete actions in REQUIRED"


@pytest.mark.parametrize("resource_type", sorted(REQUIRED))
def test_the_tables_actions_come_from_the_resource_types_schema(resource_type: str) -> None:
    handlers = PROVIDER_SCHEMA_MANAGER.get_resource_schema(REGION, resource_type).schema["handlers"]
    documented = {
        permission.lower()
        for handler in ("create", "update", "delete", "read")
        for permission in handlers.get(handler, {}).get("permissions", [])
    }
    create, delete = REQUIRED[resource_type]
    assert {action.lower() for action in create | delete} <= documented


@pytest.mark.parametrize("resource_type", sorted(REQUIRED))
def test_the_execution_role_can_create_and_delete_each_resource_type(resource_type: str) -> None:
    granted = execution_role("dev")
    create, delete = REQUIRED[resource_type]
    extra = {action for kind, actions, _ in EXTRA if kind == resource_type for action in actions}
    missing = sorted(action for action in create | delete | extra if not allowed(granted, action))
    assert not missing, f"{resource_type}: the execution role lacks {missing}"


def named_resources(template: Template) -> list[tuple[str, str]]:
    """(action, ARN) for each resource the template names, as CloudFormation makes it."""
    arn = f"arn:aws:{{}}:{REGION}:{ACCOUNT}:{{}}"
    wanted: list[tuple[str, str]] = []
    for spec in template.resources.values():
        properties, kind = spec.get("Properties", {}), spec["Type"]

        def name(key: str, properties: dict[str, Any] = properties) -> str:
            return str(template.resolve(properties[key]))

        if kind == "AWS::IAM::Role":
            role = f"arn:aws:iam::{ACCOUNT}:role/{name('RoleName')}"
            wanted += [("iam:CreateRole", role), ("iam:PutRolePolicy", role), ("iam:DeleteRole", role)]
            wanted += [("iam:PassRole", role), ("iam:AttachRolePolicy", role)]
        elif kind == "AWS::Lambda::Function":
            function = arn.format("lambda", f"function:{name('FunctionName')}")
            wanted += [("lambda:CreateFunction", function), ("lambda:DeleteFunction", function)]
            wanted += [("lambda:PublishVersion", function), ("lambda:CreateAlias", function)]
            wanted += [("lambda:AddPermission", function), ("lambda:AddPermission", f"{function}:live")]
            wanted += [
                ("lambda:CreateFunctionUrlConfig", f"{function}:live"),
                ("lambda:DeleteFunction", f"{function}:3"),
            ]
            # Layers named by ARN (the Web Adapter's), not by Ref to the stack's own.
            public = [template.resolve(layer) for layer in properties["Layers"] if "Fn::Sub" in layer]
            wanted += [("lambda:GetLayerVersion", layer) for layer in public]
        elif kind == "AWS::Lambda::LayerVersion":
            layer = arn.format("lambda", f"layer:{name('LayerName')}")
            wanted += [("lambda:PublishLayerVersion", layer), ("lambda:DeleteLayerVersion", f"{layer}:1")]
        elif kind == "AWS::DynamoDB::Table":
            wanted.append(("dynamodb:CreateTable", arn.format("dynamodb", f"table/{name('TableName')}")))
        elif kind == "AWS::SQS::Queue":
            wanted.append(("sqs:CreateQueue", arn.format("sqs", name("QueueName"))))
        elif kind == "AWS::Logs::LogGroup":
            wanted.append(("logs:CreateLogGroup", arn.format("logs", f"log-group:{name('LogGroupName')}")))
        elif kind == "AWS::S3::Bucket":
            wanted.append(("s3:CreateBucket", f"arn:aws:s3:::{name('BucketName')}"))
        elif kind == "AWS::KMS::Alias":
            wanted.append(("kms:CreateAlias", arn.format("kms", name("AliasName"))))
        elif kind == "AWS::SNS::Topic":
            wanted.append(("sns:CreateTopic", arn.format("sns", name("TopicName"))))
        elif kind == "AWS::CloudWatch::Alarm":
            wanted.append(("cloudwatch:PutMetricAlarm", arn.format("cloudwatch", f"alarm:{name('AlarmName')}")))
        elif kind == "AWS::CloudWatch::Dashboard":
            wanted.append(
                ("cloudwatch:PutDashboard", f"arn:aws:cloudwatch::{ACCOUNT}:dashboard/{name('DashboardName')}")
            )
        elif kind == "AWS::Budgets::Budget":
            budget = template.resolve(properties["Budget"]["BudgetName"])
            wanted.append(("budgets:ModifyBudget", f"arn:aws:budgets::{ACCOUNT}:budget/{budget}"))
        elif kind == "AWS::WAFv2::WebACL":
            web_acl = arn.format("wafv2", f"global/webacl/{name('Name')}/0a1b2c3d")
            wanted += [("wafv2:CreateWebACL", web_acl), ("wafv2:AssociateWebACL", web_acl)]
    return wanted


def test_the_execution_role_reaches_every_name_the_template_gives_and_no_other_environments() -> None:
    granted = execution_role("dev")
    for action, arn in named_resources(stack("dev")):
        assert allowed(granted, action, arn), (action, arn)
    # Another environment's resources (even one whose name starts like this one's) are out of reach.
    for other in ("prod", "dev2"):
        for action, arn in named_resources(stack(other)):
            if "LambdaAdapterLayerArm64" in arn:
                continue  # the same public layer whatever the environment
            assert not allowed(granted, action, arn), (action, arn)


def managed_policies(template: Template) -> set[str]:
    """Every AWS managed policy any role of the template can have attached, on any branch of its
    conditions."""
    attached = set()
    for spec in template.of_type("AWS::IAM::Role").values():
        for entry in spec["Properties"].get("ManagedPolicyArns", []):
            branches = entry["Fn::If"][1:] if isinstance(entry, dict) and "Fn::If" in entry else [entry]
            attached |= {template.resolve(b) for b in branches if b != {"Ref": "AWS::NoValue"}}
    return attached


def test_function_roles_may_be_given_exactly_the_managed_policies_the_template_attaches() -> None:
    granted = execution_role("dev")
    attaching = [s for s in granted if {"iam:AttachRolePolicy", "iam:DetachRolePolicy"} & set(s["Action"])]
    assert len(attaching) == 1
    (statement,) = attaching
    assert sorted(statement["Action"]) == ["iam:AttachRolePolicy", "iam:DetachRolePolicy"]
    (condition,) = statement["Condition"].values()
    allowed_policies = condition["iam:PolicyARN"]
    assert list(statement["Condition"]) == ["ArnEquals"]
    assert set(allowed_policies if isinstance(allowed_policies, list) else [allowed_policies]) == managed_policies(
        stack("dev")
    )
    assert managed_policies(stack("dev")) == {"arn:aws:iam::aws:policy/AWSXRayDaemonWriteAccess"}
