"""The embedded stack: the whole AWS pipeline on 127.0.0.1, for users without an AWS account.

moto's server stands in for Kinesis, DynamoDB and SQS; the stack's resources are created from
`infra.settings` (the definition the CDK stack deploys); a local event source mapping (event_source_mapping/) invokes the
processor's Lambda handler in-process with events shaped exactly like Lambda's.
"""
