"""Each function's IAM permissions are exactly the AWS calls its code makes: every call allowed, no
action granted that no call needs.

The calls are read from the source, not listed by hand: the boto3 operations each adapter method
makes (`client.get_item(`, `get_paginator("query")`, the parts of a `transact_write_items`, and
Powertools' idempotency layer's own calls), each followed through the methods and helpers it calls.
What is declared here is which adapter methods each function reaches, and which table, object
prefix, queue or key context each adapter works on; the declaration is checked against the handler
(the container parts it uses) and the composition root (what those parts build, and from which
setting).
"""

from __future__ import annotations

import ast
import inspect
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from aws_lambda_powertools.utilities.idempotency.persistence import dynamodb as powertools_dynamodb
from botocore import xform_name
from botocore.session import get_session

from pai_local.template import Template

ROOT = Path(__file__).resolve().parents[2]
ADAPTERS = ROOT / "pai_core" / "adapters"
TEMPLATE = Template.load(Env="dev")

Grant = tuple[str, str]  # (IAM action, resource as named below)

# -- what each adapter works on -----------------------------------------------------------------
# Resource names: a logical id (a table, a queue), "<table>/index/<name>", "<bucket>/<prefix>*" for
# objects, "<bucket>?prefix=<prefix>*" for listing, "PaiKey:branch" (the branch-key encryption
# context), "PaiKey:s3" (the bucket's SSE-KMS), "BedrockModel", "OpenAiSecret".
BUCKET = "KnowledgeBaseBucket"
ADAPTER_RESOURCES: dict[str, list[str]] = {
    "DynamoApiKeyStore": ["ApiKeysTable"],
    "DynamoUsageCounters": ["UsageTable"],
    "DynamoConversationRepository": ["ConversationsTable"],
    "DynamoMemoryRepository": ["KnowledgeTable"],
    "DynamoDocumentRepository": ["KnowledgeTable"],
    "DynamoChangeLog": ["KnowledgeTable"],
    "DynamoBranchKeyStore": ["KeystoreTable"],
    "DynamoStorageProbe": ["KnowledgeTable", "ConversationsTable"],
    "DynamoDBPersistenceLayer": ["IdempotencyTable"],
    "KmsKeyService": ["PaiKey:branch"],
    "S3SnapshotStore": [f"{BUCKET}/index/*"],
    "S3DocumentStore": [f"{BUCKET}/documents/*"],
    "SqsLearningQueue": ["LearningQueue"],
    "SqsIngestQueue": ["DocumentsQueue"],
    "BedrockChatModel": ["BedrockModel"],
}
# The setting each adapter is built from in pai_core/bootstrap.py (checked below).
ADAPTER_SETTINGS: dict[str, set[str]] = {
    "DynamoApiKeyStore": {"api_keys_table"},
    "DynamoUsageCounters": {"usage_table"},
    "DynamoConversationRepository": {"conversations_table"},
    "DynamoMemoryRepository": {"knowledge_table"},
    "DynamoDocumentRepository": {"knowledge_table"},
    "DynamoChangeLog": {"knowledge_table"},
    "DynamoBranchKeyStore": {"keystore_table"},
    "DynamoStorageProbe": {"knowledge_table", "conversations_table"},
    "DynamoDBPersistenceLayer": {"idempotency_table"},
    "KmsKeyService": {"kms_key_id"},
    "S3SnapshotStore": {"knowledge_bucket"},
    "S3DocumentStore": {"knowledge_bucket"},
    "SqsLearningQueue": {"learning_queue_url"},
    "SqsIngestQueue": {"documents_queue_url"},
    "BedrockChatModel": {"bedrock_model_id"},
}
# Adapters that call another adapter they were given (bootstrap passes `changes=self.change_log`).
DELEGATES: dict[tuple[str, str], str] = {
    ("DynamoMemoryRepository", "_changes"): "DynamoChangeLog",
    ("DynamoDocumentRepository", "_changes"): "DynamoChangeLog",
}
# S3 objects live under a prefix per adapter; the bucket's SSE-KMS (with a bucket key) makes every
# object read a kms:Decrypt and every write a kms:GenerateDataKey, through S3.
S3_PREFIXES = {"S3SnapshotStore": "index/", "S3DocumentStore": "documents/"}

