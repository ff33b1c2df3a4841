"""FakeKinesis self-tests: KPL aggregates opened by the deaggregator, misroute detection, SigV4 checking."""

from __future__ import annotations

import hashlib
import http.client
import json
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import botocore.exceptions
import pytest
from aws_kinesis_agg.aggregator import RecordAggregator
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

from tests.fake_kinesis import (
    KPL_MAGIC,
    FakeKinesis,
    KinesisError,
    hash_key_of,
)
from tests.fake_kinesis_sigv4 import MAX_CLOCK_SKEW_S, check_signature
from tests.test_fake_kinesis import four_shard_fake, keyed, put, raw_post


@pytest.fixture
def fake() -> Iterator[FakeKinesis]:
    """A 4-shard fake, closed after the test; fails the test if the fake hit a defect of its own."""
    yield from four_shard_fake()


@pytest.fixture
def client(fake: FakeKinesis) -> Any:
    """A boto3 client for the fake, botocore's retries off."""
    return fake.client()


# --- a tiny KPL aggregate, encoded by hand (the format in /work/shared/reference.md) ---------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:  # a length-delimited protobuf field
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def kpl_aggregate(members: list[tuple[str, bytes]], explicit: dict[int, str] | None = None) -> bytes:
    """Magic + AggregatedRecord(partition_key_table, explicit_hash_key_table, records) + MD5 of the protobuf."""
    explicit = explicit or {}
    keys = list(dict.fromkeys(key for key, _ in members))
    hashes = list(dict.fromkeys(explicit.values()))
    body = b"".join(_field(1, key.encode()) for key in keys) + b"".join(_field(2, h.encode()) for h in hashes)
    for position, (key, data) in enumerate(members):
        record = _varint(1 << 3) + _varint(keys.index(key))
        if position in explicit:
            record += _varint(2 << 3) + _varint(hashes.index(explicit[position]))
        body += _field(3, record + _field(3, data))
    return KPL_MAGIC + body + hashlib.md5(body, usedforsecurity=False).digest()


# --- aggregation ----------------------------------------------------------------------------------------------


def test_user_records_open_a_hand_built_aggregate(fake: FakeKinesis, client: Any) -> None:
    """An aggregate of one shard's records comes back as its members (deaggregated), plain records as they are."""
    shard = fake.shards()[1]
    keys = fake.keys_in_shard(shard.shard_id, 3)
    members = [(keys[0], b"m0"), (keys[1], b"m1"), (keys[0], b"m2"), (keys[2], "ünï".encode())]
    aggregate = kpl_aggregate(members)
    put(client, fake, [(aggregate, keys[0])], ExplicitHashKey=str(hash_key_of(keys[0])))
    put(client, fake, [(b"plain", "p")])
    users = fake.user_records()
    assert [(u.partition_key, u.data, u.sub_index) for u in users[:4]] == [
        (key, data, i) for i, (key, data) in enumerate(members)]
    assert {u.shard_id for u in users[:4]} == {shard.shard_id}
    assert (users[4].data, users[4].sub_index, users[4].shard_id) == (b"plain", None, fake.shard_of(hash_key_of("p")))
    assert len(fake.records()) == 2
    assert fake.data_counts() == Counter([b"m0", b"m1", b"m2", "ünï".encode(), b"plain"])
    assert fake.misrouted_user_records() == []


def test_misrouted_user_records_are_the_members_outside_their_shard(fake: FakeKinesis, client: Any) -> None:
    """An aggregate mixing shards: the members whose hash is outside the shard it landed in are reported."""
    first, second = fake.shards()[:2]
    home = fake.keys_in_shard(first.shard_id, 2)
    away = fake.keys_in_shard(second.shard_id, 1)
    aggregate = kpl_aggregate([(home[0], b"h0"), (away[0], b"a0"), (home[1], b"h1")])
    put(client, fake, [(aggregate, home[0])])
    assert [(u.data, u.shard_id) for u in fake.misrouted_user_records()] == [(b"a0", first.shard_id)]


def test_member_explicit_hash_keys_decide_their_route(fake: FakeKinesis, client: Any) -> None:
    """A member with an explicit hash key is judged by it, a member without one by MD5 of its key."""
    first, second = fake.shards()[:2]
    home = fake.keys_in_shard(first.shard_id, 2)
    members = [(home[0], b"by-md5"), (home[1], b"pinned-away"), (home[0], b"pinned-home")]
    aggregate = kpl_aggregate(members, explicit={1: str(second.start), 2: str(first.start)})
    put(client, fake, [(aggregate, home[0])])
    assert [u.data for u in fake.misrouted_user_records()] == [b"pinned-away"]
    assert [u.hash_key for u in fake.user_records()] == [hash_key_of(home[0]), second.start, first.start]


def test_a_corrupt_aggregate_stays_one_record(fake: FakeKinesis, client: Any) -> None:
    """Magic bytes with a wrong MD5 trailer: the deaggregator keeps the record whole, so counts show the damage."""
    broken = kpl_aggregate([("k", b"m0"), ("k", b"m1")])[:-1] + b"\x00"
    put(client, fake, [(broken, "k")])
    assert [(u.data, u.sub_index) for u in fake.user_records()] == [(broken, None)]


# --- signatures ---------------------------------------------------------------------------------------------

KEY_ID, SECRET = "AKIDFAKEKINESIS", "not-a-real-secret"


