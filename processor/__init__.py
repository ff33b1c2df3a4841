"""The event processor: the Lambda function that turns Kinesis records into DynamoDB items.

Deployed alone (see infra/bundling.py): it imports nothing from daemon/, sources/, sinks/, infra/ or
aws_cdk. Its third-party packages are listed in processor/requirements.txt. Entry point:
`processor.handler.handler(event, context)`.
"""
