"""Properties of the wire format: the body is what botocore would send for any data and keys, and any answer
bytes end as a typed outcome (never an exception), read as botocore reads them."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

import botocore.session
from botocore.parsers import create_parser
from botocore.serialize import create_serializer
from hypothesis import given, settings
from hypothesis import strategies as st

from sinks.kinesis.service import CallFailed, FailureKind, PutResponse
from sinks.kinesis.wire import encode_put_records
from sinks.kinesis.wire_http import outcome_of_answer

_MODEL = botocore.session.get_session().get_service_model("kinesis").operation_model("PutRecords")
_SERIALIZER = create_serializer("json", include_validation=False)
_PARSER = create_parser("json")

# Keys: any valid Unicode (no lone surrogates: EntryBuilder replaces those), with JSON's awkward characters
# (quotes, backslashes, control characters, DEL, non-BMP) made likely.
_AWKWARD = st.sampled_from(['"', "\\", "\x00", "\x1f", "\n", "\x7f", "\u2028", "🐍", "é", "/"])
_KEYS = st.lists(st.one_of(_AWKWARD, st.characters(codec="utf-8")), min_size=1, max_size=16).map("".join)


@dataclass(slots=True)
class Rec:
    data: bytes
    partition_key: str
    explicit_hash_key: str | None = None


_RECORDS = st.lists(
    st.builds(Rec, st.binary(max_size=64), _KEYS, st.one_of(st.none(), st.integers(0, 2**128 - 1).map(str), _KEYS)),
    max_size=6,
)


def _botocore_body(stream: str, records: list[Rec]) -> bytes:
    items: list[dict[str, Any]] = []
    for record in records:
        item: dict[str, Any] = {"Data": record.data, "PartitionKey": record.partition_key}
        if record.explicit_hash_key is not None:
            item["ExplicitHashKey"] = record.explicit_hash_key
        items.append(item)
    body: bytes = _SERIALIZER.serialize_to_request({"StreamName": stream, "Records": items}, _MODEL)["body"]
    return body


@settings(max_examples=200, deadline=None)
@given(stream=_KEYS, records=_RECORDS)
def test_the_body_is_what_botocore_would_send(stream: str, records: list[Rec]) -> None:
    """For any data and keys the body parses to exactly botocore's request (same fields, same values), is
    ASCII like botocore's, and each Data decodes back to the record's bytes."""
    body = encode_put_records(stream, records)
    assert body.isascii()
    assert json.loads(body) == json.loads(_botocore_body(stream, records))
    assert [base64.b64decode(r["Data"]) for r in json.loads(body)["Records"]] == [r.data for r in records]


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
_RESULT = st.fixed_dictionaries(
    {},
    optional={
        "ShardId": st.text(max_size=8),
        "SequenceNumber": st.text(max_size=8),
        "ErrorCode": st.one_of(st.sampled_from(["", "ProvisionedThroughputExceededException", "InternalFailure"]),
                               st.text(max_size=8)),
        "ErrorMessage": st.one_of(st.none(), st.text(max_size=8)),
    },
)


@settings(max_examples=200, deadline=None)
@given(status=st.integers(100, 599), body=st.one_of(st.binary(max_size=200), _JSON.map(lambda v: json.dumps(v).encode())),
       records=st.integers(0, 5), error_type=st.one_of(st.none(), st.text(max_size=30)))
def test_any_answer_is_an_outcome(status: int, body: bytes, records: int, error_type: str | None) -> None:
    """Any status, body and error-type header give a PutResponse of exactly `records` positions (2xx only) or
    a CallFailed with a code; an INVALID call names only positions inside the request."""
    headers = {} if error_type is None else {"x-amzn-ErrorType": error_type}
    outcome = outcome_of_answer(status, body, headers, records, 0.01)
    if isinstance(outcome, PutResponse):
        assert 200 <= status <= 299
        assert len(outcome.shard_ids) == len(outcome.sequence_numbers) == records
        assert all(0 <= f.position < records for f in outcome.failures)
    else:
        assert isinstance(outcome, CallFailed) and outcome.code and outcome.latency_s == 0.01
        assert outcome.kind is FailureKind.MALFORMED if 200 <= status <= 299 else outcome.kind is not FailureKind.MALFORMED
        assert all(0 <= p < records for p, _ in outcome.invalid)


@settings(max_examples=200, deadline=None)
@given(results=st.lists(_RESULT, max_size=8), extra=st.integers(-1, 1))
def test_a_200_answer_reads_as_botocore_reads_it(results: list[dict[str, Any]], extra: int) -> None:
    """A 200 answer gives the failures, shard ids and sequence numbers KinesisService derives from botocore's
    parse of the same bytes; a count that does not match the request is MALFORMED."""
    body = json.dumps({"FailedRecordCount": 0, "Records": results}).encode()
    records = max(0, len(results) + extra)
    outcome = outcome_of_answer(200, body, {}, records, 0.0)
    parsed = _PARSER.parse({"body": body, "headers": {}, "status_code": 200}, _MODEL.output_shape)
    reference = parsed.get("Records") or []
    if len(reference) != records:
        assert isinstance(outcome, CallFailed) and outcome.kind is FailureKind.MALFORMED
        return
    assert isinstance(outcome, PutResponse)
    assert [(f.position, f.code, f.message) for f in outcome.failures] == [
        (p, str(r["ErrorCode"]), str(r.get("ErrorMessage", ""))) for p, r in enumerate(reference) if r.get("ErrorCode")]
    assert outcome.shard_ids == tuple(None if r.get("ErrorCode") else r.get("ShardId") for r in reference)
    assert outcome.sequence_numbers == tuple(None if r.get("ErrorCode") else r.get("SequenceNumber") for r in reference)
