"""The `tweet-producer` command line and its helper commands (configure, table, sample), outside the daemon's runtime."""
