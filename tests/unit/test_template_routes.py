from __future__ import annotations

import importlib

from pai_local.template import Template

API_ROUTES = {
    ("POST", "/chat"),
    ("POST", "/memory"),
    ("POST", "/search"),
    ("POST", "/account"),
    ("POST", "/documents"),
    ("GET", "/health"),
}


def test_template_routes_are_the_api_contract() -> None:
    routes = Template.load(Env="dev").routes()
    assert {(r.method, r.path) for r in routes} == API_ROUTES


def test_every_route_names_an_importable_handler() -> None:
    for route in Template.load(Env="dev").routes():
        module_name, function_name = route.handler.rsplit(".", 1)
        assert callable(getattr(importlib.import_module(module_name), function_name))


def test_functions_are_python_312_on_arm64_with_the_designs_sizes() -> None:
    template = Template.load(Env="dev")
    functions = {
        spec["Properties"]["Handler"]: spec["Properties"] for spec in template.of_type("AWS::Lambda::Function").values()
    }
    sizes = {handler: (props["MemorySize"], props["Timeout"]) for handler, props in functions.items()}
    assert sizes == {
        "handlers.chat.handler": (512, 30),
        "handlers.memory.handler": (1024, 60),
        "handlers.search.handler": (2048, 60),
        "handlers.authorizer.handler": (256, 10),
        # Parsing and embedding inside the request, within API Gateway's 30 s integration bound.
        "handlers.documents.handler": (3008, 29),
        "handlers.learning.handler": (1024, 60),
        # Large documents off the request path: Lambda's longest timeout, the documents function's memory.
        "handlers.document_ingest.handler": (3008, 900),
        # The streamed chat (the Web Adapter's entry point): the chat function's memory, no 30 s bound.
        "run.sh": (512, 60),
    }
    assert all(p["Runtime"] == "python3.12" and p["Architectures"] == ["arm64"] for p in functions.values())


def test_names_follow_the_environment() -> None:
    template = Template.load(Env="prod")
    template.parameters["AWS::AccountId"] = "111122223333"
    names = {
        template.resolve(spec["Properties"]["TableName"]) for spec in template.of_type("AWS::DynamoDB::Table").values()
    }
    assert {"pai-conversations-prod", "pai-knowledge-prod", "pai-keystore-prod"} <= names
    assert all(name.startswith("pai-") and name.endswith("-prod") for name in names)
    buckets = {
        name: template.resolve(spec["Properties"]["BucketName"])
        for name, spec in template.of_type("AWS::S3::Bucket").items()
    }
    assert buckets == {
        "KnowledgeBaseBucket": "pai-knowledge-base-111122223333-prod",
        "WebBucket": "pai-web-111122223333-prod",
    }


