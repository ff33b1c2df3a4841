"""The processor function, its least-privilege execution role, its log group and its event source mapping."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.bundling import LAMBDA_ARCHITECTURE, LAMBDA_RUNTIME, processor_code
from infra.data import DataPlane
from infra.settings import StackSettings

# What Lambda's Kinesis poller calls with the function's role (shared-throughput consumer, no EFO).
KINESIS_READ_ACTIONS = (
    "kinesis:DescribeStream",
    "kinesis:DescribeStreamSummary",
    "kinesis:GetRecords",
    "kinesis:GetShardIterator",
    "kinesis:ListShards",
)
# The processor writes with BatchWriteItem; PutItem is the same right on a single item.
TABLE_WRITE_ACTIONS = ("dynamodb:BatchWriteItem", "dynamodb:PutItem")
LOG_ACTIONS = ("logs:CreateLogStream", "logs:PutLogEvents")

_LOG_RETENTION = {
    1: logs.RetentionDays.ONE_DAY,
    3: logs.RetentionDays.THREE_DAYS,
    5: logs.RetentionDays.FIVE_DAYS,
    7: logs.RetentionDays.ONE_WEEK,
    14: logs.RetentionDays.TWO_WEEKS,
    30: logs.RetentionDays.ONE_MONTH,
    60: logs.RetentionDays.TWO_MONTHS,
    90: logs.RetentionDays.THREE_MONTHS,
    180: logs.RetentionDays.SIX_MONTHS,
    365: logs.RetentionDays.ONE_YEAR,
}


def log_retention(days: int) -> logs.RetentionDays:
    """CloudWatch accepts only some retention periods; anything else is a settings error, said early."""
    try:
        return _LOG_RETENTION[days]
    except KeyError:
        raise ValueError(
            f"function.log_retention_days={days} is not a CloudWatch Logs retention period; use one of {sorted(_LOG_RETENTION)}"
        ) from None


class Processing(Construct):
    """`<stack>-DDBEventProcessor`: reads the stream in batches and writes the table."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: StackSettings,
        data: DataPlane,
        install_requirements: bool,
    ) -> None:
        super().__init__(scope, construct_id)
        fn_settings = settings.function

        # Created here rather than by Lambda so that its retention and removal are ours, and the role
        # needs no logs:CreateLogGroup.
        self.log_group = logs.LogGroup(
            self,
            "LogGroup",
            log_group_name=f"/aws/lambda/{settings.function_name}",
            retention=log_retention(fn_settings.log_retention_days),
            removal_policy=RemovalPolicy.DESTROY,
        )

        self.role = iam.Role(
            self,
            "ExecutionRole",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"Runs {settings.function_name}: reads one stream, writes one table and one queue",
        )
        # Every right is written out below; CDK's grant helpers (called by the event-source and
        # destination constructs) would add broader ones (ListStreams, SubscribeToShard, GetQueueUrl...).
        immutable_role = self.role.without_policy_updates()
        self.policy = iam.Policy(
            self,
            "ExecutionPolicy",
            roles=[self.role],
            statements=[
                iam.PolicyStatement(sid="ReadStream", actions=list(KINESIS_READ_ACTIONS), resources=[data.stream.stream_arn]),
                iam.PolicyStatement(sid="DecryptStream", actions=["kms:Decrypt"], resources=[data.key.key_arn]),
                iam.PolicyStatement(sid="WriteTable", actions=list(TABLE_WRITE_ACTIONS), resources=[data.table.table_arn]),
                iam.PolicyStatement(
                    sid="SendDeadLetters",
                    actions=["sqs:SendMessage"],
                    resources=[data.dead_letter_queue.queue_arn],
                ),
                iam.PolicyStatement(
                    sid="WriteLogs",
                    actions=list(LOG_ACTIONS),
                    # The log group's Arn attribute ends in ":*": its log streams, nothing else.
                    resources=[self.log_group.log_group_arn],
                ),
            ],
        )

        self.function = lambda_.Function(
            self,
            "Function",
            function_name=settings.function_name,
            description="Writes the Kinesis stream's events into the DynamoDB table",
            runtime=LAMBDA_RUNTIME,
            architecture=LAMBDA_ARCHITECTURE,
            handler=fn_settings.handler,
            code=processor_code(install_requirements=install_requirements),
            memory_size=fn_settings.memory_mb,
            timeout=Duration.seconds(fn_settings.timeout_seconds),
            role=immutable_role,
            log_group=self.log_group,
            environment=settings.processor_environment(data.dead_letter_queue.queue_url),
        )
        self.function.node.add_dependency(self.policy)

        esm = settings.event_source_mapping
        self.event_source_mapping = lambda_.EventSourceMapping(
            self,
            "StreamMapping",
            target=self.function,
            event_source_arn=data.stream.stream_arn,
            batch_size=esm.batch_size,
            max_batching_window=Duration.seconds(esm.maximum_batching_window_seconds),
            starting_position=lambda_.StartingPosition(esm.starting_position),
            parallelization_factor=esm.parallelization_factor,
            bisect_batch_on_error=esm.bisect_batch_on_function_error,
            retry_attempts=esm.maximum_retry_attempts,
            max_record_age=Duration.seconds(esm.maximum_record_age_seconds),
            report_batch_item_failures=esm.report_batch_item_failures,
            on_failure=sources.SqsDlq(data.dead_letter_queue),
        )
        # Lambda checks the role's rights when the mapping is created: the policy must exist first.
        self.event_source_mapping.node.add_dependency(self.policy)
