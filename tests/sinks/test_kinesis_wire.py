"""PutRecordsClient against a real HTTP server on 127.0.0.1: the body, the signature, keep-alive, credentials,
and every kind of answer and network failure mapped to the outcome types of service.py."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import botocore.session
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import CredentialProvider, Credentials, RefreshableCredentials
from botocore.exceptions import CredentialRetrievalError

from sinks.kinesis import KinesisSinkConfig, wire
from sinks.kinesis.records import KinesisEntry, hash_key_of
from sinks.kinesis.service import CallFailed, FailureKind, KinesisService, PutOutcome, PutResponse
from sinks.kinesis.wire import PUT_RECORDS_TARGET, PutRecordsClient
from tests.sinks.conftest import REGION, STREAM, tweet_record
from tests.sinks.wire_server import SHARD, Answer, Received, WireServer

CONNECT_TIMEOUT_S = 2.0  # generous: a broken test fails in seconds, not minutes
READ_TIMEOUT_S = 5.0


@dataclass(slots=True)
class Rec:
    """A bare WireRecord."""

    data: bytes
    partition_key: str
    explicit_hash_key: str | None = None


def entries(n: int, tag: str = "r") -> list[KinesisEntry]:
    """`n` distinct KinesisEntry values (distinct data and keys)."""
    out = []
    for i in range(n):
        key = f"{tag}-{i}"
        out.append(KinesisEntry(tweet_record(f"{tag} {i}", tweet_id=str(i)), key, 10, hash_key_of(key)))
    return out


@pytest.fixture
def server() -> Iterator[WireServer]:
    """A scripted endpoint, echoing every entry as accepted unless a test scripts otherwise."""
    fake = WireServer().start()
    yield fake
    fake.stop()


@pytest.fixture
def client_for() -> Iterator[Callable[..., PutRecordsClient]]:
    """Builds clients (from the environment's dummy credentials unless given a session); closes them after."""
    made: list[PutRecordsClient] = []

    def make(endpoint_url: str, session: boto3.Session | None = None, **options: Any) -> PutRecordsClient:
        settings: dict[str, Any] = {"connect_timeout": CONNECT_TIMEOUT_S, "read_timeout": READ_TIMEOUT_S,
                                    "max_connections": 4} | options
        client = PutRecordsClient(session or boto3.Session(region_name=REGION), REGION, endpoint_url, **settings)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def test_the_body_carries_the_records_with_the_target_and_content_type(
    server: WireServer, client_for: Callable[..., PutRecordsClient]
) -> None:
    """Data, keys and explicit hash keys arrive in order, with PutRecords' target and JSON 1.1 content type."""
    records = [Rec(b"\x00\xffbinary", 'quote"back\\slash'), Rec("ünïcödé 🐍".encode(), "🐍-key", "123456789"), Rec(b"", "k")]
    outcome = client_for(server.endpoint_url).put_records(STREAM, records)
    assert isinstance(outcome, PutResponse) and outcome.failures == ()
    (request,) = server.received
    assert request.json()["StreamName"] == STREAM
    assert request.records() == [(r.data, r.partition_key, r.explicit_hash_key) for r in records]
    assert request.headers["x-amz-target"] == PUT_RECORDS_TARGET
    assert request.headers["content-type"] == "application/x-amz-json-1.1"
    assert "transfer-encoding" not in request.headers and int(request.headers["content-length"]) == len(request.body)


def _expected_authorization(request: Received, credentials: Credentials, endpoint_url: str) -> str:
    """Re-sign what the server received with botocore, at the request's own X-Amz-Date."""
    authorization = request.headers["authorization"]
    signed = authorization.split("SignedHeaders=", 1)[1].split(",", 1)[0].split(";")
    rebuilt = AWSRequest(method="POST", url=endpoint_url + request.path, data=request.body,
                         headers={name: request.headers[name] for name in signed})
    rebuilt.context["timestamp"] = request.headers["x-amz-date"]
    signer = SigV4Auth(credentials.get_frozen_credentials(), "kinesis", REGION)
    canonical = signer.canonical_request(rebuilt)
    signature = signer.signature(signer.string_to_sign(rebuilt, canonical), rebuilt)
    scope = signer.scope(rebuilt)
    return f"AWS4-HMAC-SHA256 Credential={scope}, SignedHeaders={';'.join(signed)}, Signature={signature}"


def test_the_signature_verifies_server_side_with_the_session_token(
    server: WireServer, client_for: Callable[..., PutRecordsClient]
) -> None:
    """The Authorization header equals botocore's SigV4 of the received request; the session token is sent and
    signed, and host, target, content type and date are among the signed headers."""
    credentials = Credentials("AKIDWIRE", "wire-secret-not-a-secret", "session-token-xyz")
    session = boto3.Session(aws_access_key_id=credentials.access_key, aws_secret_access_key=credentials.secret_key,
                            aws_session_token=credentials.token, region_name=REGION)
    client = client_for(server.endpoint_url, session)
    assert isinstance(client.put_records(STREAM, entries(3)), PutResponse)
    (request,) = server.received
    assert request.headers["x-amz-security-token"] == "session-token-xyz"
    assert request.headers["authorization"] == _expected_authorization(request, credentials, server.endpoint_url)
    signed = request.headers["authorization"].split("SignedHeaders=", 1)[1].split(",", 1)[0].split(";")
    assert {"host", "x-amz-target", "content-type", "x-amz-date", "x-amz-security-token"} <= set(signed)
    tampered = replace(request, body=request.body.replace(b"r-0", b"r-9"))
    assert request.headers["authorization"] != _expected_authorization(tampered, credentials, server.endpoint_url)


def test_many_requests_share_one_keep_alive_connection(server: WireServer, client_for: Callable[..., PutRecordsClient]) -> None:
    """Twenty sequential requests arrive on one TCP connection."""
    client = client_for(server.endpoint_url)
    for i in range(20):
        assert isinstance(client.put_records(STREAM, entries(5, f"batch{i}")), PutResponse)
    assert len(server.received) == 20
    assert server.connections == 1 and {r.connection for r in server.received} == {1}


class _RotatingProvider(CredentialProvider):
    """Refreshable credentials that are always due for refresh: each refresh hands out the next key id."""

    METHOD = "rotating-test"

    def __init__(self) -> None:
        super().__init__()
        self.refreshes = 0

    def _refresh(self) -> dict[str, str]:
        self.refreshes += 1
        soon = datetime.now(UTC) + timedelta(minutes=5)  # inside botocore's 15-minute advisory window
        return {"access_key": f"AKIDNEW{self.refreshes}", "secret_key": "new-secret", "token": "",
                "expiry_time": soon.isoformat()}

    def load(self) -> RefreshableCredentials:
        soon = datetime.now(UTC) + timedelta(minutes=5)
        metadata = {"access_key": "AKIDOLD", "secret_key": "old-secret", "token": "", "expiry_time": soon.isoformat()}
        return RefreshableCredentials.create_from_metadata(metadata, self._refresh, self.METHOD)


def test_refreshed_credentials_sign_the_next_requests(server: WireServer, client_for: Callable[..., PutRecordsClient]) -> None:
    """A RefreshableCredentials from the session's chain is refreshed as requests take it: each request names
    (and is validly signed with) the key id of the latest refresh, never the stale one."""
    provider = _RotatingProvider()
    core = botocore.session.Session(session_vars={"profile": (None, None, None, None)})
    core.get_component("credential_provider").insert_before("env", provider)
    client = client_for(server.endpoint_url, boto3.Session(botocore_session=core, region_name=REGION))
    for _ in range(3):
        assert isinstance(client.put_records(STREAM, entries(1)), PutResponse)
    key_ids = [r.headers["authorization"].split("Credential=", 1)[1].split("/", 1)[0] for r in server.received]
    assert key_ids == ["AKIDNEW1", "AKIDNEW2", "AKIDNEW3"]
    last = server.received[-1]
    assert last.headers["authorization"] == _expected_authorization(last, Credentials("AKIDNEW3", "new-secret"),
                                                                    server.endpoint_url)


class _FailingRefreshProvider(CredentialProvider):
    """Credentials about to expire whose refresh fails (an STS or SSO outage)."""

    METHOD = "failing-test"

    def _refresh(self) -> dict[str, str]:
        raise CredentialRetrievalError(provider=self.METHOD, error_msg="the token service is down")

    def load(self) -> RefreshableCredentials:
        soon = datetime.now(UTC) + timedelta(minutes=1)  # inside botocore's mandatory refresh window
        metadata = {"access_key": "AKIDEXPIRING", "secret_key": "s", "token": "", "expiry_time": soon.isoformat()}
        return RefreshableCredentials.create_from_metadata(metadata, self._refresh, self.METHOD)


def test_a_failed_credentials_refresh_fails_the_call_unsent(
    server: WireServer, client_for: Callable[..., PutRecordsClient]
) -> None:
    """Credentials that must be refreshed and cannot be: CREDENTIALS with botocore's error name, nothing sent."""
    core = botocore.session.Session(session_vars={"profile": (None, None, None, None)})
    core.get_component("credential_provider").insert_before("env", _FailingRefreshProvider())
    client = client_for(server.endpoint_url, boto3.Session(botocore_session=core, region_name=REGION))
    outcome = client.put_records(STREAM, entries(2))
    assert isinstance(outcome, CallFailed)
    assert (outcome.code, outcome.kind, outcome.latency_s) == ("CredentialRetrievalError", FailureKind.CREDENTIALS, None)
    assert "the token service is down" in outcome.message
    assert server.received == [] and server.connections == 0


def test_no_credentials_fail_unsent_and_credentials_that_appear_are_used(
    server: WireServer, client_for: Callable[..., PutRecordsClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without credentials the call fails as NoCredentials (CREDENTIALS, nothing sent, no latency); once the
    chain finds credentials, the next call is signed with them."""
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setattr(wire, "CREDENTIALS_RETRY_INTERVAL_S", 0.0)
    client = client_for(server.endpoint_url)
    outcome = client.put_records(STREAM, entries(2))
    assert isinstance(outcome, CallFailed)
    assert (outcome.code, outcome.kind, outcome.latency_s, outcome.maybe_delivered) == (
        "NoCredentials", FailureKind.CREDENTIALS, None, False)
    assert server.received == [] and server.connections == 0
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDLATE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "late-secret")
    assert isinstance(client.put_records(STREAM, entries(2)), PutResponse)
    assert "Credential=AKIDLATE/" in server.received[0].headers["authorization"]


def test_partial_failures_give_each_position_its_code_shard_and_sequence_number(
    server: WireServer, client_for: Callable[..., PutRecordsClient]
) -> None:
    """A 200 with failed entries: failures at their positions (code, message), shard and sequence number only at
    the accepted positions."""
    results = [{"ShardId": "shardId-1", "SequenceNumber": "11"},
               {"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "Rate exceeded"},
               {"ShardId": "shardId-2", "SequenceNumber": "22"},
               {"ErrorCode": "InternalFailure", "ErrorMessage": None}]
    server.default = Answer(payload={"FailedRecordCount": 2, "Records": results})
    outcome = client_for(server.endpoint_url).put_records(STREAM, entries(4))
    assert isinstance(outcome, PutResponse)
    assert [(f.position, f.code, f.message, f.retriable) for f in outcome.failures] == [
        (1, "ProvisionedThroughputExceededException", "Rate exceeded", True), (3, "InternalFailure", "", True)]
    assert outcome.shard_ids == ("shardId-1", None, "shardId-2", None)
    assert outcome.sequence_numbers == ("11", None, "22", None)


def _error(code: str, status: int, message: str) -> Answer:
    return Answer(status=status, payload={"__type": code, "message": message})


# Answers both transports must map alike. The wire client deliberately differs in one place: an error answer
# without a code is named HTTP<status> where botocore says "<status>" (the kind is the same either way).
ANSWERS = {
    "throttled": _error("com.amazonaws.kinesis.v20131202#ProvisionedThroughputExceededException", 400, "Rate exceeded"),
    "server_error": _error("InternalFailure", 500, "internal failure"),
    "unavailable_503": _error("ServiceUnavailable", 503, "try later"),
    "invalid_named": _error("ValidationException", 400,
                            "1 validation error detected: Value at 'records.2.member.partitionKey' failed to satisfy"),
    "invalid_unnamed": _error("InvalidArgumentException", 400, "something about a record"),
    "invalid_stream_name": _error("ValidationException", 400, "Value at 'streamName' failed to satisfy constraint"),
    "not_found": _error("ResourceNotFoundException", 400, "Stream tweets-under-test not found"),
    "access_denied": _error("AccessDeniedException", 400, "not authorized"),
    "expired_token": _error("ExpiredTokenException", 400, "The security token included in the request is expired"),
    "unrecognized_client": _error("UnrecognizedClientException", 400, "bad key"),
    "capital_message": Answer(status=400, payload={"__type": "KMSThrottlingException", "Message": "KMS busy"}),
    "unknown_4xx": _error("SomethingNewException", 400, "new"),
    "too_many_requests": _error("SlowDown", 429, "slow down"),
    "length_mismatch": Answer(payload={"FailedRecordCount": 0, "Records": [{"ShardId": SHARD, "SequenceNumber": "1"}]}),
    "records_missing": Answer(payload={"FailedRecordCount": 0}),
}
ANSWERS_WITHOUT_A_CODE = {
    "html_500": (Answer(status=500, raw=b"<html><body>Service Unavailable</body></html>"), "HTTP500", FailureKind.SERVER_ERROR),
    "text_502": (Answer(status=502, raw=b"Bad Gateway"), "HTTP502", FailureKind.SERVER_ERROR),
    "text_403": (Answer(status=403, raw=b"Forbidden by proxy"), "HTTP403", FailureKind.PERMANENT),
    "json_without_type_400": (Answer(status=400, payload={"message": "?"}), "HTTP400", FailureKind.PERMANENT),
    "not_json_200": (Answer(raw=b"<html>ok</html>"), "MalformedResponse", FailureKind.MALFORMED),
}


def _without_latency(outcome: PutOutcome) -> PutOutcome:
    assert outcome.latency_s is not None and outcome.latency_s >= 0
    return replace(outcome, latency_s=0.0)


@pytest.fixture(scope="module")
def both_transports() -> Iterator[tuple[WireServer, PutRecordsClient, KinesisService]]:
    """One server with a wire client and a boto3 KinesisService on it (building boto3 clients is slow)."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ACCESS_KEY_ID", "testing")
        env.setenv("AWS_SECRET_ACCESS_KEY", "testing-not-a-secret")
        env.setenv("AWS_EC2_METADATA_DISABLED", "true")
        fake = WireServer().start()
        ours = PutRecordsClient(boto3.Session(region_name=REGION), REGION, fake.endpoint_url, connect_timeout=CONNECT_TIMEOUT_S,
                                read_timeout=READ_TIMEOUT_S, max_connections=1)
        theirs = KinesisService(KinesisSinkConfig(stream=STREAM, region=REGION, endpoint_url=fake.endpoint_url,
                                                   connect_timeout=CONNECT_TIMEOUT_S, read_timeout=READ_TIMEOUT_S))
    yield fake, ours, theirs
    ours.close()
    theirs.close()
    fake.stop()


@pytest.mark.parametrize("name", sorted(ANSWERS))
def test_each_answer_maps_exactly_as_the_boto3_service_maps_it(
    name: str, both_transports: tuple[WireServer, PutRecordsClient, KinesisService]
) -> None:
    """The same answer read by the wire client and by KinesisService (botocore) gives the same outcome."""
    fake, ours, theirs = both_transports
    fake.default, fake.received = ANSWERS[name], []
    batch = entries(3)
    mine, botocores = ours.put_records(STREAM, batch), theirs.put_records(batch)
    assert fake.received[0].json() == fake.received[1].json()  # the same request on the wire
    assert _without_latency(mine) == _without_latency(botocores)


@pytest.mark.parametrize("name", sorted(ANSWERS_WITHOUT_A_CODE))
def test_an_answer_without_an_error_code_is_named_by_its_status(
    name: str, server: WireServer, client_for: Callable[..., PutRecordsClient]
) -> None:
    """A non-JSON (or code-less) error answer is HTTP<status>, of the kind its status says; a 200 that is not
    JSON is MALFORMED; the start of the page is kept as the message."""
    answer, code, kind = ANSWERS_WITHOUT_A_CODE[name]
    server.default = answer
    outcome = client_for(server.endpoint_url).put_records(STREAM, entries(2))
    assert isinstance(outcome, CallFailed)
    assert (outcome.code, outcome.kind, outcome.maybe_delivered) == (code, kind, False)
    if answer.raw is not None:
        assert answer.raw.decode()[:20] in outcome.message


def test_the_error_type_header_names_the_code_when_the_body_does_not(
    server: WireServer, client_for: Callable[..., PutRecordsClient]
) -> None:
    """An error answer whose body has no __type takes its code from x-amzn-ErrorType (before any ':')."""
    server.default = Answer(status=400, payload={"message": "Rate exceeded"},
                            headers={"x-amzn-ErrorType": "ThrottlingException:http://internal.amazon.com/"})
    outcome = client_for(server.endpoint_url).put_records(STREAM, entries(1))
    assert isinstance(outcome, CallFailed) and (outcome.code, outcome.kind) == ("ThrottlingException", FailureKind.THROTTLED)
