"""The producer's IAM user: it may only put records into this stream; its secret lives in Secrets Manager."""

from __future__ import annotations

from aws_cdk import RemovalPolicy, SecretValue
from aws_cdk import aws_iam as iam
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from infra.data import DataPlane
from infra.outputs import SECRET_KEY_ACCESS_KEY_ID, SECRET_KEY_SECRET_ACCESS_KEY
from infra.settings import StackSettings

# What the daemon's Kinesis sink calls: PutRecords (and PutRecord), plus the shard map and stream summary
# it reads to aggregate per shard and to check the stream on start. Nothing that reads records.
PRODUCER_STREAM_ACTIONS = (
    "kinesis:PutRecord",
    "kinesis:PutRecords",
    "kinesis:ListShards",
    "kinesis:DescribeStreamSummary",
)
# Writing to a KMS-encrypted stream needs a data key from the stream's key; reading would need Decrypt.
PRODUCER_KEY_ACTIONS = ("kms:GenerateDataKey",)


class Producer(Construct):
    """`<stack>-producer`, its access key, and the secret holding that key."""

    def __init__(self, scope: Construct, construct_id: str, *, settings: StackSettings, data: DataPlane) -> None:
        super().__init__(scope, construct_id)
        self.user = iam.User(self, "User", user_name=settings.producer_user_name)
        self.policy = iam.Policy(
            self,
            "Policy",
            users=[self.user],
            statements=[
                iam.PolicyStatement(sid="PutRecords", actions=list(PRODUCER_STREAM_ACTIONS), resources=[data.stream.stream_arn]),
                iam.PolicyStatement(sid="EncryptRecords", actions=list(PRODUCER_KEY_ACTIONS), resources=[data.key.key_arn]),
            ],
        )
        self.access_key = iam.AccessKey(self, "AccessKey", user=self.user)
        self.secret = secretsmanager.Secret(
            self,
            "Secret",
            description=f"Access key of the {settings.producer_user_name} IAM user (Kinesis put only)",
            secret_object_value={
                # The key id is not secret (it is also an output); keeping both here makes the secret usable alone.
                SECRET_KEY_ACCESS_KEY_ID: SecretValue.unsafe_plain_text(self.access_key.access_key_id),
                SECRET_KEY_SECRET_ACCESS_KEY: self.access_key.secret_access_key,
            },
            # The key it holds dies with the user when the stack is deleted: nothing to keep.
            removal_policy=RemovalPolicy.DESTROY,
        )
