"""The tweet-producer daemon: config, buffering, supervision, metrics, the CLI and the embedded stack."""
