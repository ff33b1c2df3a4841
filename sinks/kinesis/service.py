"""One Kinesis call -> a typed outcome: which entries failed and with what code, or how the call failed."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any

import boto3
import botocore.session
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
)
from botocore.validate import ParamValidator

from sinks.kinesis.config import KinesisSinkConfig
from sinks.kinesis.records import KinesisEntry

# Error codes by what they mean. Throttling and server errors pass on a later attempt.
THROTTLING_ERROR_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "Throttling",
        "LimitExceededException",
        "KMSThrottlingException",
    }
)
SERVER_ERROR_CODES = frozenset(
    {
        "InternalFailure",
        "InternalFailureException",
        "InternalServerError",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)
RETRIABLE_ERROR_CODES = THROTTLING_ERROR_CODES | SERVER_ERROR_CODES
# The caller's identity is missing, expired or not recognised: nothing this stream gets can pass until the
# credentials are fixed (botocore refreshes role/SSO credentials by itself, so expiry can heal).
CREDENTIALS_ERROR_CODES = frozenset(
    {
        "NoCredentials",  # botocore found no credentials at all (our name for NoCredentialsError)
        "PartialCredentials",
        "ExpiredTokenException",
        "ExpiredToken",
        "RequestExpired",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "InvalidSignatureException",
        "SignatureDoesNotMatch",
        "IncompleteSignature",
        "IncompleteSignatureException",
        "MissingAuthenticationToken",
        "MissingAuthenticationTokenException",
    }
)
# The stream (or its key) refuses everyone, whatever the record: a wrong or deleted stream, missing rights,
# a disabled or inaccessible KMS key. Records are held until an operator fixes it, never dead-lettered.
STREAM_ERROR_CODES = frozenset(
    {
        "AccessDeniedException",
        "AccessDenied",
        "ResourceNotFoundException",
        "ResourceInUseException",  # the stream is being created or deleted
        "KMSDisabledException",
        "KMSAccessDeniedException",
        "KMSNotFoundException",
        "KMSInvalidStateException",
        "KMSOptInRequired",
        "OptInRequired",
    }
)
# The request's content is invalid: some entry in it (usually named in the message) can never be accepted.
INVALID_REQUEST_CODES = frozenset({"ValidationException", "InvalidArgumentException", "SerializationException"})
PARAM_VALIDATION = "ParamValidationError"  # botocore refused to build the request
MALFORMED_RESPONSE = "MalformedResponse"  # a 200 answer whose Records do not match the request
_HTTP_TOO_MANY_REQUESTS = 429
_HTTP_SERVER_ERROR = 500
# AWS validation messages name list members 1-based: "Value at 'records.3.member.partitionKey' failed ...".
_NAMED_RECORD = re.compile(r"records\.(\d+)\.member")
# A validation message about the stream's name or ARN is about the stream, not about any record.
_NAMED_STREAM = re.compile(r"stream(Name|ARN)", re.IGNORECASE)


class FailureKind(Enum):
    """Why a whole call failed. The value is the `result` label of the request metric."""

    THROTTLED = "throttled"
    SERVER_ERROR = "server_error"
    NETWORK = "network"  # connection refused/reset, timeouts: no answer at all
    MALFORMED = "malformed"  # an answer that does not match the request
    CREDENTIALS = "credentials"  # missing, expired or unknown credentials: held, the sink is unhealthy
    PERMANENT = "permanent"  # the stream refuses everyone (see STREAM_ERROR_CODES): held, the sink is unhealthy
    INVALID = "invalid"  # the request's content is invalid: find the entries at fault, dead-letter only them

    @property
    def stream_level(self) -> bool:
        """Failures no record can pass until an operator acts: the records are held, never dead-lettered."""
        return self in (FailureKind.CREDENTIALS, FailureKind.PERMANENT)


@dataclass(frozen=True)
class EntryFailure:
    position: int
    code: str
    message: str

    @property
    def retriable(self) -> bool:
        return self.code in RETRIABLE_ERROR_CODES

    @property
    def stream_level(self) -> bool:
        return self.code in STREAM_ERROR_CODES or self.code in CREDENTIALS_ERROR_CODES


@dataclass(frozen=True)
class PutResponse:
    """The call completed; `failures` lists the entries Kinesis did not accept (FailedRecordCount)."""

    failures: tuple[EntryFailure, ...]
    latency_s: float
    # Per request position: where Kinesis put each accepted entry (None at the failed positions).
    shard_ids: tuple[str | None, ...] = ()
    sequence_numbers: tuple[str | None, ...] = ()


@dataclass(frozen=True)
class CallFailed:
    """The call as a whole failed: no entry was accepted.

    For an INVALID call, `invalid` names the positions at fault (with why) when they could be told;
    empty means the answer did not say which entry it was.
    """

    code: str
    message: str
    kind: FailureKind
    latency_s: float | None  # None: refused before anything was sent
    invalid: tuple[tuple[int, str], ...] = ()
    # The request may have reached Kinesis and been taken although no answer came (a read timeout, a
    # connection reset after sending): a re-send can duplicate records, and is counted as such.
    maybe_delivered: bool = False


PutOutcome = PutResponse | CallFailed


def classify(code: str, status: int, message: str = "") -> FailureKind:
    """The kind of an AWS error answer, by its code first and its HTTP status when the code is unknown.

    An unknown 4xx code counts as PERMANENT (held): guessing "about the record" would dead-letter a whole
    stream's worth of records if it were wrong; guessing "about the stream" only holds them.
    """
    if code in THROTTLING_ERROR_CODES or status == _HTTP_TOO_MANY_REQUESTS:
        return FailureKind.THROTTLED
    if code in CREDENTIALS_ERROR_CODES:
        return FailureKind.CREDENTIALS
    if code in SERVER_ERROR_CODES or status >= _HTTP_SERVER_ERROR:
        return FailureKind.SERVER_ERROR
    if code in INVALID_REQUEST_CODES and not (_NAMED_STREAM.search(message) and not _NAMED_RECORD.search(message)):
        return FailureKind.INVALID
    return FailureKind.PERMANENT


def named_positions(message: str, entries: int) -> tuple[int, ...]:
    """0-based positions of the records a validation message names; empty if it names none (or nonsense)."""
    positions = sorted({int(n) - 1 for n in _NAMED_RECORD.findall(message)})
    if not positions or positions[0] < 0 or positions[-1] >= entries:
        return ()
    return tuple(positions)


@dataclass(frozen=True)
class StreamSummary:
    """What DescribeStreamSummary says about the stream."""

    status: str
    max_record_bytes: int | None  # None when the endpoint does not report MaxRecordSizeInKiB
    arn: str | None = None
    created: str | None = None  # StreamCreationTimestamp, ISO 8601: a stream deleted and created again differs

    def identity(self, fallback: str) -> str:
        """Names this very stream: its ARN (or `fallback`) and creation time."""
        base = self.arn or fallback
        return f"{base}@{self.created}" if self.created else base


class KinesisService:
    """Owns the boto3 client; botocore's own retries are off because the sink decides about retries."""

    def __init__(self, config: KinesisSinkConfig) -> None:
        if config.stream is None:
            raise ValueError("the kinesis sink needs a stream name")
        self.stream = config.stream
        if config.static_credentials is None:
            self.session = boto3.Session(profile_name=config.profile, region_name=config.region)
        else:  # the embedded stack: its dummy keys, and no AWS_PROFILE from the environment (it may not exist)
            key, secret = config.static_credentials
            no_env_profile = botocore.session.Session(session_vars={"profile": (None, None, None, None)})
            self.session = boto3.Session(
                aws_access_key_id=key, aws_secret_access_key=secret, region_name=config.region, botocore_session=no_env_profile
            )
        self.client: Any = self.client_with(config.connect_timeout, config.read_timeout, config.endpoint_url)
        self._records_shape = self.client.meta.service_model.operation_model("PutRecords").input_shape

    def client_with(self, connect_timeout: float, read_timeout: float, endpoint_url: str | None) -> Any:
        """A Kinesis client of this session (the producer's own credentials) with these timeouts."""
        return self.session.client(
            "kinesis",
            endpoint_url=endpoint_url,
            config=Config(
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
                retries={"total_max_attempts": 1, "mode": "standard"},
            ),
        )

    @property
    def region(self) -> str | None:
        return self.client.meta.region_name  # type: ignore[no-any-return]

    @property
    def endpoint(self) -> str:
        return str(self.client.meta.endpoint_url)

    def put_records(self, entries: Sequence[KinesisEntry]) -> PutOutcome:
        started = time.monotonic()
        try:
            response = self.client.put_records(
                StreamName=self.stream,
                Records=[_wire_entry(e) for e in entries],
            )
        except ClientError as exc:
            return self._client_error(exc, len(entries), time.monotonic() - started)
        except (NoCredentialsError, PartialCredentialsError) as exc:
            # Credentials can appear (instance role, rotated file): keep the records and keep trying.
            code = "NoCredentials" if isinstance(exc, NoCredentialsError) else "PartialCredentials"
            return CallFailed(code, str(exc), FailureKind.CREDENTIALS, None)
        except ParamValidationError as exc:
            # botocore refused to build the request: find which entries it refuses, so only those are lost. If
            # none is at fault alone, the request itself is (its stream name): hold the records, don't lose them.
            invalid = self.invalid_entries(entries)
            kind = FailureKind.INVALID if invalid else FailureKind.PERMANENT
            return CallFailed(PARAM_VALIDATION, str(exc), kind, None, invalid)
        except BotoCoreError as exc:  # connection refused/reset, timeouts, DNS: the network may come back
            maybe = not isinstance(exc, (EndpointConnectionError, ConnectTimeoutError))  # those never reached it
            latency = time.monotonic() - started
            return CallFailed(type(exc).__name__, str(exc), FailureKind.NETWORK, latency, maybe_delivered=maybe)
        latency = time.monotonic() - started
        results = response.get("Records") or []
        if len(results) != len(entries):
            # Without one result per entry we cannot tell which entries were accepted: sending them all again
            # risks duplicates, treating the gap as accepted would lose records.
            detail = f"{len(results)} results for {len(entries)} records"
            return CallFailed(MALFORMED_RESPONSE, detail, FailureKind.MALFORMED, latency)
        # Per-entry ErrorCode is authoritative; FailedRecordCount is only a summary of it.
        failures = tuple(
            EntryFailure(position, str(result["ErrorCode"]), str(result.get("ErrorMessage", "")))
            for position, result in enumerate(results)
            if result.get("ErrorCode")
        )
        shard_ids = tuple(None if result.get("ErrorCode") else result.get("ShardId") for result in results)
        sequence_numbers = tuple(None if result.get("ErrorCode") else result.get("SequenceNumber") for result in results)
        return PutResponse(failures, latency, shard_ids, sequence_numbers)

    def invalid_entries(self, entries: Sequence[KinesisEntry]) -> tuple[tuple[int, str], ...]:
        """Entries botocore's own validator refuses, each checked alone (no request is made)."""
        validator = ParamValidator()
        found = []
        for position, entry in enumerate(entries):
            params = {"StreamName": self.stream, "Records": [_wire_entry(entry)]}
            report = validator.validate(params, self._records_shape)
            if report.has_errors():
                found.append((position, f"{PARAM_VALIDATION}: {report.generate_report()}"))
        return tuple(found)

    def _client_error(self, exc: ClientError, entries: int, latency: float) -> CallFailed:
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        code = str(error.get("Code") or f"HTTP{status}")
        message = str(error.get("Message", ""))
        kind = classify(code, status, message)
        invalid: tuple[tuple[int, str], ...] = ()
        if kind is FailureKind.INVALID:
            invalid = tuple((p, f"{code}: {message}") for p in named_positions(message, entries))
        return CallFailed(code, message, kind, latency, invalid)

    def describe(self, client: Any) -> StreamSummary:
        """DescribeStreamSummary through `client`; raises botocore's exceptions as they come."""
        summary = client.describe_stream_summary(StreamName=self.stream)["StreamDescriptionSummary"]
        max_kib = summary.get("MaxRecordSizeInKiB")
        created = summary.get("StreamCreationTimestamp")
        if isinstance(created, datetime):
            created = created.astimezone(UTC).isoformat()
        return StreamSummary(
            str(summary.get("StreamStatus", "")),
            int(max_kib) * 1024 if max_kib else None,
            str(summary["StreamARN"]) if summary.get("StreamARN") else None,
            str(created) if created is not None else None,
        )

    def close(self) -> None:
        self.client.close()


def _wire_entry(entry: KinesisEntry) -> dict[str, Any]:
    """One PutRecords entry as botocore takes it."""
    item: dict[str, Any] = {"Data": entry.data, "PartitionKey": entry.partition_key}
    if entry.explicit_hash_key is not None:
        item["ExplicitHashKey"] = entry.explicit_hash_key
    return item