def test_roles_are_least_privilege() -> None:
    template = Template.load(Env="dev")

    def granted(statement: dict) -> list[dict]:
        # A conditional statement ({"Fn::If": [condition, statement, AWS::NoValue]}) counts as granted.
        if "Fn::If" in statement:
            return [branch for branch in statement["Fn::If"][1:] if isinstance(branch, dict) and "Effect" in branch]
        return [statement]

    statements = {
        name: [
            g
            for policy in spec["Properties"]["Policies"]
            for s in policy["PolicyDocument"]["Statement"]
            for g in granted(s)
        ]
        for name, spec in template.of_type("AWS::IAM::Role").items()
    }
    assert set(statements) == {
        "ChatFunctionRole",
        "MemoryFunctionRole",
        "SearchFunctionRole",
        "AuthorizerFunctionRole",
        "DocumentsFunctionRole",
        "LearningFunctionRole",
        "DocumentIngestFunctionRole",
        "ChatStreamFunctionRole",
    }
    for role, granted in statements.items():
        for statement in granted:
            assert statement["Resource"] != "*", role
            assert all("*" not in action for action in statement["Action"]), role
    actions = {role: {a for s in granted for a in s["Action"]} for role, granted in statements.items()}
    assert "bedrock:InvokeModel" in actions["ChatFunctionRole"]
    assert not any(
        a.startswith("bedrock:")
        for a in actions["MemoryFunctionRole"]
        | actions["SearchFunctionRole"]
        | actions["DocumentsFunctionRole"]
        | actions["DocumentIngestFunctionRole"]
    )
    # KMS only ever wraps and unwraps users' branch keys (our encryption context says so), or serves
    # the bucket's own SSE-KMS through S3: no function can use the key for anything else.
    for role, granted_statements in statements.items():
        for statement in granted_statements:
            if any(action.startswith("kms:") for action in statement["Action"]):
                condition = statement["Condition"]["StringEquals"]
                assert condition.get("kms:EncryptionContext:purpose") == "pai-branch-key" or (
                    condition.get("kms:EncryptionContext:aws:s3:arn") == {"Fn::GetAtt": ["KnowledgeBaseBucket", "Arn"]}
                    and "kms:ViaService" in condition
                ), role
    # Each function reaches only its own prefixes of the bucket: index snapshots (search, chat; memory
    # to forget them; learning, whose search keeps its own) and documents (the documents function; memory
    # to export and forget them).
    prefixes = {
        "SearchFunctionRole": {"index"},
        "ChatFunctionRole": {"index"},
        "ChatStreamFunctionRole": {"index"},
        "MemoryFunctionRole": {"index", "documents"},
        "DocumentsFunctionRole": {"documents"},
        "AuthorizerFunctionRole": set(),
        "LearningFunctionRole": {"index"},
        "DocumentIngestFunctionRole": {"documents"},
    }
    for role, allowed in prefixes.items():
        reached = set()
        for statement in statements[role]:
            if statement["Action"] == ["s3:ListBucketVersions"]:
                (prefix,) = statement["Condition"]["StringLike"].values()
                reached.add(prefix.removesuffix("/*"))
            elif any(action.startswith("s3:") for action in statement["Action"]):
                resource = statement["Resource"]["Fn::Sub"]
                assert resource.startswith("${KnowledgeBaseBucket.Arn}/") and resource.endswith("/*"), role
                reached.add(resource.removeprefix("${KnowledgeBaseBucket.Arn}/").removesuffix("/*"))
        assert reached == allowed, role
    # Only the documents and ingest functions write objects under documents/, and search never deletes anything there.
    for role, granted_statements in statements.items():
        for statement in granted_statements:
            if "s3:PutObject" in statement["Action"] and "documents" in str(statement["Resource"]):
                assert role in ("DocumentsFunctionRole", "DocumentIngestFunctionRole")
    # The ingest function deletes no item (passages go by BatchWriteItem), makes no branch key, reads
    # only its own queue; only the documents function sends to that queue.
    assert "dynamodb:DeleteItem" not in actions["DocumentIngestFunctionRole"]
    assert "kms:GenerateDataKey" not in {
        a for s in statements["DocumentIngestFunctionRole"] if "kms:ViaService" not in str(s) for a in s["Action"]
    }
    for role, granted_statements in statements.items():
        for statement in granted_statements:
            if statement["Resource"] == {"Fn::GetAtt": ["DocumentsQueue", "Arn"]}:
                expected = ["sqs:SendMessage"] if role == "DocumentsFunctionRole" else None
                assert role in ("DocumentsFunctionRole", "DocumentIngestFunctionRole"), role
                if expected is not None:
                    assert statement["Action"] == expected
                else:
                    assert "sqs:SendMessage" not in statement["Action"]
    # Search writes nothing but a user's first branch key and their request count (and its snapshots, above).
    for statement in statements["SearchFunctionRole"]:
        if {"dynamodb:PutItem", "dynamodb:UpdateItem"} & set(statement["Action"]):
            assert statement["Resource"] in (
                {"Fn::GetAtt": ["KeystoreTable", "Arn"]},
                {"Fn::GetAtt": ["UsageTable", "Arn"]},
            )
    assert "dynamodb:DeleteItem" in actions["MemoryFunctionRole"]
    assert "dynamodb:DeleteItem" not in actions["SearchFunctionRole"]
    # Chat deletes nothing but the Idempotency-Key mark of a request that failed, and the learned
    # memory a "forget that ..." names.
    for statement in statements["ChatFunctionRole"]:
        if "dynamodb:DeleteItem" in statement["Action"]:
            assert statement["Resource"] in (
                {"Fn::GetAtt": ["IdempotencyTable", "Arn"]},
                {"Fn::GetAtt": ["KnowledgeTable", "Arn"]},
            )
    # Only the functions that store something reach the idempotency records.
    for role, granted_statements in statements.items():
        reaches = any(s["Resource"] == {"Fn::GetAtt": ["IdempotencyTable", "Arn"]} for s in granted_statements)
        storing = {"ChatFunctionRole", "ChatStreamFunctionRole", "MemoryFunctionRole", "DocumentsFunctionRole"}
        assert reaches == (role in storing), role
    (bedrock,) = [s for s in statements["ChatFunctionRole"] if "bedrock:InvokeModel" in s["Action"]]
    assert bedrock["Action"] == ["bedrock:InvokeModel", "bedrock:InvokeModelWithResponseStream"]  # streamed chat
    assert bedrock["Resource"]["Fn::Sub"].endswith("foundation-model/${BedrockModelId}")
    (secret,) = [s for s in statements["ChatFunctionRole"] if s["Action"] == ["secretsmanager:GetSecretValue"]]
    assert secret["Resource"] == {"Ref": "OpenAiApiKeySecretArn"}  # that one secret, and only when named
