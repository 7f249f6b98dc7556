"""What template.yaml promises about IAM, alarms and access logs, read from the template itself and from
the CloudFormation that the SAM translator makes of it (SAM adds roles and policies of its own)."""

from __future__ import annotations

import json
import operator
import os
import subprocess
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness.stack import ROOT, Stack, load_template
from tests.test_quality import sam_cli
from usage_reporter.config import Settings

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


# -- Stripe's event destination, meter event batches and the usage-record mirror --------------------------


def _created_or_given(condition: str, secret: str, parameter: str) -> dict[str, Any]:
    return {"Fn::If": [condition, {"Ref": secret}, {"Ref": parameter}]}


STRIPE_API_KEY_SECRET = _created_or_given("CreateStripeApiKeySecret", "StripeApiKeySecret", "StripeApiKeySecretArn")
CLIENT_SECRETS_SECRET = _created_or_given("CreateClientSecretsSecret", "ClientSecretsSecret", "ClientSecretsSecretArn")
WEBHOOK_SECRET = _created_or_given("CreateStripeWebhookSecret", "StripeWebhookSecret", "StripeWebhookSecretArn")
STRIPE_EVENTS_PATH = "/v1/stripe/events"
# (function, variable, value): what each function must be told. The retry worker gets the mirror and the
# meters' payload keys (it resends usage records and meter events); only the ingest function answers
# Stripe's events and sends batches.
FUNCTION_ENVIRONMENT = [
    ("IngestFunction", "STRIPE_WEBHOOK_SECRET_ARN", WEBHOOK_SECRET),
    ("IngestFunction", "METER_EVENT_BATCH_API", {"Ref": "MeterEventBatchApi"}),
    ("IngestFunction", "USAGE_RECORD_MIRROR", {"Ref": "UsageRecordMirror"}),
    ("RetryFunction", "USAGE_RECORD_MIRROR", {"Ref": "UsageRecordMirror"}),
    ("IngestFunction", "METER_EVENT_KEYS", {"Ref": "MeterEventKeys"}),
    ("RetryFunction", "METER_EVENT_KEYS", {"Ref": "MeterEventKeys"}),
]
# (alarm, metric, the smallest 5-minute sum that must alarm): custom metrics of the ingest function.
CUSTOM_METRIC_ALARMS = [
    ("MeterEventErrorsUnattributedAlarm", "MeterEventErrorsUnattributed", 1),
    ("StripeEventSignatureFailuresAlarm", "StripeEventSignatureInvalid", 5),
    ("ConfigurationInvalidAlarm", "ConfigurationInvalid", 1),
]
COMPARISONS = {
    "GreaterThanThreshold": operator.gt,
    "GreaterThanOrEqualToThreshold": operator.ge,
    "LessThanThreshold": operator.lt,
    "LessThanOrEqualToThreshold": operator.le,
}


def function_environment(template: Template, logical_id: str) -> dict[str, Any]:
    """The function's variables, unresolved: Globals', then its own (SAM merges them, the function's win)."""
    env_global = template.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {})
    env_own = template["Resources"][logical_id]["Properties"].get("Environment", {}).get("Variables", {})
    return {**env_global, **env_own}


def http_routes(template: Template) -> dict[tuple[str, str], tuple[str, dict[str, Any]]]:
    """(method, path) -> (function, the HttpApi event's properties) of every route the functions declare."""
    routes = {}
    for logical_id, resource in template["Resources"].items():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        for event in resource["Properties"].get("Events", {}).values():
            if event["Type"] == "HttpApi":
                props = event["Properties"]
                route = (props["Method"].upper(), props["Path"])
                assert route not in routes, f"{route} declared twice"
                routes[route] = (logical_id, props)
    return routes


def secret_grants(template: Template) -> dict[str, list[Any]]:
    """Logical id of a function or role -> the resources it may secretsmanager:GetSecretValue."""
    grants: dict[str, list[Any]] = {}
    for owner, statement in iam_statements(template):
        actions = [action.lower() for action in _as_list(statement.get("Action", []))]
        if "secretsmanager:getsecretvalue" in actions:
            assert statement["Effect"] == "Allow"
            grants.setdefault(owner.split(".", 1)[0], []).extend(_as_list(statement["Resource"]))
    return grants


def breaches(alarm: dict[str, Any], value: float) -> bool:
    compare = COMPARISONS[alarm["ComparisonOperator"]]
    return bool(compare(value, alarm["Threshold"]))


