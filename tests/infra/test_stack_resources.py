"""CDK assertion tests: every resource of the stack and its properties."""

from __future__ import annotations

import json
from typing import Any

from aws_cdk.assertions import Match, Template

from infra import outputs
from infra.bundling import LAMBDA_PYTHON_VERSION
from infra.data import DEAD_LETTER_RETENTION_DAYS
from infra.monitoring import ITERATOR_AGE_ALARM_MS
from infra.settings import StackSettings
from tests.infra.conftest import VARIANT_SETTINGS, Synthesized, of_type, only

EXPECTED_RESOURCE_COUNTS = {
    "AWS::KMS::Key": 1,
    "AWS::Kinesis::Stream": 1,
    "AWS::DynamoDB::Table": 1,
    "AWS::SQS::Queue": 1,
    "AWS::SQS::QueuePolicy": 1,
    "AWS::Logs::LogGroup": 1,
    "AWS::IAM::Role": 1,
    "AWS::IAM::Policy": 2,
    "AWS::Lambda::Function": 1,
    "AWS::Lambda::EventSourceMapping": 1,
    "AWS::IAM::User": 1,
    "AWS::IAM::AccessKey": 1,
    "AWS::SecretsManager::Secret": 1,
    "AWS::CloudWatch::Alarm": 5,
    "AWS::CloudWatch::Dashboard": 1,
}


def test_stack_holds_exactly_the_expected_resources(resources: dict[str, dict[str, Any]]) -> None:
    """Nothing unexpected is deployed (no custom-resource Lambdas, no log-retention helper)."""
    counts: dict[str, int] = {}
    for res in resources.values():
        counts[res["Type"]] = counts.get(res["Type"], 0) + 1
    assert counts == EXPECTED_RESOURCE_COUNTS


def test_stream_is_provisioned_encrypted_with_the_stack_key(template: Template, resources: dict, settings: StackSettings) -> None:
    """The stream has the settings' shard count and retention, and KMS encryption with the stack's key."""
    key_id, _ = only(resources, "AWS::KMS::Key")
    template.has_resource_properties(
        "AWS::Kinesis::Stream",
        {
            "Name": settings.stream_name,
            "ShardCount": settings.stream.shard_count,
            "RetentionPeriodHours": settings.stream.retention_hours,
            "StreamEncryption": {"EncryptionType": "KMS", "KeyId": {"Fn::GetAtt": [key_id, "Arn"]}},
            "StreamModeDetails": {"StreamMode": "PROVISIONED"},
        },
    )


def test_stream_key_rotates_and_is_deleted_with_the_stack(template: Template) -> None:
    """The KMS key rotates yearly, and deleting the stack schedules its deletion."""
    template.has_resource(
        "AWS::KMS::Key",
        {
            "Properties": Match.object_like({"EnableKeyRotation": True, "PendingWindowInDays": 7}),
            "DeletionPolicy": "Delete",
            "UpdateReplacePolicy": "Delete",
        },
    )


def test_table_keys_billing_recovery_encryption_and_ttl(template: Template, settings: StackSettings) -> None:
    """The table: hash Username S, range Id S, on-demand, PITR, SSE, TTL attribute; deleted with the stack."""
    template.has_resource(
        "AWS::DynamoDB::Table",
        {
            "Properties": {
                "TableName": settings.table_name,
                "KeySchema": [
                    {"AttributeName": settings.table.hash_key, "KeyType": "HASH"},
                    {"AttributeName": settings.table.range_key, "KeyType": "RANGE"},
                ],
                "AttributeDefinitions": [
                    {"AttributeName": settings.table.hash_key, "AttributeType": "S"},
                    {"AttributeName": settings.table.range_key, "AttributeType": "S"},
                ],
                "BillingMode": "PAY_PER_REQUEST",
                "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
                "SSESpecification": {"SSEEnabled": True},
                "TimeToLiveSpecification": {"AttributeName": settings.table.ttl_attribute, "Enabled": True},
            },
            "DeletionPolicy": "Delete",
            "UpdateReplacePolicy": "Delete",
        },
    )


def test_dead_letter_queue_is_encrypted_and_refuses_plain_http(template: Template, settings: StackSettings) -> None:
    """The DLQ uses SSE, keeps messages 14 days, and its policy denies requests without TLS."""
    template.has_resource_properties(
        "AWS::SQS::Queue",
        {
            "QueueName": settings.dead_letter_queue_name,
            "SqsManagedSseEnabled": True,
            "MessageRetentionPeriod": DEAD_LETTER_RETENTION_DAYS * 86_400,
        },
    )
    template.has_resource_properties(
        "AWS::SQS::QueuePolicy",
        {
            "PolicyDocument": {
                "Statement": Match.array_with([
                    Match.object_like({
                        "Effect": "Deny",
                        "Action": "sqs:*",
                        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                    })
                ])
            }
        },
    )  # fmt: skip


