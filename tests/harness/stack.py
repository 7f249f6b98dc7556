"""Build the template's DynamoDB tables, SQS queues and secrets (in moto), straight from template.yaml.

Tests and the local server never describe a table or queue themselves: they read the template's
own properties, so template and code cannot drift. Function environments are resolved the same way.
"""

from __future__ import annotations

import copy
import functools
import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .aws_clients import aws_client

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"


class _CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short forms (!Ref, !GetAtt, !If, ...) as their long forms."""


def _cfn_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {name: value}


_CfnLoader.add_multi_constructor("!", _cfn_tag)


def load_template(path: Path = TEMPLATE) -> dict[str, Any]:
    """The template, parsed once per version of the file (a fresh copy each time: callers may change theirs)."""
    return copy.deepcopy(_parsed(path, path.stat().st_mtime_ns))


@functools.lru_cache(maxsize=4)
def _parsed(path: Path, mtime_ns: int) -> dict[str, Any]:  # about 0.1 s a parse, and every test creates a stack
    with path.open() as handle:
        template: dict[str, Any] = yaml.load(handle, Loader=_CfnLoader)  # noqa: S506 - SafeLoader subclass
    return template


@dataclass
class Stack:
    """The template's resources as created locally: logical id -> physical id (name, URL or ARN)."""

    template: dict[str, Any]
    parameters: dict[str, str]
    physical: dict[str, str] = field(default_factory=dict)
    attributes: dict[tuple[str, str], str] = field(default_factory=dict)

    def resource(self, logical_id: str) -> dict[str, Any]:
        return self.template["Resources"][logical_id]  # type: ignore[no-any-return]

    def properties(self, logical_id: str) -> dict[str, Any]:
        return self.resource(logical_id).get("Properties", {})  # type: ignore[no-any-return]

    def condition(self, name: str) -> bool:
        return bool(self.resolve(self.template["Conditions"][name]))

    def resolve(self, value: Any) -> Any:
        """Evaluate the intrinsic functions this template uses, with local physical ids."""
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        if not isinstance(value, dict):
            return value
        if len(value) != 1:
            return {k: self.resolve(v) for k, v in value.items()}
        ((name, arg),) = value.items()
        if name == "Ref":
            if arg in self.parameters:
                return self.parameters[arg]
            if arg == "AWS::NoValue":
                return None
            return self.physical[arg]
        if name == "Fn::GetAtt":
            return self.attributes[(arg[0], arg[1])]
        if name == "Fn::If":
            cond, if_true, if_false = arg
            return self.resolve(if_true if self.condition(cond) else if_false)
        if name == "Fn::Equals":
            left, right = (self.resolve(a) for a in arg)
            return str(left) == str(right)
        if name == "Fn::Not":
            return not self.resolve(arg[0])
        if name == "Fn::Sub" and isinstance(arg, str):
            return arg.replace("${AWS::StackName}", "local")
        return {name: self.resolve(arg)}

    def function_environment(self, logical_id: str) -> dict[str, str]:
        """Globals plus the function's own variables, resolved: what Lambda would set."""
        env_global = self.template.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {})
        env_own = self.properties(logical_id).get("Environment", {}).get("Variables", {})
        resolved = {k: self.resolve(v) for k, v in {**env_global, **env_own}.items()}
        return {k: str(v) for k, v in resolved.items() if v is not None}

    def function_timeout(self, logical_id: str) -> int:
        own = self.properties(logical_id).get("Timeout")
        return int(own or self.template.get("Globals", {}).get("Function", {}).get("Timeout", 3))


def create_stack(*, parameters: dict[str, str] | None = None, prefix: str | None = None) -> Stack:
    """Create every table, queue and secret of the template with the current boto3 credentials/endpoint."""
    template = load_template()
    values = {k: str(p.get("Default", "")) for k, p in template.get("Parameters", {}).items()}
    values.update(parameters or {})
    stack = Stack(template=template, parameters=values)
    prefix = prefix or f"local-{uuid.uuid4().hex[:8]}"
    resources = template["Resources"]
    # Dead-letter targets first: a queue's redrive policy needs its target's ARN.
    kinds = ["AWS::SecretsManager::Secret", "AWS::DynamoDB::Table"]
    ordered = [lid for kind in kinds for lid, r in resources.items() if r["Type"] == kind]
    queues = [lid for lid, r in resources.items() if r["Type"] == "AWS::SQS::Queue"]
    ordered += sorted(queues, key=lambda lid: "RedrivePolicy" in resources[lid].get("Properties", {}))
    for logical_id in ordered:
        resource = resources[logical_id]
        if "Condition" in resource and not stack.condition(resource["Condition"]):
            continue
        _CREATORS[resource["Type"]](stack, logical_id, f"{prefix}-{logical_id}")
    return stack


def _create_table(stack: Stack, logical_id: str, name: str) -> None:
    props = stack.properties(logical_id)
    dynamodb = aws_client("dynamodb")
    dynamodb.create_table(
        TableName=name,
        AttributeDefinitions=props["AttributeDefinitions"],
        KeySchema=props["KeySchema"],
        BillingMode=props["BillingMode"],
    )
    ttl = props.get("TimeToLiveSpecification")
    if ttl:
        dynamodb.update_time_to_live(TableName=name, TimeToLiveSpecification=ttl)
    pitr = props.get("PointInTimeRecoverySpecification")
    if pitr:
        dynamodb.update_continuous_backups(TableName=name, PointInTimeRecoverySpecification=pitr)
    stack.physical[logical_id] = name
    stack.attributes[(logical_id, "Arn")] = dynamodb.describe_table(TableName=name)["Table"]["TableArn"]


_QUEUE_ATTRIBUTES = (
    "DelaySeconds",
    "MessageRetentionPeriod",
    "VisibilityTimeout",
    "ReceiveMessageWaitTimeSeconds",
    "SqsManagedSseEnabled",
)


def _create_queue(stack: Stack, logical_id: str, name: str) -> None:
    props = stack.resolve(stack.properties(logical_id))
    attributes = {
        k: str(props[k]).lower() if isinstance(props[k], bool) else str(props[k])
        for k in _QUEUE_ATTRIBUTES
        if k in props
    }
    if "RedrivePolicy" in props:
        attributes["RedrivePolicy"] = json.dumps(props["RedrivePolicy"])
    sqs = aws_client("sqs")
    url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    stack.physical[logical_id] = url
    stack.attributes[(logical_id, "Arn")] = arn
    stack.attributes[(logical_id, "QueueName")] = name


def _create_secret(stack: Stack, logical_id: str, name: str) -> None:
    props = stack.properties(logical_id)
    arn = aws_client("secretsmanager").create_secret(Name=name, SecretString=props["SecretString"])["ARN"]
    stack.physical[logical_id] = arn


_CREATORS = {
    "AWS::DynamoDB::Table": _create_table,
    "AWS::SQS::Queue": _create_queue,
    "AWS::SecretsManager::Secret": _create_secret,
}