# -- which adapter methods each function reaches ------------------------------------------------
_KEYS_READ = {"DynamoBranchKeyStore": ["active", "get"], "KmsKeyService": ["decrypt_data_key"]}
_KEYS_MADE = {
    "DynamoBranchKeyStore": ["active", "get", "first_version", "activate"],
    "KmsKeyService": ["decrypt_data_key", "generate_data_key"],
}
_IDEMPOTENCY = {"DynamoDBPersistenceLayer": ["_get_record", "_put_record", "_update_record", "_delete_record"]}
_INDEX_READS = {  # LiveMemoryIndex: the change feed, reloads by owner and by id, snapshots
    "DynamoChangeLog": ["change_stamp", "changes_after"],
    "DynamoMemoryRepository": ["all_items", "items_by_id"],
    "DynamoDocumentRepository": ["all_items", "items_by_id"],
    "S3SnapshotStore": ["load", "save"],
}
_RETRIEVAL = {  # RetrievalService: the hits, by id
    "DynamoMemoryRepository": ["get_many"],
    "DynamoDocumentRepository": ["documents_by_id", "passages_by_id"],
}
_LEARNING = {  # LearningService: similar memories, then remember / update / forget one
    "DynamoMemoryRepository": ["add", "get", "get_many", "update", "delete"],
    "DynamoChangeLog": ["record"],
    "DynamoUsageCounters": ["add", "get"],  # its per-turn markers and the token budget
}
_CHAT_MODEL = {"BedrockChatModel": ["complete", "stream"], "secrets": ["get_secret_value"]}
_EXTRACTION_MODEL = {"BedrockChatModel": ["complete_structured"], "secrets": ["get_secret_value"]}


def _merge(*parts: dict[str, list[str]]) -> dict[str, list[str]]:
    merged: dict[str, list[str]] = {}
    for part in parts:
        for name, methods in part.items():
            merged.setdefault(name, [])
            merged[name] += [m for m in methods if m not in merged[name]]
    return merged


@dataclass(frozen=True)
class FunctionUse:
    role: str
    container_parts: frozenset[str]  # what the handler takes from get_container()
    methods: dict[str, list[str]]