def test_stripe_events_route_goes_to_the_ingest_function_unsigned_by_callers() -> None:
    template = load_template()
    routes = http_routes(template)
    function, props = routes[("POST", STRIPE_EVENTS_PATH)]
    assert function == "IngestFunction"
    # No Auth, no authorizer: Stripe signs with Stripe-Signature, which the function verifies itself.
    assert props == {"ApiId": {"Ref": "HttpApi"}, "Method": "POST", "Path": STRIPE_EVENTS_PATH}
    assert "Auth" not in template["Resources"]["HttpApi"]["Properties"]
    # The callers' routes are still there, on the same API.
    for path in ("/v1/usage", "/v1/usage/batch", "/v1/meter_events", "/v1/meter_events/batch"):
        assert routes[("POST", path)][0] == "IngestFunction", path
    assert {props["ApiId"]["Ref"] for _, props in routes.values()} == {"HttpApi"}


def test_stripe_events_url_and_webhook_secret_are_outputs() -> None:
    outputs = load_template()["Outputs"]
    base = outputs["ApiUrl"]["Value"]["Fn::Sub"]
    assert outputs["StripeEventsUrl"]["Value"] == {"Fn::Sub": base + STRIPE_EVENTS_PATH}
    assert outputs["StripeWebhookSecretArn"]["Value"] == WEBHOOK_SECRET


def test_webhook_secret_is_created_when_no_arn_is_given_like_the_stripe_key() -> None:
    template = load_template()
    for secret, parameter, condition in (
        ("StripeApiKeySecret", "StripeApiKeySecretArn", "CreateStripeApiKeySecret"),
        ("StripeWebhookSecret", "StripeWebhookSecretArn", "CreateStripeWebhookSecret"),
    ):
        assert template["Parameters"][parameter]["Type"] == "String"
        assert template["Parameters"][parameter]["Default"] == ""
        assert template["Conditions"][condition] == {"Fn::Equals": [{"Ref": parameter}, ""]}
        resource = template["Resources"][secret]
        assert resource["Type"] == "AWS::SecretsManager::Secret"
        assert resource["Condition"] == condition
    created = template["Resources"]["StripeWebhookSecret"]["Properties"]
    assert "whsec_" in created["Description"]
    assert created["SecretString"].startswith("REPLACE_WITH_")  # a placeholder: no secret in the template

    # The ARN the function gets: the created secret's without a parameter, the parameter's with one.
    defaults = {k: str(p.get("Default", "")) for k, p in template["Parameters"].items()}
    given = "arn:aws:secretsmanager:us-east-1:123456789012:secret:stripe-webhook-AbCdEf"
    stack = Stack(template=template, parameters={**defaults, "StripeWebhookSecretArn": given})
    assert stack.resolve(WEBHOOK_SECRET) == given
    stack = Stack(template=template, parameters=defaults, physical={"StripeWebhookSecret": "created-arn"})
    assert stack.resolve(WEBHOOK_SECRET) == "created-arn"


def test_only_the_ingest_function_may_read_the_webhook_secret_and_only_that_secret() -> None:
    grants = secret_grants(load_template())
    assert sorted(grants) == ["IngestFunction", "RetryFunctionRole"]
    ingest = grants["IngestFunction"]
    assert len(ingest) == 3
    assert all(secret in ingest for secret in (STRIPE_API_KEY_SECRET, CLIENT_SECRETS_SECRET, WEBHOOK_SECRET))
    assert grants["RetryFunctionRole"] == [STRIPE_API_KEY_SECRET]


@pytest.mark.parametrize(
    ("function", "variable", "value"), FUNCTION_ENVIRONMENT, ids=[f"{f}-{v}" for f, v, _ in FUNCTION_ENVIRONMENT]
)
def test_function_environment(function: str, variable: str, value: Any) -> None:
    assert function_environment(load_template(), function).get(variable) == value


def test_the_retry_worker_is_not_given_the_webhook_secret() -> None:
    # It may not read it (see its role) and has no use for it.
    assert "STRIPE_WEBHOOK_SECRET_ARN" not in function_environment(load_template(), "RetryFunction")


