"""The tweet-producer pipeline stack: stream -> processor function -> table, with the producer's user."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Stack
from constructs import Construct

from infra import outputs
from infra.data import DataPlane
from infra.monitoring import Monitoring
from infra.nag import suppress_reviewed_findings
from infra.processing import Processing
from infra.producer import Producer
from infra.settings import StackSettings


class PipelineStack(Stack):
    """Every resource of one deployment; every name and setting comes from `settings`."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: StackSettings,
        install_requirements: bool = True,
        retain_data: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            scope,
            construct_id,
            stack_name=settings.name,
            description="tweet-producer: Kinesis stream, DynamoDB table, Lambda event processor, producer user",
            **kwargs,
        )
        self.settings = settings
        self.data = DataPlane(self, "Data", settings=settings, retain_data=retain_data)
        self.processing = Processing(
            self, "Processing", settings=settings, data=self.data, install_requirements=install_requirements
        )
        self.producer = Producer(self, "Producer", settings=settings, data=self.data)
        self.monitoring = Monitoring(self, "Monitoring", settings=settings, data=self.data, processing=self.processing)

        for key, value, what in (
            (outputs.OUTPUT_STREAM_NAME, self.data.stream.stream_name, "Kinesis stream the producer writes"),
            (outputs.OUTPUT_STREAM_ARN, self.data.stream.stream_arn, "ARN of that stream"),
            (outputs.OUTPUT_REGION, self.region, "Region of the stack"),
            (outputs.OUTPUT_ACCESS_KEY_ID, self.producer.access_key.access_key_id, "Producer user's access key id"),
            (outputs.OUTPUT_SECRET_ARN, self.producer.secret.secret_arn, "Secret holding the producer's key"),
            (outputs.OUTPUT_TABLE_NAME, self.data.table.table_name, "DynamoDB table the processor writes"),
            (outputs.OUTPUT_DEAD_LETTER_QUEUE_URL, self.data.dead_letter_queue.queue_url, "Dead-letter queue"),
        ):
            CfnOutput(self, key, value=value, description=what)

        suppress_reviewed_findings(self)