FUNCTIONS: dict[str, FunctionUse] = {
    "handlers.authorizer.handler": FunctionUse(
        "AuthorizerFunctionRole", frozenset({"api_keys"}), {"DynamoApiKeyStore": ["get"]}
    ),
    "handlers.chat.handler": FunctionUse(
        "ChatFunctionRole",
        frozenset({"chat", "limits", "idempotency"}),
        _merge(
            {"DynamoUsageCounters": ["add", "get"], "DynamoConversationRepository": ["append", "recent"]},
            {"SqsLearningQueue": ["send"]},
            _IDEMPOTENCY,
            _KEYS_MADE,
            _INDEX_READS,
            _RETRIEVAL,
            _LEARNING,
            _CHAT_MODEL,
            _EXTRACTION_MODEL,
        ),
    ),
    "handlers.memory.handler": FunctionUse(
        "MemoryFunctionRole",
        frozenset({"memories", "account", "storage_probe", "limits", "idempotency"}),
        _merge(
            {"DynamoUsageCounters": ["add"], "DynamoStorageProbe": ["check"]},
            _IDEMPOTENCY,
            _KEYS_MADE,
            {
                "DynamoMemoryRepository": ["add", "add_many", "update", "delete", "get", "history", "page", "purge"],
                "DynamoChangeLog": ["record", "move_generation", "purge"],
                # Forgetting a user: keys destroyed, API keys revoked, conversations, documents and
                # snapshots deleted; an export reads the turns, the documents and their texts.
                "DynamoBranchKeyStore": ["destroy"],
                "DynamoApiKeyStore": ["for_user", "revoke"],
                "DynamoConversationRepository": ["all_turns", "purge"],
                "DynamoDocumentRepository": ["page", "purge"],
                "S3DocumentStore": ["get", "purge"],
                "S3SnapshotStore": ["purge"],
            },
        ),
    ),
    "handlers.search.handler": FunctionUse(
        "SearchFunctionRole",
        frozenset({"limits", "retrieval"}),
        _merge({"DynamoUsageCounters": ["add"]}, _KEYS_READ, _INDEX_READS, _RETRIEVAL),
    ),
    "handlers.documents.handler": FunctionUse(
        "DocumentsFunctionRole",
        frozenset({"documents", "limits", "idempotency"}),
        _merge(
            {"DynamoUsageCounters": ["add"], "SqsIngestQueue": ["send"]},
            _IDEMPOTENCY,
            _KEYS_MADE,
            {
                "DynamoDocumentRepository": [
                    "add",
                    "add_processing",
                    "by_fingerprint",
                    "delete",
                    "get",
                    "page",
                    "totals",
                ],
                "DynamoChangeLog": ["record"],
                # An upload stores the original and its text; a delete (or an upload that fails)
                # removes every version. The texts are read back only by an export and the ingestion.
                "S3DocumentStore": ["put", "delete"],
            },
        ),
    ),
    "handlers.document_ingest.handler": FunctionUse(
        "DocumentIngestFunctionRole",
        frozenset({"documents", "settings", "metrics"}),
        _merge(
            _KEYS_READ,
            {
                "DynamoDocumentRepository": [
                    "get",
                    "announce",
                    "put_passages",
                    "mark_ready",
                    "mark_failed",
                    "remove_passages",
                ],
                "DynamoChangeLog": ["record"],
                "S3DocumentStore": ["get", "put", "delete"],
            },
        ),
    ),
    "handlers.learning.handler": FunctionUse(
        "LearningFunctionRole",
        frozenset({"learning", "metrics"}),
        _merge(
            {"DynamoConversationRepository": ["recent"]},
            _KEYS_MADE,
            _INDEX_READS,
            _RETRIEVAL,
            _LEARNING,
            _EXTRACTION_MODEL,
        ),
    ),
}

# The streamed chat's function runs run.sh: the Web Adapter proxies to handlers/chat_stream_server.py,
# which checks the key with the authorizer's code and answers with the chat handler's.
STREAM_SERVER_HANDLERS = ("handlers.chat.handler", "handlers.authorizer.handler")
FUNCTIONS["run.sh"] = FunctionUse(
    "ChatStreamFunctionRole",
    frozenset().union(*(FUNCTIONS[h].container_parts for h in STREAM_SERVER_HANDLERS)),
    _merge(*(FUNCTIONS[h].methods for h in STREAM_SERVER_HANDLERS)),
)

# Calls made outside the adapters: what the event source mappings do with the role of the function
# they deliver to. A permission some other code needs (a tracer's X-Ray calls, on "*") is declared
# here, with the call that needs it; otherwise it is a grant no call needs.
EXTRA_GRANTS: dict[str, set[Grant]] = {
    "handlers.document_ingest.handler": {
        (f"sqs:{a}", "DocumentsQueue")
        for a in ("ReceiveMessage", "DeleteMessage", "GetQueueAttributes", "ChangeMessageVisibility")
    },
    "handlers.learning.handler": {
        (f"sqs:{a}", "LearningQueue")
        for a in ("ReceiveMessage", "DeleteMessage", "GetQueueAttributes", "ChangeMessageVisibility")
    },
}


# -- reading the code -------------------------------------------------------------------------------
_SERVICES = {"dynamodb": "dynamodb", "s3": "s3", "kms": "kms", "sqs": "sqs", "bedrock-runtime": "bedrock"}
_BEDROCK_ACTIONS = {"converse": "InvokeModel", "converse_stream": "InvokeModelWithResponseStream"}
_TRANSACTION_PARTS = {
    "Put": "PutItem",
    "Update": "UpdateItem",
    "Delete": "DeleteItem",
    "ConditionCheck": "ConditionCheckItem",
}
_CLIENT_RECEIVERS = {"self._client", "client", "self.client"}


