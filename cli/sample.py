"""Deterministic sample tweets in the X API v2 filtered-stream shape, in many languages and scripts.

The bundled data/sample_tweets.jsonl is `write_sample(path, 3000, 2015)`; a test regenerates it and
compares bytes, so the file and this code cannot drift. The generator itself lives in
sources/synthetic_x.py, shared with the synthetic source (`kind: tweets`).
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path

from sources.synthetic_base import Timestamps, encode_json
from sources.synthetic_x import Rng, accounts, tweet

# The sample's timeline: one tweet a second from here, each at a random millisecond of its second.
_START_MS = int(datetime(2026, 11, 1, 12, 0, 0, tzinfo=UTC).timestamp() * 1000)
_MS_PER_TWEET = 1000
_STAMPS = Timestamps(_START_MS, _MS_PER_TWEET)


def _created_at(rng: Rng, index: int) -> str:
    return _STAMPS.iso(_START_MS + index * _MS_PER_TWEET + rng.randrange(_MS_PER_TWEET))


def sample_lines(count: int, seed: int) -> list[bytes]:
    """`count` tweets as JSON lines (UTF-8, no trailing newline), identical for the same seed."""
    rng = random.Random(seed)
    users = accounts(rng)
    return [encode_json(tweet(rng, i, users, _created_at)).encode() for i in range(count)]


def write_sample(path: Path, count: int, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(line + b"\n" for line in sample_lines(count, seed)))