def test_function_runtime_architecture_handler_and_environment(
    template: Template, resources: dict, settings: StackSettings
) -> None:
    """The processor: current Python on arm64, the settings' handler/memory/timeout and environment."""
    queue_id, _ = only(resources, "AWS::SQS::Queue")
    role_id, _ = only(resources, "AWS::IAM::Role")
    log_id, _ = only(resources, "AWS::Logs::LogGroup")
    env = settings.processor_environment("QUEUE_URL")
    env["DEAD_LETTER_QUEUE_URL"] = {"Ref": queue_id}  # type: ignore[assignment]
    template.has_resource_properties(
        "AWS::Lambda::Function",
        {
            "FunctionName": settings.function_name,
            "Runtime": f"python{LAMBDA_PYTHON_VERSION}",
            "Architectures": ["arm64"],
            "Handler": settings.function.handler,
            "MemorySize": settings.function.memory_mb,
            "Timeout": settings.function.timeout_seconds,
            "Role": {"Fn::GetAtt": [role_id, "Arn"]},
            "Environment": {"Variables": env},
            "LoggingConfig": {"LogGroup": {"Ref": log_id}},
            "Code": {"S3Bucket": Match.any_value(), "S3Key": Match.string_like_regexp(r"^[0-9a-f]{64}\.zip$")},
        },
    )


def test_log_group_has_the_settings_retention(template: Template, settings: StackSettings) -> None:
    """The function's log group is created by the stack with the settings' retention, deleted with it."""
    template.has_resource(
        "AWS::Logs::LogGroup",
        {
            "Properties": {
                "LogGroupName": f"/aws/lambda/{settings.function_name}",
                "RetentionInDays": settings.function.log_retention_days,
            },
            "DeletionPolicy": "Delete",
        },
    )


def test_event_source_mapping_applies_every_setting(template: Template, resources: dict, settings: StackSettings) -> None:
    """The mapping carries every EventSourceMappingSettings value, partial batch responses and the DLQ."""
    stream_id, _ = only(resources, "AWS::Kinesis::Stream")
    fn_id, _ = only(resources, "AWS::Lambda::Function")
    queue_id, _ = only(resources, "AWS::SQS::Queue")
    esm = settings.event_source_mapping
    template.has_resource_properties(
        "AWS::Lambda::EventSourceMapping",
        {
            "EventSourceArn": {"Fn::GetAtt": [stream_id, "Arn"]},
            "FunctionName": {"Ref": fn_id},
            "BatchSize": esm.batch_size,
            "MaximumBatchingWindowInSeconds": esm.maximum_batching_window_seconds,
            "StartingPosition": esm.starting_position,
            "ParallelizationFactor": esm.parallelization_factor,
            "BisectBatchOnFunctionError": esm.bisect_batch_on_function_error,
            "MaximumRetryAttempts": esm.maximum_retry_attempts,
            "MaximumRecordAgeInSeconds": esm.maximum_record_age_seconds,
            "FunctionResponseTypes": ["ReportBatchItemFailures"],
            "DestinationConfig": {"OnFailure": {"Destination": {"Fn::GetAtt": [queue_id, "Arn"]}}},
        },
    )


def test_mapping_and_function_wait_for_the_execution_policy(resources: dict) -> None:
    """Lambda validates the role when the mapping is created: the policy is created first."""
    policy_ids = set(of_type(resources, "AWS::IAM::Policy"))
    for cfn_type in ("AWS::Lambda::EventSourceMapping", "AWS::Lambda::Function"):
        _, res = only(resources, cfn_type)
        assert policy_ids & set(res.get("DependsOn", [])), f"{cfn_type} does not depend on the execution policy"


def test_outputs_are_the_documented_ones_and_hold_no_secret(template_json: dict, resources: dict) -> None:
    """Outputs: stream name/ARN, region, access key id, secret ARN, table, DLQ URL; no SecretAccessKey."""
    assert set(template_json["Outputs"]) == set(outputs.ALL_OUTPUTS)
    key_id, _ = only(resources, "AWS::IAM::AccessKey")
    secret_id, _ = only(resources, "AWS::SecretsManager::Secret")
    assert template_json["Outputs"][outputs.OUTPUT_ACCESS_KEY_ID]["Value"] == {"Ref": key_id}
    assert template_json["Outputs"][outputs.OUTPUT_SECRET_ARN]["Value"] == {"Ref": secret_id}
    assert "SecretAccessKey" not in json.dumps(template_json["Outputs"])