@cache
def _operations() -> dict[str, tuple[str, str]]:
    """boto3 method name -> (IAM service prefix, operation), for the services PAI calls."""
    session = get_session()
    found: dict[str, tuple[str, str]] = {}
    for service, prefix in _SERVICES.items():
        for operation in session.get_service_model(service).operation_names:
            found.setdefault(xform_name(operation), (prefix, operation))
    return found


@dataclass(frozen=True)
class Call:
    method: str  # boto3 method name
    index: str | None  # the GSI a query names
    both: bool  # the index is named conditionally: the table too
    parts: frozenset[str]  # the kinds of writes in a transaction


@dataclass
class Body:
    calls: list[Call]
    own: set[str]  # self.method(...) calls
    helpers: set[str]  # module-level functions called
    delegated: set[tuple[str, str]]  # self._attr.method(...)
    index: str | None = None  # the GSI this body's queries (its own, or a helper's it calls) name
    both: bool = False


def _index_name(node: ast.AST, constants: dict[str, str]) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        return constants.get(node.id)
    return None


def _read_body(function: ast.FunctionDef, constants: dict[str, str]) -> Body:
    body = Body([], set(), set(), set())
    index, conditional = None, False
    parts: set[str] = set()
    for node in ast.walk(function):
        if isinstance(node, ast.keyword) and node.arg == "IndexName":
            index = _index_name(node.value, constants)
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(key, ast.Constant) and key.value == "IndexName":
                    index = _index_name(value, constants)
                if isinstance(key, ast.Constant) and key.value in _TRANSACTION_PARTS:
                    parts.add(_TRANSACTION_PARTS[key.value])
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Subscript):
            target = node.targets[0]
            if isinstance(target.slice, ast.Constant) and target.slice.value == "IndexName":
                index, conditional = _index_name(node.value, constants), True
    body.index, body.both = index, conditional
    for node in ast.walk(function):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                body.helpers.add(node.func.id)
            continue
        receiver, name = ast.unparse(node.func.value), node.func.attr
        if receiver in _CLIENT_RECEIVERS and name == "get_paginator":
            (operation,) = [a.value for a in node.args if isinstance(a, ast.Constant)]
            body.calls.append(Call(operation, index, conditional, frozenset()))
        elif receiver in _CLIENT_RECEIVERS and name in _operations():
            body.calls.append(Call(name, index, conditional, frozenset(parts)))
        elif receiver == "self":
            body.own.add(name)
        elif receiver.startswith("self._"):
            body.delegated.add((receiver.removeprefix("self."), name))
    return body


