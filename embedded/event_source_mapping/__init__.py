"""A local stand-in for Lambda's Kinesis event source mapping: polls shards, batches, invokes, checkpoints."""