def test_secret_holds_the_access_key_pair(resources: dict) -> None:
    """The secret's value is the JSON pair built from the access key resource, never a literal."""
    key_id, _ = only(resources, "AWS::IAM::AccessKey")
    _, secret = only(resources, "AWS::SecretsManager::Secret")
    rendered = json.dumps(secret["Properties"]["SecretString"])
    assert json.dumps({"Ref": key_id}) in rendered
    assert json.dumps({"Fn::GetAtt": [key_id, "SecretAccessKey"]}) in rendered
    assert outputs.SECRET_KEY_ACCESS_KEY_ID in rendered and outputs.SECRET_KEY_SECRET_ACCESS_KEY in rendered


def test_alarms_cover_iterator_age_errors_throttles_dead_letters_and_table(resources: dict, settings: StackSettings) -> None:
    """Five alarms watch the documented metrics, each naming the stack's own resource."""
    alarms = {res["Properties"]["AlarmName"]: res["Properties"] for res in of_type(resources, "AWS::CloudWatch::Alarm").values()}
    expected = {
        f"{settings.name}-IteratorAge": ("AWS/Lambda", "IteratorAge", ITERATOR_AGE_ALARM_MS),
        f"{settings.name}-FunctionErrors": ("AWS/Lambda", "Errors", 1),
        f"{settings.name}-FunctionThrottles": ("AWS/Lambda", "Throttles", 1),
        f"{settings.name}-DeadLetters": ("AWS/SQS", "ApproximateNumberOfMessagesVisible", 1),
        f"{settings.name}-TableThrottles": ("AWS/DynamoDB", "WriteThrottleEvents", 1),
    }
    assert set(alarms) == set(expected)
    for name, (namespace, metric, threshold) in expected.items():
        alarm = alarms[name]
        assert (alarm["Namespace"], alarm["MetricName"], alarm["Threshold"]) == (namespace, metric, threshold), name
        assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
        assert alarm["TreatMissingData"] == "notBreaching"
        assert len(alarm["Dimensions"]) == 1, name


def test_dashboard_is_named_after_the_stack_and_shows_the_alarms(resources: dict, settings: StackSettings) -> None:
    """The dashboard exists under the stack's name and references every alarm."""
    _, dashboard = only(resources, "AWS::CloudWatch::Dashboard")
    assert dashboard["Properties"]["DashboardName"] == settings.name
    body = json.dumps(dashboard["Properties"]["DashboardBody"])
    for alarm_id in of_type(resources, "AWS::CloudWatch::Alarm"):
        assert alarm_id in body


def test_every_resource_has_a_deliberate_removal_policy(resources: dict) -> None:
    """Stateful resources say Delete explicitly: deleting the stack removes everything by default."""
    stateful = ("AWS::KMS::Key", "AWS::DynamoDB::Table", "AWS::SQS::Queue", "AWS::Logs::LogGroup",
                "AWS::Kinesis::Stream", "AWS::SecretsManager::Secret")  # fmt: skip
    for lid, res in resources.items():
        if res["Type"] in stateful:
            assert res.get("DeletionPolicy") == "Delete", lid
            assert res.get("UpdateReplacePolicy") == "Delete", lid


def test_on_demand_stream_and_retained_data_variant(synthesized: Synthesized) -> None:
    """shard_count=None gives an on-demand stream; retain_data keeps the table and the key on deletion."""
    resources = synthesized.template_dict(synthesized.variant_stack)["Resources"]
    _, stream = only(resources, "AWS::Kinesis::Stream")
    assert stream["Properties"]["StreamModeDetails"] == {"StreamMode": "ON_DEMAND"}
    assert "ShardCount" not in stream["Properties"]
    assert stream["Properties"]["RetentionPeriodHours"] == VARIANT_SETTINGS.stream.retention_hours
    assert stream["Properties"]["Name"] == VARIANT_SETTINGS.stream_name
    for cfn_type in ("AWS::DynamoDB::Table", "AWS::KMS::Key"):
        _, res = only(resources, cfn_type)
        assert (res["DeletionPolicy"], res["UpdateReplacePolicy"]) == ("Retain", "Retain"), cfn_type
