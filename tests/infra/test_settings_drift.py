"""The "cannot drift" check: every name and setting in the templates comes from infra.settings.

Each settings dataclass is walked field by field, so a field added to infra/settings.py without being
wired into the stack fails here instead of silently differing between AWS and the embedded stack.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any

import pytest

from infra.settings import (
    EventSourceMappingSettings,
    FunctionSettings,
    StackSettings,
    StreamSettings,
    TableSettings,
)
from tests.infra.conftest import VARIANT_SETTINGS, Synthesized, only

# Where each setting lands in the template: (resource type, property getter). The value is compared with
# the setting itself (after `convert`, when CloudFormation spells it differently).
ESM_PROPERTIES = {
    "batch_size": "BatchSize",
    "maximum_batching_window_seconds": "MaximumBatchingWindowInSeconds",
    "starting_position": "StartingPosition",
    "parallelization_factor": "ParallelizationFactor",
    "bisect_batch_on_function_error": "BisectBatchOnFunctionError",
    "maximum_retry_attempts": "MaximumRetryAttempts",
    "maximum_record_age_seconds": "MaximumRecordAgeInSeconds",
}
FUNCTION_PROPERTIES = {"handler": "Handler", "memory_mb": "MemorySize", "timeout_seconds": "Timeout"}


def _props(resources: dict[str, Any], cfn_type: str) -> dict[str, Any]:
    props: dict[str, Any] = only(resources, cfn_type)[1]["Properties"]
    return props


@pytest.fixture(scope="module", params=["stack", "variant_stack"])
def case(request: pytest.FixtureRequest, synthesized: Synthesized) -> tuple[StackSettings, dict[str, Any]]:
    """(settings, resources) for the default stack and for a stack built from non-default settings."""
    stack = getattr(synthesized, request.param)
    assert stack.settings == (StackSettings() if request.param == "stack" else VARIANT_SETTINGS)
    return stack.settings, synthesized.template_dict(stack)["Resources"]


def test_resource_names_derive_from_the_stack_name(case: tuple[StackSettings, dict[str, Any]]) -> None:
    """Stream, table, function, queue, user, log group and dashboard carry the settings' names."""
    settings, resources = case
    assert _props(resources, "AWS::Kinesis::Stream")["Name"] == settings.stream_name
    assert _props(resources, "AWS::DynamoDB::Table")["TableName"] == settings.table_name
    assert _props(resources, "AWS::Lambda::Function")["FunctionName"] == settings.function_name
    assert _props(resources, "AWS::SQS::Queue")["QueueName"] == settings.dead_letter_queue_name
    assert _props(resources, "AWS::IAM::User")["UserName"] == settings.producer_user_name
    assert _props(resources, "AWS::Logs::LogGroup")["LogGroupName"] == f"/aws/lambda/{settings.function_name}"
    assert _props(resources, "AWS::CloudWatch::Dashboard")["DashboardName"] == settings.name


def test_every_event_source_mapping_setting_is_applied(case: tuple[StackSettings, dict[str, Any]]) -> None:
    """Each EventSourceMappingSettings field has its template property, with the same value."""
    settings, resources = case
    props = _props(resources, "AWS::Lambda::EventSourceMapping")
    values = asdict(settings.event_source_mapping)
    for f in fields(EventSourceMappingSettings):
        if f.name == "report_batch_item_failures":
            assert ("ReportBatchItemFailures" in props.get("FunctionResponseTypes", [])) is values[f.name]
            continue
        assert f.name in ESM_PROPERTIES, f"setting {f.name} is not wired into the event source mapping"
        assert props[ESM_PROPERTIES[f.name]] == values[f.name], f.name


def test_every_function_setting_is_applied(case: tuple[StackSettings, dict[str, Any]]) -> None:
    """Each FunctionSettings field reaches the function or its log group."""
    settings, resources = case
    props = _props(resources, "AWS::Lambda::Function")
    for f in fields(FunctionSettings):
        value = getattr(settings.function, f.name)
        if f.name == "log_retention_days":
            assert _props(resources, "AWS::Logs::LogGroup")["RetentionInDays"] == value
            continue
        assert f.name in FUNCTION_PROPERTIES, f"setting {f.name} is not wired into the function"
        assert props[FUNCTION_PROPERTIES[f.name]] == value, f.name
    env = props["Environment"]["Variables"]
    expected_env = settings.processor_environment("placeholder")
    assert set(env) == set(expected_env)
    assert all(env[k] == v for k, v in expected_env.items() if v != "placeholder")


def test_every_stream_and_table_setting_is_applied(case: tuple[StackSettings, dict[str, Any]]) -> None:
    """StreamSettings and TableSettings fields reach the stream and the table."""
    settings, resources = case
    stream = _props(resources, "AWS::Kinesis::Stream")
    table = _props(resources, "AWS::DynamoDB::Table")
    assert {f.name for f in fields(StreamSettings)} == {"shard_count", "retention_hours"}
    assert stream.get("ShardCount") == settings.stream.shard_count
    assert stream["RetentionPeriodHours"] == settings.stream.retention_hours
    assert {f.name for f in fields(TableSettings)} == {"hash_key", "range_key", "ttl_attribute", "ttl_days"}
    assert [k["AttributeName"] for k in table["KeySchema"]] == [settings.table.hash_key, settings.table.range_key]
    assert table["TimeToLiveSpecification"]["AttributeName"] == settings.table.ttl_attribute
    # ttl_days is the processor's business: it reaches it through the environment.
    assert _props(resources, "AWS::Lambda::Function")["Environment"]["Variables"]["TTL_DAYS"] == str(settings.table.ttl_days)
