"""Names of the CloudFormation outputs the stack exports and `configure --from-stack` reads.

Kept free of aws_cdk imports: the daemon imports this module to read a deployed stack.
"""

from __future__ import annotations

OUTPUT_STREAM_NAME = "StreamName"
OUTPUT_STREAM_ARN = "StreamArn"
OUTPUT_REGION = "Region"
OUTPUT_ACCESS_KEY_ID = "ProducerAccessKeyId"
# The ARN of the Secrets Manager secret holding the producer's credentials; the secret itself is never
# an output (the 2015 sample printed SecretAccessKey in plain text; anyone with DescribeStacks read it).
OUTPUT_SECRET_ARN = "ProducerSecretArn"  # noqa: S105 (an output name, not a secret)
OUTPUT_TABLE_NAME = "TableName"
OUTPUT_DEAD_LETTER_QUEUE_URL = "DeadLetterQueueUrl"

ALL_OUTPUTS = (
    OUTPUT_STREAM_NAME,
    OUTPUT_STREAM_ARN,
    OUTPUT_REGION,
    OUTPUT_ACCESS_KEY_ID,
    OUTPUT_SECRET_ARN,
    OUTPUT_TABLE_NAME,
    OUTPUT_DEAD_LETTER_QUEUE_URL,
)

# JSON keys of the producer secret's value: {"AccessKeyId": "...", "SecretAccessKey": "..."}.
SECRET_KEY_ACCESS_KEY_ID = "AccessKeyId"  # noqa: S105 (a JSON key name)
SECRET_KEY_SECRET_ACCESS_KEY = "SecretAccessKey"  # noqa: S105 (a JSON key name)
