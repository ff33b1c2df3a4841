"""The stateful resources: the KMS key, the Kinesis stream, the DynamoDB table and the dead-letter queue."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_kinesis as kinesis
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.settings import StackSettings

# A deleted key stays recoverable for this long (AWS allows 7-30 days); the shortest, since deleting the
# stack is meant to remove everything, and the stream's data it protected is gone with the stream anyway.
KEY_PENDING_WINDOW_DAYS = 7
# The dead-letter queue keeps failed-batch records for SQS's maximum, 14 days, so there is time to look.
DEAD_LETTER_RETENTION_DAYS = 14


class DataPlane(Construct):
    """The stream the producer writes, the table the processor fills, and where failures go."""

    def __init__(self, scope: Construct, construct_id: str, *, settings: StackSettings, retain_data: bool) -> None:
        super().__init__(scope, construct_id)
        # DESTROY by default: deleting the stack removes everything (as the original sample did);
        # `-c retainData=true` keeps the table and the stream's key for a deployment whose data matters.
        data_policy = RemovalPolicy.RETAIN if retain_data else RemovalPolicy.DESTROY

        self.key = kms.Key(
            self,
            "StreamKey",
            description=f"Encrypts the {settings.stream_name} Kinesis stream",
            enable_key_rotation=True,
            pending_window=Duration.days(KEY_PENDING_WINDOW_DAYS),
            removal_policy=data_policy,
        )

        shards = settings.stream.shard_count
        self.stream = kinesis.Stream(
            self,
            "Stream",
            stream_name=settings.stream_name,
            stream_mode=kinesis.StreamMode.PROVISIONED if shards else kinesis.StreamMode.ON_DEMAND,
            shard_count=shards,
            retention_period=Duration.hours(settings.stream.retention_hours),
            encryption=kinesis.StreamEncryption.KMS,
            encryption_key=self.key,
            # A stream holds at most its retention period of records that were already delivered to the
            # table: nothing lasting is lost with it.
            removal_policy=RemovalPolicy.DESTROY,
        )

        self.table = dynamodb.Table(
            self,
            "Table",
            table_name=settings.table_name,
            partition_key=dynamodb.Attribute(name=settings.table.hash_key, type=dynamodb.AttributeType.STRING),
            sort_key=dynamodb.Attribute(name=settings.table.range_key, type=dynamodb.AttributeType.STRING),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(point_in_time_recovery_enabled=True),
            # The AWS-owned-by-account key (aws/dynamodb): encrypted, and no KMS charge per request.
            encryption=dynamodb.TableEncryption.AWS_MANAGED,
            time_to_live_attribute=settings.table.ttl_attribute,
            removal_policy=data_policy,
        )

        self.dead_letter_queue = sqs.Queue(
            self,
            "DeadLetterQueue",
            queue_name=settings.dead_letter_queue_name,
            # SQS-managed encryption: no key to pay for, and no KMS permission needed by senders.
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=Duration.days(DEAD_LETTER_RETENTION_DAYS),
            # Its messages describe failures that also raised an alarm; they go with the stack.
            removal_policy=RemovalPolicy.DESTROY,
        )
