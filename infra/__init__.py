"""The AWS CDK app for tweet-producer and the stack settings it shares with the embedded stack."""
