"""cdk-nag AwsSolutions findings reviewed and accepted, each with its reason.

cdk-nag 3 reads CDK's `Validations.of(construct).acknowledge(...)`; an acknowledgment covers one rule on
one construct and its children, so each is attached to the narrowest construct that raises it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aws_cdk import Acknowledgment, Validations
from constructs import IConstruct

if TYPE_CHECKING:
    from infra.stack import PipelineStack

NAG_PREFIX = "AwsSolutions::"


def _acknowledge(construct: IConstruct, rule: str, reason: str) -> None:
    Validations.of(construct).acknowledge(Acknowledgment(id=f"{NAG_PREFIX}{rule}", reason=reason))


def suppress_reviewed_findings(stack: PipelineStack) -> None:
    """Attach the reviewed acknowledgments to the stack's resources."""
    _acknowledge(
        stack.data.stream,
        "AwsSolutions-KDS3",
        "A customer managed key is deliberate: the producer user is granted kms:GenerateDataKey on this key "
        "only, and the key is deleted with the stack; aws/kinesis cannot be scoped per stack. Cost: one key.",
    )
    _acknowledge(
        stack.data.dead_letter_queue,
        "AwsSolutions-SQS3",
        "This queue is itself the dead-letter destination (the event source mapping's on-failure "
        "destination and the processor's poison-record queue); Lambda destinations are not a RedrivePolicy, "
        "so the rule cannot see that. A DLQ for the DLQ would only move the same messages again.",
    )
    _acknowledge(
        stack.producer.secret,
        "AwsSolutions-SMG4",
        "The secret holds an IAM user's access key, which Secrets Manager cannot rotate without a custom "
        "rotation function; docs/deploy.md describes rotating it by replacing the AccessKey resource and "
        "re-running `configure --from-stack`.",
    )