@cache
def _module_bodies(path: Path) -> tuple[dict[str, dict[str, Body]], dict[str, Body]]:
    """Per class, per method, and per module-level function: what each body calls."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    constants = {
        target.id: node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    classes: dict[str, dict[str, Body]] = {}
    functions: dict[str, Body] = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            classes[node.name] = {
                item.name: _read_body(item, constants) for item in node.body if isinstance(item, ast.FunctionDef)
            }
        elif isinstance(node, ast.FunctionDef):
            functions[node.name] = _read_body(node, constants)
    return classes, functions


@cache
def _code() -> tuple[dict[str, dict[str, Body]], dict[str, Body]]:
    classes: dict[str, dict[str, Body]] = {}
    helpers: dict[str, Body] = {}
    for path in [*sorted(ADAPTERS.glob("*.py")), Path(inspect.getfile(powertools_dynamodb))]:
        found_classes, found_functions = _module_bodies(path)
        classes.update(found_classes)
        helpers.update(found_functions)
    return classes, helpers


def _grants_of(call: Call, adapter: str) -> Iterator[Grant]:
    prefix, operation = _operations()[call.method]
    for resource in ADAPTER_RESOURCES[adapter]:
        if prefix == "dynamodb":
            if call.method == "transact_write_items":
                yield from ((f"dynamodb:{part}", resource) for part in call.parts)
                continue
            if call.index is not None and call.method in {"query", "scan"}:
                yield f"dynamodb:{operation}", f"{resource}/index/{call.index}"
                if not call.both:
                    continue
            yield f"dynamodb:{operation}", resource
        elif prefix == "s3":
            objects, listing = resource, f"{BUCKET}?prefix={S3_PREFIXES[adapter]}*"
            match call.method:
                case "get_object":
                    yield from (("s3:GetObject", objects), ("kms:Decrypt", "PaiKey:s3"))
                case "put_object":
                    yield from (("s3:PutObject", objects), ("kms:GenerateDataKey", "PaiKey:s3"))
                case "list_object_versions":
                    yield "s3:ListBucketVersions", listing
                case "delete_objects":  # each entry names a version
                    yield from (("s3:DeleteObject", objects), ("s3:DeleteObjectVersion", objects))
                case other:
                    raise AssertionError(f"no IAM mapping for s3.{other}")
        elif prefix == "bedrock":
            yield f"bedrock:{_BEDROCK_ACTIONS[call.method]}", resource
        else:
            yield f"{prefix}:{operation}", resource


def _method_grants(adapter: str, method: str, seen: set[tuple[str, str]] | None = None) -> set[Grant]:
    classes, helpers = _code()
    seen = set() if seen is None else seen
    if (adapter, method) in seen:
        return set()
    seen.add((adapter, method))
    body = classes[adapter][method]
    grants = {grant for call in body.calls for grant in _grants_of(call, adapter)}
    for own in body.own & set(classes[adapter]):
        grants |= _method_grants(adapter, own, seen)
    pending, visited = [h for h in body.helpers if h in helpers], set()
    while pending:
        name = pending.pop()
        if name in visited:
            continue
        visited.add(name)
        # A helper (query_items) runs the query its caller built, index included.
        calls = [c if c.index else Call(c.method, body.index, body.both, c.parts) for c in helpers[name].calls]
        grants |= {grant for call in calls for grant in _grants_of(call, adapter)}
        pending += [h for h in helpers[name].helpers if h in helpers]
    for attribute, called in body.delegated:
        target = DELEGATES.get((adapter, attribute))
        if target is not None and called in classes[target]:
            grants |= _method_grants(target, called, seen)
    return grants


def needed_grants(handler: str) -> set[Grant]:
    grants = set(EXTRA_GRANTS.get(handler, set()))
    for adapter, methods in FUNCTIONS[handler].methods.items():
        for method in methods:
            if adapter == "secrets":
                grants.add(("secretsmanager:GetSecretValue", "OpenAiSecret"))
            else:
                grants |= _method_grants(adapter, method)
    return grants


# -- reading the template -------------------------------------------------------------------------
_GETATT_SUB = re.compile(r"^\$\{(\w+)\.Arn\}(.*)$")


def _statements(role: str) -> Iterator[dict[str, Any]]:
    for policy in TEMPLATE.properties(role).get("Policies", []):
        for statement in policy["PolicyDocument"]["Statement"]:
            if "Fn::If" in statement:
                yield from (b for b in statement["Fn::If"][1:] if isinstance(b, dict) and "Effect" in b)
            else:
                yield statement


def _resource_name(resource: Any, statement: dict[str, Any]) -> str:
    condition = statement.get("Condition", {})
    if resource == {"Fn::GetAtt": ["PaiKey", "Arn"]}:
        equals = condition.get("StringEquals", {})
        if "kms:EncryptionContext:purpose" in equals:
            return "PaiKey:branch"
        if "kms:ViaService" in equals:
            return "PaiKey:s3"
        raise AssertionError(f"a grant on the key without a context condition: {statement}")
    if isinstance(resource, dict) and "Fn::GetAtt" in resource:
        name: str = resource["Fn::GetAtt"][0]
        prefix = condition.get("StringLike", {}).get("s3:prefix")
        return f"{name}?prefix={prefix}" if prefix else name
    if isinstance(resource, dict) and "Fn::Sub" in resource:
        text = resource["Fn::Sub"]
        if ":foundation-model/${BedrockModelId}" in text:
            return "BedrockModel"
        match = _GETATT_SUB.match(text)
        assert match, text
        return match.group(1) + match.group(2)
    if resource == {"Ref": "OpenAiApiKeySecretArn"}:
        return "OpenAiSecret"
    if resource == "*":  # e.g. X-Ray's PutTraceSegments: declare the call in EXTRA_GRANTS
        return "*"
    raise AssertionError(f"unrecognized resource {resource!r}")


def granted(role: str) -> set[Grant]:
    """Every (action, resource) the role's policies allow, logs aside (tested on their own)."""
    found: set[Grant] = set()
    for statement in _statements(role):
        assert statement["Effect"] == "Allow"
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        for action in statement["Action"]:
            if action.startswith("logs:"):
                continue
            found |= {(action, _resource_name(r, statement)) for r in resources}
    return found