def signed_request(fake: FakeKinesis, body: bytes, secret: str = SECRET) -> tuple[dict[str, str], bytes]:
    """A PutRecords request signed by botocore's SigV4 signer, as the wire client signs: headers and body."""
    request = AWSRequest(method="POST", url=fake.url + "/", data=body,
                         headers={"X-Amz-Target": "Kinesis_20131202.PutRecords", "Content-Type": "application/x-amz-json-1.1"})
    SigV4Auth(Credentials(KEY_ID, secret), "kinesis", "us-east-1").add_auth(request)
    return dict(request.headers.items()), body


def test_signatures_are_checked_when_credentials_are_given() -> None:
    """With credentials: boto3 with the right keys passes; a wrong secret, an unknown key or no signature are 400s."""
    with FakeKinesis(1, credentials={KEY_ID: SECRET}) as fake:
        assert put(fake.client(), fake, keyed(2))["FailedRecordCount"] == 0
        refusals = [(KEY_ID, "wrong", "InvalidSignatureException"), ("AKIDOTHER", SECRET, "UnrecognizedClientException")]
        for key, secret, code in refusals:
            client = boto3.client("kinesis", endpoint_url=fake.url, region_name="us-east-1", aws_access_key_id=key,
                                  aws_secret_access_key=secret, config=Config(retries={"total_max_attempts": 1}))
            with pytest.raises(botocore.exceptions.ClientError) as caught:
                put(client, fake, keyed(1, "x"))
            assert caught.value.response["Error"]["Code"] == code
        body = json.dumps({"StreamName": fake.stream, "Records": [{"Data": "eA==", "PartitionKey": "k"}]}).encode()
        assert raw_post(fake, "PutRecords", body)[2]["__type"] == "MissingAuthenticationTokenException"
        assert [r.data for r in fake.records()] == [b"r-0", b"r-1"]
        assert fake.stats().refused_signatures == 3


def test_a_body_changed_after_signing_is_refused() -> None:
    """A request signed by botocore's SigV4 passes as sent, and is refused once its body differs from what was signed."""
    with FakeKinesis(1, credentials={KEY_ID: SECRET}) as fake:
        body = json.dumps({"StreamName": fake.stream, "Records": [{"Data": "eA==", "PartitionKey": "k"}]}).encode()
        headers, _ = signed_request(fake, body)
        connection = http.client.HTTPConnection(fake.url.removeprefix("http://"), timeout=5)
        try:
            for sent, status in [(body, 200), (body.replace(b'"k"', b'"j"'), 400)]:
                connection.request("POST", "/", sent, headers)
                response = connection.getresponse()
                answer = json.loads(response.read())
                assert response.status == status, answer
        finally:
            connection.close()
        assert answer["__type"] == "InvalidSignatureException"
        assert [r.partition_key for r in fake.records()] == ["k"]


def test_an_old_signature_has_expired() -> None:
    """A signature older than the allowed clock skew is refused as expired."""
    with FakeKinesis(1) as fake:
        headers, body = signed_request(fake, b"{}")
    # http.client sends Host from the URL; botocore signs it from there without adding the header.
    lowered = {name.lower(): value for name, value in headers.items()} | {"host": fake.url.removeprefix("http://")}
    signed_at = datetime.strptime(lowered["x-amz-date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp()
    check_signature({KEY_ID: SECRET}, "us-east-1", method="POST", target_path="/", headers=lowered, body=body, now=signed_at + 60)
    with pytest.raises(KinesisError, match="expired"):
        check_signature({KEY_ID: SECRET}, "us-east-1", method="POST", target_path="/", headers=lowered, body=body,
                        now=signed_at + MAX_CLOCK_SKEW_S + 1)


def test_an_aggregate_from_aws_kinesis_agg_is_opened_too(fake: FakeKinesis, client: Any) -> None:
    """An aggregate packed by aws_kinesis_agg's own aggregator, with explicit hash keys, opens to its members."""
    shard = fake.shards()[2]
    keys = fake.keys_in_shard(shard.shard_id, 3)
    aggregator = RecordAggregator()
    for i, key in enumerate(keys):
        aggregator.add_user_record(key, f"lib-{i}".encode(), str(shard.start + i))
    key, explicit, data = aggregator.clear_and_get().get_contents()
    put(client, fake, [(data, key)], ExplicitHashKey=explicit or str(shard.start))
    users = fake.user_records()
    assert [(u.partition_key, u.data, u.hash_key, u.shard_id) for u in users] == [
        (key, f"lib-{i}".encode(), shard.start + i, shard.shard_id) for i, key in enumerate(keys)]
    assert fake.misrouted_user_records() == []


def test_data_by_key_follows_the_stream_order(fake: FakeKinesis, client: Any) -> None:
    """data_by_key: per partition key, plain and aggregated user records in sequence order, members in place."""
    shard = fake.shards()[0]
    first, second = fake.keys_in_shard(shard.shard_id, 2)
    put(client, fake, [(b"a1", first), (b"b1", second)])
    put(client, fake, [(kpl_aggregate([(first, b"a2"), (second, b"b2"), (first, b"a3")]), first)])
    put(client, fake, [(b"a4", first)])
    assert fake.data_by_key() == {first: [b"a1", b"a2", b"a3", b"a4"], second: [b"b1", b"b2"]}
