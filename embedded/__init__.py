"""The embedded stack: the whole AWS pipeline on 127.0.0.1, for users without an AWS account.

moto's server stands in for Kinesis, DynamoDB and SQS; the stack's resources are created from
`infra.settings` (the definition the CDK stack deploys); a local event source mapping (event_source_mapping/) invokes the
processor in-process with events shaped exactly like Lambda's.

The stack never reads or changes the process environment: every client it makes, and the processor's
(`processor.handler.make_handler`), gets the local endpoint, the region and fixed dummy credentials
explicitly, so a user's AWS_PROFILE, keys or endpoint settings neither leak into it nor break it.
"""
