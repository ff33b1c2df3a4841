"""Seeded random failure scripts: whatever Kinesis answers, every entry ends in exactly one list, correctly."""

from __future__ import annotations

import base64
import random
from collections.abc import Callable
from typing import Any

import pytest

from sinks.base import Record
from sinks.kinesis import KinesisSink
from sinks.kinesis.retry import REASON_PUT_REJECTED, REASON_RETRIES_EXHAUSTED
from tests.fakes import Reply
from tests.sinks.conftest import ScriptedKinesis, accept_all, assert_accounted, deliver

RETRIABLE_ENTRY_CODES = ["ProvisionedThroughputExceededException", "InternalFailure"]
# Per-entry codes about the record itself (stream-level ones, like KMS*, hold records: see test_kinesis_retry).
PERMANENT_ENTRY_CODES = ["InvalidArgumentException", "ValidationException"]
WHOLE_CALL_REPLIES = [
    Reply.error("ProvisionedThroughputExceededException", 400),
    Reply.error("InternalFailure", 500),
    Reply(drop_connection=True),
]


class Chaos:
    """Answers each PutRecords at random (seeded) and remembers what it accepted and what it last refused."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.accepted: list[tuple[bytes, str]] = []
        self.last_code: dict[tuple[bytes, str], str] = {}

    def __call__(self, body: dict[str, Any]) -> Reply | dict[str, Any]:
        pairs = [(base64.b64decode(r["Data"]), r["PartitionKey"]) for r in body["Records"]]
        if self.rng.random() < 0.2:
            reply = self.rng.choice(WHOLE_CALL_REPLIES)
            for pair in pairs:
                self.last_code[pair] = reply.error_code or "dropped"
            return reply
        response = accept_all(body)
        for position, pair in enumerate(pairs):
            roll = self.rng.random()
            if roll < 0.5:
                self.accepted.append(pair)
                continue
            codes = PERMANENT_ENTRY_CODES if roll > 0.9 else RETRIABLE_ENTRY_CODES
            code = self.rng.choice(codes)
            self.last_code[pair] = code
            response["Records"][position] = {"ErrorCode": code, "ErrorMessage": "chaos"}
            response["FailedRecordCount"] += 1
        return response


@pytest.mark.parametrize("seed", range(12))
def test_every_entry_ends_in_exactly_one_list_whatever_the_answers(
    seed: int,
    kinesis_fake: Callable[..., ScriptedKinesis],
    make_sink: Callable[..., KinesisSink],
    make_records: Callable[..., list[Record]],
) -> None:
    """sent == what the endpoint accepted (once each); failed carry the right reason for their last refusal."""
    chaos = Chaos(seed)
    max_attempts = random.Random(seed).randint(1, 6)
    fake = kinesis_fake(*[chaos] * 50)
    sink = make_sink(fake.server.endpoint_url, seed=seed, retry={"max_attempts": max_attempts})
    batch = [sink.prepare(r) for r in make_records(random.Random(seed).randint(1, 40))]
    result = deliver(sink, batch)
    assert_accounted(batch, result)
    assert not result.unsent
    assert len(chaos.accepted) == len(set(chaos.accepted))  # nothing accepted was ever sent again
    assert sorted((e.record.data, e.partition_key) for e in result.sent) == sorted(chaos.accepted)
    assert len(fake.requests()) <= max_attempts
    for entry, reason, detail in result.failed:
        code = chaos.last_code[(entry.record.data, entry.partition_key)]
        if code in PERMANENT_ENTRY_CODES:
            assert (reason, detail) == (REASON_PUT_REJECTED, f"{code}: chaos")
        else:
            assert reason == REASON_RETRIES_EXHAUSTED and f"{max_attempts} attempts" in detail
