"""The benchmark's reference producers, each run as `python -m bench.kinesis_cases CASE URL FILE COUNT`, and
the tweets file they all read.

- `boto3-loop`: what a plain script does: read a line, parse it for the author id, collect 500, one
  `put_records`, re-send the entries that failed (at once, as such loops do), one thread.
- `aws-sample`: the AWS sample producer's loop: one `put_record` per tweet, partition key = screen name.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

STREAM = "bench-Stream"
REGION = "us-east-1"
PUT_RECORDS_MAX = 500
SAMPLE_SEED = 11
# The figures are for ~1 KB tweets: a generated file whose average is outside this band is padded
# (or the bench says so) rather than measured as something else.
TARGET_AVERAGE_BYTES = 1024
AVERAGE_TOLERANCE = 0.25
PAD_FIELD = "bench_padding"


def tweets_file(path: Path, records: int, *, spread_keys: bool = False) -> tuple[Path, float]:
    """`records` sample X v2 tweets (cli/sample.py) at `path`, padded towards ~1 KB each when the generator's
    are far smaller; returns the path and the average line length in bytes (without the newline).

    `spread_keys`: each tweet gets an author of its own (the author id with the record's index appended),
    so the partition keys spread evenly over the shards. The sample's 240 authors do not: on 4 shards the
    busiest takes about 31 % of the records, which alone caps any in-order producer near 80 % of the
    stream's capacity (see `shard_shares`)."""
    from cli.sample import sample_lines

    lines = sample_lines(records, SAMPLE_SEED)
    if spread_keys:
        lines = [_own_author(line, index) for index, line in enumerate(lines)]
    average = sum(map(len, lines)) / max(1, len(lines))
    if average < TARGET_AVERAGE_BYTES * (1 - AVERAGE_TOLERANCE):
        # A padding field inside the JSON object keeps each line a valid tweet with the same author.
        framing = len(f',"{PAD_FIELD}":""')
        padding = b"x" * max(0, round(TARGET_AVERAGE_BYTES - average - framing))
        lines = [line[:-1] + b',"' + PAD_FIELD.encode() + b'":"' + padding + b'"}' for line in lines]
        average = sum(map(len, lines)) / max(1, len(lines))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path, average


def _own_author(line: bytes, index: int) -> bytes:
    author = json.loads(line)["data"]["author_id"]
    # Quoted, so the id is replaced where it is a value (data.author_id, includes.users[].id), not inside text.
    return line.replace(f'"{author}"'.encode(), f'"{author}{index:07d}"'.encode())


def shard_shares(path: Path, shards: int) -> list[float]:
    """The share of the file's records each of `shards` even hash-key ranges gets, keyed by data.author_id
    (the daemon's default partition key for X v2 tweets)."""
    counts = [0] * shards
    step = 2**128 // shards
    with path.open("rb") as lines:
        for line in lines:
            key = json.loads(line)["data"]["author_id"].encode()
            digest = int.from_bytes(hashlib.md5(key, usedforsecurity=False).digest(), "big")
            counts[min(shards - 1, digest // step)] += 1
    total = max(1, sum(counts))
    return [count / total for count in counts]


def _client(endpoint_url: str) -> Any:
    import boto3

    # Credentials from the environment the driver sets (dummy static keys).
    return boto3.client("kinesis", endpoint_url=endpoint_url, region_name=REGION)


def boto3_loop(endpoint_url: str, path: Path, count: int) -> None:
    client = _client(endpoint_url)
    batch: list[dict[str, Any]] = []
    with path.open("rb") as lines:
        for index, line in enumerate(lines):
            if index >= count:
                break
            data = line.rstrip(b"\n")
            batch.append({"Data": data, "PartitionKey": json.loads(data)["data"]["author_id"]})
            if len(batch) == PUT_RECORDS_MAX:
                _put_all(client, batch)
                batch = []
    if batch:
        _put_all(client, batch)


def _put_all(client: Any, batch: list[dict[str, Any]]) -> None:
    while batch:
        answer = client.put_records(StreamName=STREAM, Records=batch)
        if not answer["FailedRecordCount"]:
            return
        batch = [entry for entry, result in zip(batch, answer["Records"], strict=True) if "ErrorCode" in result]


def aws_sample(endpoint_url: str, path: Path, count: int) -> None:
    client = _client(endpoint_url)
    with path.open("rb") as lines:
        for index, line in enumerate(lines):
            if index >= count:
                break
            data = line.rstrip(b"\n")
            tweet = json.loads(data)
            client.put_record(StreamName=STREAM, Data=data, PartitionKey=tweet["includes"]["users"][0]["username"])


CASES = {"boto3-loop": boto3_loop, "aws-sample": aws_sample}


def main(argv: list[str]) -> int:
    if len(argv) != 4 or argv[0] not in CASES:
        print(f"usage: python -m bench.kinesis_cases {{{'|'.join(CASES)}}} URL FILE COUNT", file=sys.stderr)
        return 2
    case, url, path, count = argv
    CASES[case](url, Path(path), int(count))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