def test_meter_event_batch_api_parameter_allows_what_the_service_knows() -> None:
    parameter = load_template()["Parameters"]["MeterEventBatchApi"]
    assert parameter["Type"] == "String"
    assert parameter["AllowedValues"] == ["stream", "v1"]
    assert parameter["Default"] == "stream"
    [field] = [f for f in Settings.model_fields.values() if f.alias == "METER_EVENT_BATCH_API"]
    assert list(typing.get_args(field.annotation)) == parameter["AllowedValues"]
    assert field.default == parameter["Default"]


@pytest.mark.parametrize("name", ["UsageRecordMirror", "MeterEventKeys"])
def test_json_mapping_parameters_default_to_empty(name: str) -> None:
    parameter = load_template()["Parameters"][name]
    assert parameter["Type"] == "String"
    assert parameter["Default"] == ""  # no mirroring; every meter with Stripe's default payload keys
    assert "AllowedValues" not in parameter


def test_usage_record_mirror_example_is_json() -> None:
    description = load_template()["Parameters"]["UsageRecordMirror"]["Description"]
    example = json.loads(description[description.index("{") : description.rindex("}") + 1])
    assert example["si_123"] == {"event_name": "api_requests", "customer": "cus_123"}
    assert all("event_name" in target for target in example.values())


@pytest.mark.parametrize(("alarm_id", "metric", "fires_at"), CUSTOM_METRIC_ALARMS)
def test_meter_event_alarms_watch_the_services_custom_metrics(alarm_id: str, metric: str, fires_at: int) -> None:
    template = load_template()
    alarm = template["Resources"][alarm_id]
    assert alarm["Type"] == "AWS::CloudWatch::Alarm"
    props = alarm["Properties"]
    assert props["MetricName"] == metric
    # Where Powertools puts the service's metrics, with its one default dimension, as the other custom alarm.
    env = template["Globals"]["Function"]["Environment"]["Variables"]
    assert props["Namespace"] == env["POWERTOOLS_METRICS_NAMESPACE"]
    assert props["Dimensions"] == [{"Name": "service", "Value": env["POWERTOOLS_SERVICE_NAME"]}]
    other = template["Resources"]["RetryRecordFailuresAlarm"]["Properties"]
    assert (props["Namespace"], props["Dimensions"]) == (other["Namespace"], other["Dimensions"])
    assert (props["Statistic"], props["Period"], props["EvaluationPeriods"]) == ("Sum", 300, 1)
    assert breaches(props, fires_at)
    assert not breaches(props, fires_at - 1)
    assert props["TreatMissingData"] == "notBreaching"
    assert props["AlarmActions"] == {"Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]}


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


@pytest.mark.slow
def test_translated_stripe_events_route_invokes_the_ingest_function(translated: Template) -> None:
    resources = translated["Resources"]
    operation = resources["HttpApi"]["Properties"]["Body"]["paths"][STRIPE_EVENTS_PATH]["post"]
    assert "${IngestFunction.Arn}" in operation["x-amazon-apigateway-integration"]["uri"]["Fn::Sub"]
    assert "security" not in operation  # no authorizer in front of Stripe
    permissions = [
        r["Properties"]
        for r in resources.values()
        if r["Type"] == "AWS::Lambda::Permission"
        and r["Properties"]["SourceArn"]["Fn::Sub"][0].endswith(f"/POST{STRIPE_EVENTS_PATH}")
    ]
    assert [p["FunctionName"] for p in permissions] == [{"Ref": "IngestFunction"}]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("function", "variable", "value"), FUNCTION_ENVIRONMENT, ids=[f"{f}-{v}" for f, v, _ in FUNCTION_ENVIRONMENT]
)
def test_translated_function_environment(translated: Template, function: str, variable: str, value: Any) -> None:
    assert translated["Resources"][function]["Properties"]["Environment"]["Variables"].get(variable) == value


@pytest.mark.slow
def test_translated_webhook_secret_grant_names_only_that_secret(translated: Template) -> None:
    grants = secret_grants(translated)
    assert sorted(grants) == ["IngestFunctionRole", "RetryFunctionRole"]
    assert len(grants["IngestFunctionRole"]) == 3
    assert WEBHOOK_SECRET in grants["IngestFunctionRole"]
    assert grants["RetryFunctionRole"] == [STRIPE_API_KEY_SECRET]
    assert (
        "STRIPE_WEBHOOK_SECRET_ARN"
        not in translated["Resources"]["RetryFunction"]["Properties"]["Environment"]["Variables"]
    )
