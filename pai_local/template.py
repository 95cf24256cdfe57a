"""Read infra/template.yaml: the one definition of routes, tables, bucket and key that the local
harness shares with the deployed stack."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

TEMPLATE_PATH = Path(__file__).resolve().parents[1] / "infra" / "template.yaml"
_SUB_VARIABLE = re.compile(r"\$\{([A-Za-z0-9:.]+)\}")
_FUNCTION_ARN = re.compile(r"/functions/\$\{([A-Za-z0-9]+)(?:\.Arn)?\}/invocations$")
_HEADER_SOURCE = "$request.header."


class _CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short-form intrinsics (!Ref, !Sub, !GetAtt ...) as plain dicts."""


def _intrinsic(loader: yaml.SafeLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = "Ref" if tag_suffix == "Ref" else f"Fn::{tag_suffix}"
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if tag_suffix == "GetAtt":
            value = str(value).split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {name: value}


_CfnLoader.add_multi_constructor("!", _intrinsic)


@dataclass(frozen=True)
class Authorizer:
    """A Lambda REQUEST authorizer (payload 2.0, simple responses), the only kind PAI uses."""

    name: str  # the logical id
    handler: str  # "module.function"
    identity_header: str  # lower case: "authorization" for $request.header.Authorization
    ttl_seconds: int  # how long an answer is cached per identity value; 0: not cached


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: str  # "module.function", as the Lambda function's Handler property names it
    authorizer: Authorizer | None = None  # AuthorizationType CUSTOM


class Template:
    def __init__(self, document: dict[str, Any], *, parameters: dict[str, str]) -> None:
        self.document = document
        self.resources: dict[str, dict[str, Any]] = document["Resources"]
        defaults = {name: str(spec.get("Default", "")) for name, spec in document.get("Parameters", {}).items()}
        self.parameters = {**defaults, **parameters}
        # Physical ids and attributes of resources created so far, for Ref / GetAtt / Sub.
        self.known: dict[str, str] = {}

    @classmethod
    def load(cls, path: Path = TEMPLATE_PATH, **parameters: str) -> Template:
        document = yaml.load(path.read_text(encoding="utf-8"), Loader=_CfnLoader)  # noqa: S506 (SafeLoader subclass)
        return cls(document, parameters=parameters)

    def of_type(self, resource_type: str) -> dict[str, dict[str, Any]]:
        return {name: spec for name, spec in self.resources.items() if spec["Type"] == resource_type}

    def properties(self, logical_id: str) -> dict[str, Any]:
        return dict(self.resources[logical_id].get("Properties", {}))

    def _lookup(self, name: str) -> str:
        if name in self.parameters:
            return self.parameters[name]
        if name in self.known:
            return self.known[name]
        raise KeyError(f"{name} is not known yet: create the resource it names first")

    def resolve(self, value: Any) -> Any:
        """Resolve the intrinsics the storage resources use (Ref, Fn::Sub, Fn::GetAtt) against
        parameters, pseudo parameters and the resources created so far."""
        if isinstance(value, list):
            return [self.resolve(item) for item in value]
        if not isinstance(value, dict):
            return value
        if set(value) == {"Ref"}:
            return self._lookup(value["Ref"])
        if set(value) == {"Fn::GetAtt"}:
            return self._lookup(".".join(value["Fn::GetAtt"]))
        if set(value) == {"Fn::Sub"}:
            return _SUB_VARIABLE.sub(lambda match: self._lookup(match.group(1)), value["Fn::Sub"])
        return {key: self.resolve(item) for key, item in value.items()}

    def condition(self, name: str) -> bool:
        """A condition of the template (Fn::Equals, Fn::Not, Fn::And, Fn::Or over parameters)."""
        return bool(self._evaluate(self.document.get("Conditions", {})[name]))

    def _evaluate(self, value: Any) -> Any:
        if not (isinstance(value, dict) and len(value) == 1):
            return value
        ((name, args),) = value.items()
        operations: dict[str, Any] = {
            "Fn::Equals": lambda: self._evaluate(args[0]) == self._evaluate(args[1]),
            "Fn::Not": lambda: not self._evaluate(args[0]),
            "Fn::And": lambda: all(self._evaluate(arg) for arg in args),
            "Fn::Or": lambda: any(self._evaluate(arg) for arg in args),
            "Condition": lambda: self.condition(args),
            "Ref": lambda: self._lookup(args),
        }
        return operations[name]() if name in operations else value

    def chosen(self, value: Any) -> Any:
        """`value` with an outer Fn::If decided by its condition (as SnapStart's alias targets are)."""
        while isinstance(value, dict) and set(value) == {"Fn::If"}:
            condition, when_true, when_false = value["Fn::If"]
            value = when_true if self.condition(condition) else when_false
        return value

    def function_of(self, target: Any) -> str:
        """The logical id of the function a target names: `!GetAtt Fn.Arn`, `!Ref Fn`, or an alias of it."""
        target = self.chosen(target)
        logical_id = target["Fn::GetAtt"][0] if "Fn::GetAtt" in target else target["Ref"]
        if self.resources[logical_id]["Type"] == "AWS::Lambda::Alias":
            return self.function_of(self.properties(logical_id)["FunctionName"])
        return str(logical_id)

    def routes(self) -> list[Route]:
        routes = []
        for spec in self.of_type("AWS::ApiGatewayV2::Route").values():
            method, path = spec["Properties"]["RouteKey"].split(" ", 1)
            target = spec["Properties"]["Target"]["Fn::Sub"]  # "integrations/${SomeIntegration}"
            integration = _SUB_VARIABLE.search(target)
            if integration is None:
                raise ValueError(f"route {method} {path} has no integration")
            function_id = self.function_of(self.properties(integration.group(1))["IntegrationUri"])
            authorizer = None
            if spec["Properties"].get("AuthorizationType") == "CUSTOM":
                authorizer = self.authorizer(spec["Properties"]["AuthorizerId"]["Ref"])
            handler = self.properties(function_id)["Handler"]
            routes.append(Route(method=method, path=path, handler=handler, authorizer=authorizer))
        return routes

    def authorizer(self, logical_id: str) -> Authorizer:
        props = self.properties(logical_id)
        emulated = (
            props.get("AuthorizerType") == "REQUEST"
            and props.get("AuthorizerPayloadFormatVersion") == "2.0"
            and props.get("EnableSimpleResponses") is True
        )
        if not emulated:
            raise ValueError(f"{logical_id}: the local gateway emulates REQUEST authorizers (2.0, simple responses)")
        function = _FUNCTION_ARN.search(self.chosen(props["AuthorizerUri"])["Fn::Sub"])
        sources = props.get("IdentitySource", [])
        if function is None or len(sources) != 1 or not sources[0].startswith(_HEADER_SOURCE):
            raise ValueError(f"{logical_id}: expected one Lambda function and one header as the identity source")
        return Authorizer(
            name=logical_id,
            handler=self.properties(self.function_of({"Ref": function.group(1)}))["Handler"],
            identity_header=sources[0].removeprefix(_HEADER_SOURCE).lower(),
            ttl_seconds=int(self.resolve(props.get("AuthorizerResultTtlInSeconds", 0))),
        )
