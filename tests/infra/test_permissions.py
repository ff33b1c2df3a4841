"""The two identities of the stack get exactly their rights: the processor's role and the producer user."""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Any

import pytest

from tests.infra.conftest import of_type, only

Statement = dict[str, Any]


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def allows(statements: list[Statement], action: str, resource: Any) -> bool:
    """Whether an Allow statement grants `action` on `resource` (a template expression such as a GetAtt).

    Wildcards in actions are honoured (IAM compares actions case-insensitively); a statement resource of
    "*" matches anything. There are no Deny statements in these policies (asserted below).
    """
    for statement in statements:
        actions = [a.lower() for a in _as_list(statement["Action"])]
        resources = _as_list(statement["Resource"])
        if any(fnmatchcase(action.lower(), a) for a in actions) and ("*" in resources or resource in resources):
            return True
    return False


def _policy_for(resources: dict[str, dict[str, Any]], key: str, target_id: str) -> dict[str, Any]:
    matches = [
        res["Properties"]
        for res in of_type(resources, "AWS::IAM::Policy").values()
        if {"Ref": target_id} in res["Properties"].get(key, [])
    ]
    assert len(matches) == 1, f"expected one policy attached to {target_id}"
    return matches[0]


@pytest.fixture(scope="module")
def refs(resources: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Template expressions for the resources the policies name."""
    stream_id, _ = only(resources, "AWS::Kinesis::Stream")
    key_id, _ = only(resources, "AWS::KMS::Key")
    table_id, _ = only(resources, "AWS::DynamoDB::Table")
    queue_id, _ = only(resources, "AWS::SQS::Queue")
    log_id, _ = only(resources, "AWS::Logs::LogGroup")
    return {
        "stream": {"Fn::GetAtt": [stream_id, "Arn"]},
        "key": {"Fn::GetAtt": [key_id, "Arn"]},
        "table": {"Fn::GetAtt": [table_id, "Arn"]},
        "queue": {"Fn::GetAtt": [queue_id, "Arn"]},
        "logs": {"Fn::GetAtt": [log_id, "Arn"]},
    }


@pytest.fixture(scope="module")
def role_statements(resources: dict[str, dict[str, Any]]) -> list[Statement]:
    role_id, _ = only(resources, "AWS::IAM::Role")
    statements: list[Statement] = _policy_for(resources, "Roles", role_id)["PolicyDocument"]["Statement"]
    return statements


@pytest.fixture(scope="module")
def user_statements(resources: dict[str, dict[str, Any]]) -> list[Statement]:
    user_id, _ = only(resources, "AWS::IAM::User")
    statements: list[Statement] = _policy_for(resources, "Users", user_id)["PolicyDocument"]["Statement"]
    return statements


def _grants(statements: list[Statement]) -> set[tuple[str, str]]:
    return {(a, repr(r)) for s in statements for a in _as_list(s["Action"]) for r in _as_list(s["Resource"])}


def test_evaluator_matches_wildcards_and_exact_resources() -> None:
    """The little policy evaluator the tests below rely on honours wildcards and resource scoping."""
    statements = [{"Effect": "Allow", "Action": ["kinesis:Get*"], "Resource": {"Ref": "A"}}]
    assert allows(statements, "kinesis:GetRecords", {"Ref": "A"})
    assert not allows(statements, "kinesis:GetRecords", {"Ref": "B"})
    assert not allows(statements, "kinesis:PutRecord", {"Ref": "A"})
    assert allows([{"Effect": "Allow", "Action": "*", "Resource": "*"}], "dynamodb:Scan", {"Ref": "T"})


def test_execution_role_is_assumable_by_lambda_only_and_has_no_managed_policy(resources: dict) -> None:
    """Only lambda.amazonaws.com assumes the role, and no managed policy widens it."""
    _, role = only(resources, "AWS::IAM::Role")
    statements = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert [s["Principal"] for s in statements] == [{"Service": "lambda.amazonaws.com"}]
    assert "ManagedPolicyArns" not in role["Properties"]
    assert "Policies" not in role["Properties"]


def test_execution_role_grants_exactly_read_stream_write_table_send_queue_write_logs(
    role_statements: list[Statement], refs: dict
) -> None:
    """The processor reads this stream (and decrypts it), writes this table, sends to this queue, logs."""
    expected = {
        *((f"kinesis:{a}", repr(refs["stream"])) for a in
          ("DescribeStream", "DescribeStreamSummary", "GetRecords", "GetShardIterator", "ListShards")),
        ("kms:Decrypt", repr(refs["key"])),
        ("dynamodb:BatchWriteItem", repr(refs["table"])),
        ("dynamodb:PutItem", repr(refs["table"])),
        ("sqs:SendMessage", repr(refs["queue"])),
        ("logs:CreateLogStream", repr(refs["logs"])),
        ("logs:PutLogEvents", repr(refs["logs"])),
    }  # fmt: skip
    assert _grants(role_statements) == expected
    assert all(s["Effect"] == "Allow" for s in role_statements)


def test_execution_role_cannot_read_the_table_or_write_the_stream(role_statements: list[Statement], refs: dict) -> None:
    """Least privilege: no table reads, no stream writes, no wildcard anywhere."""
    for action in ("dynamodb:Scan", "dynamodb:GetItem", "dynamodb:Query", "dynamodb:DeleteTable"):
        assert not allows(role_statements, action, refs["table"]), action
    for action in ("kinesis:PutRecord", "kinesis:PutRecords", "kinesis:DeleteStream"):
        assert not allows(role_statements, action, refs["stream"]), action
    assert "*" not in repr(_grants(role_statements)).replace("'*'", "")  # no action/resource wildcards


def test_producer_user_may_only_put_records_and_encrypt(user_statements: list[Statement], refs: dict) -> None:
    """The producer user gets PutRecord(s), ListShards, DescribeStreamSummary and GenerateDataKey only."""
    expected = {
        *((f"kinesis:{a}", repr(refs["stream"])) for a in
          ("PutRecord", "PutRecords", "ListShards", "DescribeStreamSummary")),
        ("kms:GenerateDataKey", repr(refs["key"])),
    }  # fmt: skip
    assert _grants(user_statements) == expected
    assert all(s["Effect"] == "Allow" for s in user_statements)


@pytest.mark.parametrize(
    "action",
    ["kinesis:GetRecords", "kinesis:GetShardIterator", "kinesis:SubscribeToShard", "kinesis:DescribeStream",
     "kinesis:DeleteStream", "kinesis:RegisterStreamConsumer"],
)  # fmt: skip
def test_producer_user_cannot_read_or_manage_the_stream(user_statements: list[Statement], refs: dict, action: str) -> None:
    """The producer user cannot read records from, or manage, the stream."""
    assert not allows(user_statements, action, refs["stream"])


@pytest.mark.parametrize(
    "action", ["dynamodb:Scan", "dynamodb:GetItem", "dynamodb:Query", "dynamodb:PutItem", "dynamodb:BatchWriteItem"]
)
def test_producer_user_cannot_touch_the_table(user_statements: list[Statement], refs: dict, action: str) -> None:
    """The producer user has no right at all on the table."""
    assert not allows(user_statements, action, refs["table"])
    assert not allows(user_statements, action, "*")


def test_producer_user_cannot_decrypt_and_has_no_other_policy(
    user_statements: list[Statement], refs: dict, resources: dict
) -> None:
    """No kms:Decrypt (it could read records it sniffed), no groups, no managed policies, one policy."""
    assert not allows(user_statements, "kms:Decrypt", refs["key"])
    _, user = only(resources, "AWS::IAM::User")
    assert set(user["Properties"]) <= {"UserName"}
    user_id, _ = only(resources, "AWS::IAM::User")
    policies = of_type(resources, "AWS::IAM::Policy").values()
    attached = [p for p in policies if {"Ref": user_id} in p["Properties"].get("Users", [])]
    assert len(attached) == 1
