"""What template.yaml promises about IAM, alarms and access logs, read from the template itself and from
the CloudFormation that the SAM translator makes of it (SAM adds roles and policies of its own)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness.stack import ROOT, load_template
from tests.test_quality import sam_cli

Template = dict[str, Any]
Statement = dict[str, Any]

RETRY_QUEUE_ARN = {"Fn::GetAtt": ["RetryQueue", "Arn"]}
DEAD_LETTER_QUEUE_ARN = {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]}
# What the SQS event source needs of the worker's role, and all the worker may do to the retry queue.
SQS_CONSUMER_ACTIONS = {
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sqs:GetQueueAttributes",
    "sqs:ChangeMessageVisibility",
}
SQS_EVERY_QUEUE_POLICY = "AWSLambdaSQSQueueExecutionRole"
# The AWS-managed policies a function role may have: logs and X-Ray (SAM's own choice for a traced function;
# X-Ray's actions take no resource, and log streams have generated names, so neither fits a resource ARN).
ALLOWED_MANAGED_POLICIES = {
    "service-role/AWSLambdaBasicExecutionRole",
    "AWSXrayWriteOnlyAccess",
    "AWSXRayDaemonWriteAccess",
}


# -- the IAM statements a template writes ---------------------------------------------------------------


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _document_statements(document: Any, owner: str) -> Iterator[tuple[str, Statement]]:
    assert isinstance(document, dict) and "Statement" in document, f"{owner}: not a policy document: {document}"
    for statement in _as_list(document["Statement"]):
        yield owner, statement


def iam_statements(template: Template) -> Iterator[tuple[str, Statement]]:
    """(owner, statement) for every identity-policy statement of functions, roles and policies."""
    for logical_id, resource in template["Resources"].items():
        kind, props = resource["Type"], resource.get("Properties", {})
        if kind == "AWS::Serverless::Function":
            for index, policy in enumerate(_as_list(props.get("Policies", []))):
                # Inline documents only: a managed policy's name or a SAM policy template hides its statements.
                yield from _document_statements(policy, f"{logical_id}.Policies[{index}]")
        elif kind == "AWS::IAM::Role":
            for policy in props.get("Policies", []):
                yield from _document_statements(policy["PolicyDocument"], f"{logical_id}.{policy['PolicyName']}")
        elif kind in {"AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"}:
            yield from _document_statements(props["PolicyDocument"], logical_id)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)


def wildcards(template: Template, statement: Statement) -> list[str]:
    """Why a statement reaches further than named resources and actions (empty: it does not)."""
    found = [f"{key} (everything but the named)" for key in ("NotResource", "NotAction") if key in statement]
    if "Resource" not in statement:
        found.append("no Resource")
    for value in _as_list(statement.get("Resource", [])):
        found += [f"Resource {text!r}" for text in _strings(value) if "*" in text]
        # A log group's Arn attribute is "arn:...:log-group:<name>:*": a wildcard once resolved.
        if isinstance(value, dict) and "Fn::GetAtt" in value:
            target = template["Resources"].get(value["Fn::GetAtt"][0], {})
            if target.get("Type") == "AWS::Logs::LogGroup" and value["Fn::GetAtt"][1] == "Arn":
                found.append(f"Resource {value} (a log group's Arn ends in ':*')")
    found += [f"Action {action!r}" for action in _strings(statement.get("Action", [])) if "*" in action]
    return found


def assert_no_wildcards(template: Template) -> int:
    statements = list(iam_statements(template))
    problems = [f"{owner} {s.get('Sid', '')}: {w}" for owner, s in statements for w in wildcards(template, s)]
    assert not problems, "IAM statements must name their resources and actions:\n" + "\n".join(problems)
    return len(statements)


def managed_policy_name(arn: Any) -> str:
    """'service-role/AWSLambdaBasicExecutionRole' of an ARN, written out or as !Sub."""
    text = arn["Fn::Sub"] if isinstance(arn, dict) and "Fn::Sub" in arn else arn
    assert isinstance(text, str) and ":iam::aws:policy/" in text, f"not an AWS-managed policy ARN: {arn}"
    return text.split(":iam::aws:policy/", 1)[1]


def sqs_grants(template: Template, role_id: str) -> dict[str, list[Any]]:
    """sqs action -> the resources the role grants it on."""
    grants: dict[str, list[Any]] = {}
    role = template["Resources"][role_id]["Properties"]
    for policy in role.get("Policies", []):
        for statement in _as_list(policy["PolicyDocument"]["Statement"]):
            assert statement["Effect"] == "Allow"
            for action in _as_list(statement["Action"]):
                if action.lower().startswith("sqs:"):
                    grants.setdefault(action, []).extend(_as_list(statement["Resource"]))
    return grants


def assert_worker_role_is_least_privilege(template: Template, worker_type: str) -> None:
    worker = template["Resources"]["RetryFunction"]
    assert worker["Type"] == worker_type
    role_arn = worker["Properties"].get("Role")
    assert role_arn == {"Fn::GetAtt": ["RetryFunctionRole", "Arn"]}, (
        f"the worker needs its own role (without one SAM attaches {SQS_EVERY_QUEUE_POLICY}), not {role_arn}"
    )
    role = template["Resources"]["RetryFunctionRole"]
    assert role["Type"] == "AWS::IAM::Role"
    managed = {managed_policy_name(arn) for arn in role["Properties"].get("ManagedPolicyArns", [])}
    assert not any(SQS_EVERY_QUEUE_POLICY in name for name in managed), managed
    assert managed <= ALLOWED_MANAGED_POLICIES, managed
    assert sqs_grants(template, "RetryFunctionRole") == {
        **{action: [RETRY_QUEUE_ARN] for action in SQS_CONSUMER_ACTIONS},
        "sqs:SendMessage": [DEAD_LETTER_QUEUE_ARN],
    }


# -- the template as written ----------------------------------------------------------------------------


def test_no_iam_statement_of_the_template_has_a_wildcard() -> None:
    template = load_template()
    assert assert_no_wildcards(template) >= 7  # the ingest function's three, the worker's four


def test_the_wildcard_check_catches_what_it_should() -> None:
    template: Template = {
        "Resources": {
            "Logs": {"Type": "AWS::Logs::LogGroup"},
            "Fn": {
                "Type": "AWS::Serverless::Function",
                "Properties": {
                    "Policies": [
                        {
                            "Statement": [
                                {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"},
                                {"Effect": "Allow", "Action": "sqs:*", "Resource": RETRY_QUEUE_ARN},
                                {
                                    "Effect": "Allow",
                                    "Action": "x:Y",
                                    "Resource": {"Fn::Sub": "arn:${AWS::Partition}:t/*"},
                                },
                                {
                                    "Effect": "Allow",
                                    "Action": "logs:PutLogEvents",
                                    "Resource": {"Fn::GetAtt": ["Logs", "Arn"]},
                                },
                                {"Effect": "Allow", "Action": "x:Y", "NotResource": RETRY_QUEUE_ARN},
                                {"Effect": "Allow", "Action": "x:Y", "Resource": RETRY_QUEUE_ARN},
                            ]
                        }
                    ]
                },
            },
        }
    }
    found = [wildcards(template, statement) for _, statement in iam_statements(template)]
    assert [bool(f) for f in found] == [True, True, True, True, True, False]
    with pytest.raises(AssertionError, match="not a policy document"):
        list(
            iam_statements(
                {
                    "Resources": {
                        "Fn": {"Type": "AWS::Serverless::Function", "Properties": {"Policies": "AWSLambdaExecute"}}
                    }
                }
            )
        )


def test_worker_gets_the_four_sqs_actions_on_the_retry_queue_only() -> None:
    template = load_template()
    assert_worker_role_is_least_privilege(template, "AWS::Serverless::Function")
    # With a Role, SAM silently ignores a function's Policies: the worker's permissions live in its role.
    assert "Policies" not in template["Resources"]["RetryFunction"]["Properties"]


def test_alarms_cover_both_functions_and_the_api() -> None:
    resources = load_template()["Resources"]
    alarms = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::CloudWatch::Alarm"]
    watched = {(a["Namespace"], a["MetricName"], json.dumps(a["Dimensions"], sort_keys=True)) for a in alarms}
    for function in ("IngestFunction", "RetryFunction"):
        dimensions = [{"Name": "FunctionName", "Value": {"Ref": function}}]
        assert ("AWS/Lambda", "Errors", json.dumps(dimensions, sort_keys=True)) in watched, function
    # HTTP APIs publish 4xx/5xx (REST APIs: 4XXError/5XXError) per ApiId, and per ApiId and Stage.
    dimensions = [{"Name": "ApiId", "Value": {"Ref": "HttpApi"}}]
    assert ("AWS/ApiGateway", "5xx", json.dumps(dimensions, sort_keys=True)) in watched
    for alarm in alarms:
        assert alarm["TreatMissingData"] == "notBreaching"
        for actions in ("AlarmActions", "OKActions"):
            assert alarm[actions] == {"Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]}


# The $context variables HTTP API access logs support (API Gateway developer guide, "Customize HTTP API
# access logs"); request headers are not among them.
HTTP_API_LOG_VARIABLES = {
    "$context.requestId",
    "$context.requestTime",
    "$context.httpMethod",
    "$context.routeKey",
    "$context.path",
    "$context.status",
    "$context.responseLatency",
    "$context.integrationLatency",
    "$context.integrationStatus",
    "$context.integrationErrorMessage",
    "$context.error.message",
    "$context.responseLength",
    "$context.identity.sourceIp",
    "$context.identity.userAgent",
}


def test_http_api_writes_json_access_logs_to_a_log_group_of_its_own() -> None:
    resources = load_template()["Resources"]
    settings = resources["HttpApi"]["Properties"]["AccessLogSettings"]
    [group_id, attribute] = settings["DestinationArn"]["Fn::GetAtt"]
    assert attribute == "Arn"
    group = resources[group_id]
    assert group["Type"] == "AWS::Logs::LogGroup"
    assert group["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    assert group_id not in {"IngestLogGroup", "RetryLogGroup"}

    line = json.loads(settings["Format"])  # one JSON object per request
    assert "\n" not in settings["Format"]
    assert set(line.values()) <= HTTP_API_LOG_VARIABLES, set(line.values()) - HTTP_API_LOG_VARIABLES
    for field in ("requestId", "routeKey", "status", "responseLatency", "integrationLatency", "userAgent"):
        assert line[field] == f"$context.{'identity.' if field == 'userAgent' else ''}{field}"


# -- the template as CloudFormation gets it -------------------------------------------------------------

# `sam validate`'s own translation (local CodeUris replaced), run in the SAM CLI's virtualenv. Offline: the
# translator asks IAM for managed policy names only when a function's Policies name one, and none does.
TRANSLATE = """
import json, os, sys
from samcli.lib.translate.sam_template_validator import SamTemplateValidator
from samcli.yamlhelper import yaml_parse

