"""The synthesized template deploys into moto's CloudFormation, and the resources it makes are the stack's."""

from __future__ import annotations

import json
from typing import Any

import pytest

from infra import outputs
from infra.settings import StackSettings
from tests.infra.conftest import LocalAws, Synthesized

pytestmark = pytest.mark.slow


def _outputs(deployed: dict[str, Any]) -> dict[str, str]:
    return {o["OutputKey"]: o["OutputValue"] for o in deployed["Outputs"]}


def test_every_resource_of_the_template_is_created(
    deployed: dict[str, Any], synthesized: Synthesized, local_aws: LocalAws
) -> None:
    """CREATE_COMPLETE, with one created resource per template resource."""
    template = synthesized.template_dict(synthesized.local_stack)
    assert "Rules" not in template and "BootstrapVersion" not in template.get("Parameters", {})
    created = local_aws.client("cloudformation").describe_stack_resources(StackName=deployed["StackName"])
    statuses = {r["LogicalResourceId"]: r["ResourceStatus"] for r in created["StackResources"]}
    assert statuses == dict.fromkeys(template["Resources"], "CREATE_COMPLETE")


def test_outputs_name_the_stacks_resources(deployed: dict[str, Any], local_aws: LocalAws, settings: StackSettings) -> None:
    """The outputs hold the settings' names, the region, and the ARN of a secret, not a secret."""
    found = _outputs(deployed)
    assert set(found) == set(outputs.ALL_OUTPUTS)
    assert found[outputs.OUTPUT_STREAM_NAME] == settings.stream_name
    assert found[outputs.OUTPUT_TABLE_NAME] == settings.table_name
    assert found[outputs.OUTPUT_REGION] == local_aws.region
    assert found[outputs.OUTPUT_STREAM_ARN].endswith(f":stream/{settings.stream_name}")
    assert found[outputs.OUTPUT_SECRET_ARN].startswith(f"arn:aws:secretsmanager:{local_aws.region}:")
    assert found[outputs.OUTPUT_DEAD_LETTER_QUEUE_URL].endswith(f"/{settings.dead_letter_queue_name}")


def test_stream_and_table_exist_with_the_settings(deployed: dict[str, Any], local_aws: LocalAws, settings: StackSettings) -> None:
    """The stream has the settings' shards and retention; the table has their keys."""
    summary = local_aws.client("kinesis").describe_stream_summary(StreamName=settings.stream_name)
    description = summary["StreamDescriptionSummary"]
    assert description["OpenShardCount"] == settings.stream.shard_count
    assert description["RetentionPeriodHours"] == settings.stream.retention_hours
    table = local_aws.client("dynamodb").describe_table(TableName=settings.table_name)["Table"]
    assert [(k["AttributeName"], k["KeyType"]) for k in table["KeySchema"]] == [
        (settings.table.hash_key, "HASH"), (settings.table.range_key, "RANGE"),
    ]  # fmt: skip


def test_function_and_mapping_are_wired_to_the_stream_and_queue(
    deployed: dict[str, Any], local_aws: LocalAws, settings: StackSettings
) -> None:
    """The function's environment resolves to the real queue URL; the mapping reads the real stream."""
    found = _outputs(deployed)
    lam = local_aws.client("lambda")
    config = lam.get_function(FunctionName=settings.function_name)["Configuration"]
    assert config["Handler"] == settings.function.handler
    assert config["Environment"]["Variables"] == settings.processor_environment(found[outputs.OUTPUT_DEAD_LETTER_QUEUE_URL])
    mappings = lam.list_event_source_mappings(FunctionName=settings.function_name)["EventSourceMappings"]
    assert len(mappings) == 1
    mapping = mappings[0]
    assert mapping["EventSourceArn"] == found[outputs.OUTPUT_STREAM_ARN]
    assert mapping["BatchSize"] == settings.event_source_mapping.batch_size
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    queue_arn = local_aws.client("sqs").get_queue_attributes(
        QueueUrl=found[outputs.OUTPUT_DEAD_LETTER_QUEUE_URL], AttributeNames=["QueueArn"]
    )["Attributes"]["QueueArn"]
    assert mapping["DestinationConfig"]["OnFailure"]["Destination"] == queue_arn


def test_producer_secret_holds_the_users_access_key(
    deployed: dict[str, Any], local_aws: LocalAws, settings: StackSettings
) -> None:
    """The secret's JSON names the same access key as the output, and that key belongs to the producer user."""
    found = _outputs(deployed)
    value = json.loads(
        local_aws.client("secretsmanager").get_secret_value(SecretId=found[outputs.OUTPUT_SECRET_ARN])["SecretString"]
    )
    assert value[outputs.SECRET_KEY_ACCESS_KEY_ID] == found[outputs.OUTPUT_ACCESS_KEY_ID]
    assert len(value[outputs.SECRET_KEY_SECRET_ACCESS_KEY]) >= 20
    iam = local_aws.client("iam")
    keys = iam.list_access_keys(UserName=settings.producer_user_name)["AccessKeyMetadata"]
    assert [k["AccessKeyId"] for k in keys] == [found[outputs.OUTPUT_ACCESS_KEY_ID]]
    policies = iam.list_user_policies(UserName=settings.producer_user_name)["PolicyNames"]
    assert len(policies) == 1
    document = iam.get_user_policy(UserName=settings.producer_user_name, PolicyName=policies[0])["PolicyDocument"]
    actions = {a for s in document["Statement"] for a in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])}
    assert actions == {"kinesis:PutRecord", "kinesis:PutRecords", "kinesis:ListShards",
                       "kinesis:DescribeStreamSummary", "kms:GenerateDataKey"}  # fmt: skip


def test_alarms_and_dashboard_exist(deployed: dict[str, Any], local_aws: LocalAws, settings: StackSettings) -> None:
    """The five alarms and the dashboard were created under the stack's names."""
    cloudwatch = local_aws.client("cloudwatch")
    names = {a["AlarmName"] for a in cloudwatch.describe_alarms(AlarmNamePrefix=f"{settings.name}-")["MetricAlarms"]}
    assert len(names) == 5
    assert settings.name in {d["DashboardName"] for d in cloudwatch.list_dashboards()["DashboardEntries"]}