def _handler_of(role: str) -> str:
    (function,) = [
        spec["Properties"]["Handler"]
        for spec in TEMPLATE.of_type("AWS::Lambda::Function").values()
        if spec["Properties"]["Role"] == {"Fn::GetAtt": [role, "Arn"]}
    ]
    return str(function)


# -- the tests ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("handler", sorted(FUNCTIONS))
def test_every_call_is_allowed_and_every_grant_is_used(handler: str) -> None:
    use = FUNCTIONS[handler]
    assert _handler_of(use.role) == handler
    needed, allowed = needed_grants(handler), granted(use.role)
    assert sorted(needed - allowed) == [], "calls the role does not allow"
    assert sorted(allowed - needed) == [], "grants no call needs"


def test_every_function_in_the_template_is_declared() -> None:
    handlers = {spec["Properties"]["Handler"] for spec in TEMPLATE.of_type("AWS::Lambda::Function").values()}
    assert handlers == set(FUNCTIONS)


def _container_parts(handler: str) -> set[str]:
    """The container attributes a handler module (and the _http helpers it calls) reads."""
    if handler == "run.sh":
        return set().union(*(_container_parts(served) for served in STREAM_SERVER_HANDLERS))
    module = handler.rsplit(".", 1)[0]
    sources = [ROOT / (module.replace(".", "/") + ".py")]
    tree = ast.parse(sources[0].read_text(encoding="utf-8"))
    helpers = {"request_owner": "limits", "idempotent": "idempotency"}
    names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    parts = {helpers[name] for name in names & set(helpers)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            receiver = ast.unparse(node.value)
            if receiver in {"get_container()", "container"}:
                parts.add(node.attr)
    return parts


@pytest.mark.parametrize("handler", sorted(FUNCTIONS))
def test_the_declared_container_parts_are_the_ones_the_handler_reads(handler: str) -> None:
    assert _container_parts(handler) == set(FUNCTIONS[handler].container_parts)


@cache
def _bootstrap() -> tuple[dict[str, set[str]], dict[str, set[str]], dict[str, set[str]]]:
    """From pai_core/bootstrap.py's Container: per property, the properties it reads, the adapter
    classes it builds, and the settings those are built from."""
    tree = ast.parse((ROOT / "pai_core" / "bootstrap.py").read_text(encoding="utf-8"))
    (container,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Container"]
    reads: dict[str, set[str]] = {}
    builds: dict[str, set[str]] = {}
    settings: dict[str, set[str]] = {}
    for item in container.body:
        if not isinstance(item, ast.FunctionDef):
            continue
        reads[item.name] = {
            n.attr for n in ast.walk(item) if isinstance(n, ast.Attribute) and ast.unparse(n.value) == "self"
        }
        builds[item.name] = set()
        for call in (n for n in ast.walk(item) if isinstance(n, ast.Call)):
            name = call.func.id if isinstance(call.func, ast.Name) else None
            if name in ADAPTER_SETTINGS:
                builds[item.name].add(name)
                used = {
                    n.attr
                    for n in ast.walk(call)
                    if isinstance(n, ast.Attribute) and ast.unparse(n.value) == "self.settings"
                }
                settings.setdefault(name, set()).update(used)
    return reads, builds, settings


def _reachable_adapters(parts: Iterable[str]) -> set[str]:
    reads, builds, _ = _bootstrap()
    pending, seen = list(parts), set()
    while pending:
        part = pending.pop()
        if part in seen or part not in reads:
            continue
        seen.add(part)
        pending += list(reads[part])
    return {adapter for part in seen for adapter in builds[part]}


@pytest.mark.parametrize("handler", sorted(FUNCTIONS))
def test_the_declared_adapters_are_built_for_the_parts_the_handler_reads(handler: str) -> None:
    """Each adapter declared for a function is one the container builds for it. (The reverse does
    not hold: the chat model's settings reach the chat function's container through `chat` whatever
    the provider, and a part built lazily, like the search index for a memory write, is reachable
    without being used.)"""
    declared = {a for a in FUNCTIONS[handler].methods if a != "secrets"}
    assert declared <= _reachable_adapters(FUNCTIONS[handler].container_parts)


def test_each_adapter_is_built_from_the_setting_its_resource_is_named_by() -> None:
    _, _, settings = _bootstrap()
    for adapter, expected in ADAPTER_SETTINGS.items():
        if adapter == "DynamoDBPersistenceLayer":
            continue  # built by keyword (table_name=...), checked just below
        assert expected <= settings.get(adapter, set()), adapter
    assert "DynamoDBPersistenceLayer(table_name=self.settings.idempotency_table" in (
        ROOT / "pai_core" / "bootstrap.py"
    ).read_text(encoding="utf-8")


def test_declared_methods_exist_and_read_what_the_scan_expects() -> None:
    classes, _ = _code()
    for use in FUNCTIONS.values():
        for adapter, methods in use.methods.items():
            if adapter != "secrets":
                assert set(methods) <= set(classes[adapter]), adapter
    # The scan itself: a keystore's first key is a transaction of two puts and a condition check.
    assert _method_grants("DynamoBranchKeyStore", "activate") == {
        ("dynamodb:PutItem", "KeystoreTable"),
        ("dynamodb:ConditionCheckItem", "KeystoreTable"),
    }
    assert ("dynamodb:Query", "ApiKeysTable/index/user-index") in _method_grants("DynamoApiKeyStore", "for_user")
    assert _method_grants("DynamoMemoryRepository", "page") >= {
        ("dynamodb:Query", "KnowledgeTable"),
        ("dynamodb:Query", "KnowledgeTable/index/category-index"),
    }
    assert ("bedrock:InvokeModelWithResponseStream", "BedrockModel") in _method_grants("BedrockChatModel", "stream")


def _role_for(function: dict[str, Any]) -> str:
    role: str = function["Properties"]["Role"]["Fn::GetAtt"][0]
    return role


def test_each_function_logs_to_its_own_log_group_only() -> None:
    for name, function in TEMPLATE.of_type("AWS::Lambda::Function").items():
        role = TEMPLATE.properties(_role_for(function))
        # No AWSLambdaBasicExecutionRole (logs:CreateLogGroup on *); only X-Ray's, with EnableTracing.
        assert role.get("ManagedPolicyArns") == [
            {
                "Fn::If": [
                    "TracingEnabled",
                    {"Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/AWSXRayDaemonWriteAccess"},
                    {"Ref": "AWS::NoValue"},
                ]
            }
        ], name
        group = function["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
        logs = [s for s in _statements(_role_for(function)) if any(a.startswith("logs:") for a in s["Action"])]
        assert logs == [
            {
                "Effect": "Allow",
                "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                "Resource": {"Fn::GetAtt": [group, "Arn"]},
            }
        ], name


def _key_statements() -> list[dict[str, Any]]:
    found = []
    for statement in TEMPLATE.properties("PaiKey")["KeyPolicy"]["Statement"]:
        if "Fn::If" in statement:
            found += [b for b in statement["Fn::If"][1:] if isinstance(b, dict) and "Effect" in b]
        else:
            found.append(statement)
    return found


_USING = {
    "kms:Encrypt",
    "kms:Decrypt",
    "kms:ReEncrypt*",
    "kms:GenerateDataKey",
    "kms:GenerateDataKey*",
    "kms:CreateGrant",
}


def test_the_account_administers_the_key_but_cannot_use_it() -> None:
    (admin,) = [s for s in _key_statements() if s["Sid"] == "AccountAdministersWithoutUsing"]
    assert admin["Principal"] == {"AWS": {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"}}
    actions = set(admin["Action"])
    assert not any(a == "kms:*" or a.startswith(("kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt")) for a in actions)
    assert not actions & _USING
    # Still manageable: its policy can be changed, and it can be rotated, disabled and deleted.
    assert {"kms:PutKeyPolicy", "kms:EnableKeyRotation", "kms:DisableKey", "kms:ScheduleKeyDeletion"} <= actions
    for statement in _key_statements():
        principal = statement["Principal"]
        if set(_as_list(statement["Action"])) & _USING:
            # Every statement that lets someone use the key says who, and under which context or service.
            assert principal != {"AWS": {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"}}
            assert "Condition" in statement or principal == {"AWS": {"Ref": "KeyOperatorArn"}}, statement["Sid"]


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _role_arn(role: str) -> str:
    name = TEMPLATE.properties(role)["RoleName"]["Fn::Sub"]
    return f"arn:${{AWS::Partition}}:iam::${{AWS::AccountId}}:role/{name}"


def test_the_key_policy_lets_each_role_do_exactly_what_its_own_policy_grants() -> None:
    """The key policy and the roles' policies say the same thing: the key policy alone would be
    enough for a principal it names, so it must not name one for more than its role needs."""
    by_key: set[tuple[str, str, str]] = set()
    for statement in _key_statements():
        arns = statement.get("Condition", {}).get("ArnEquals", {}).get("aws:PrincipalArn")
        if arns is None:
            continue
        equals = statement["Condition"]["StringEquals"]
        context = "PaiKey:branch" if "kms:EncryptionContext:purpose" in equals else "PaiKey:s3"
        if context == "PaiKey:branch":
            assert equals["kms:EncryptionContext:keystore"] == {"Fn::Sub": "pai-keystore-${Env}"}
        else:
            bucket = TEMPLATE.properties("KnowledgeBaseBucket")["BucketName"]["Fn::Sub"]
            assert equals["kms:EncryptionContext:aws:s3:arn"] == {"Fn::Sub": f"arn:${{AWS::Partition}}:s3:::{bucket}"}
        for action in _as_list(statement["Action"]):
            by_key |= {(arn["Fn::Sub"], action, context) for arn in arns}
    by_roles = {
        (_role_arn(role), action, resource)
        for role in TEMPLATE.of_type("AWS::IAM::Role")
        for action, resource in granted(role)
        if resource.startswith("PaiKey:")
    }
    assert by_key == by_roles


def test_the_memory_role_may_only_revoke_api_keys() -> None:
    """`dynamodb:Attributes` lists every attribute the revoke's update names (key, update and
    condition expressions), and nothing more: the role cannot change a key's digest or owner."""
    tree = ast.parse((ADAPTERS / "dynamodb_api_keys.py").read_text(encoding="utf-8"))
    (revoke,) = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "revoke"]
    (call,) = [
        n
        for n in ast.walk(revoke)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "update_item"
    ]
    arguments = {k.arg: k.value for k in call.keywords}
    named = {k.value for k in arguments["Key"].keys if isinstance(k, ast.Constant)}  # type: ignore[attr-defined]
    for expression in ("UpdateExpression", "ConditionExpression"):
        text = ast.literal_eval(arguments[expression])
        named |= set(re.findall(r"(?<![:#\w])([A-Za-z][A-Za-z0-9]*)\b", text)) - {
            "SET",
            "if_not_exists",
            "attribute_exists",
        }
    (statement,) = [
        s for s in _statements("MemoryFunctionRole") if s["Resource"] == {"Fn::GetAtt": ["ApiKeysTable", "Arn"]}
    ]
    assert statement["Action"] == ["dynamodb:UpdateItem"]
    assert set(statement["Condition"]["ForAllValues:StringEquals"]["dynamodb:Attributes"]) == named
    assert named == {"keyId", "revokedAt"}
    assert statement["Condition"]["StringEqualsIfExists"]["dynamodb:ReturnValues"] == ast.literal_eval(
        arguments["ReturnValues"]
    )