class OfflinePolicyLoader:
    def load(self):
        raise SystemExit("the translator asked IAM for managed policies: name no managed policy in Policies")

os.environ.pop("AWS_PROFILE", None)
with open(sys.argv[1]) as handle:
    template = yaml_parse(handle.read())
validator = SamTemplateValidator(template, OfflinePolicyLoader(), region="us-east-1")
translated = validator.get_translated_template_if_valid()
with open(sys.argv[2], "w") as handle:
    json.dump(yaml_parse(translated), handle)
"""


@pytest.fixture(scope="module")
def translated(tmp_path_factory: pytest.TempPathFactory) -> Template:
    python = Path(sam_cli()).with_name("python")
    output = tmp_path_factory.mktemp("sam") / "template.json"
    command = [str(python), "-c", TRANSLATE, str(ROOT / "template.yaml"), str(output)]
    env = {**os.environ, "SAM_CLI_TELEMETRY": "0"}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    template: Template = json.loads(output.read_text())
    return template


@pytest.mark.slow
def test_translated_worker_role_is_least_privilege(translated: Template) -> None:
    assert_worker_role_is_least_privilege(translated, "AWS::Lambda::Function")
    [mapping] = [
        r["Properties"] for r in translated["Resources"].values() if r["Type"] == "AWS::Lambda::EventSourceMapping"
    ]
    assert mapping["EventSourceArn"] == RETRY_QUEUE_ARN
    assert mapping["FunctionName"] == {"Ref": "RetryFunction"}


@pytest.mark.slow
def test_translated_roles_have_no_wildcard_statement_and_no_every_queue_policy(translated: Template) -> None:
    roles = {k: r["Properties"] for k, r in translated["Resources"].items() if r["Type"] == "AWS::IAM::Role"}
    assert set(roles) == {"IngestFunctionRole", "RetryFunctionRole"}  # SAM's for the ingest function, ours
    assert assert_no_wildcards(translated) >= 7
    for logical_id, role in roles.items():
        managed = {managed_policy_name(arn) for arn in role.get("ManagedPolicyArns", [])}
        assert managed <= ALLOWED_MANAGED_POLICIES, f"{logical_id}: {managed}"
