"""What an HTTP exchange of PutRecords ends as: an answer's bytes, or the network failure that came instead,
mapped to the outcome types of service.py exactly as `KinesisService.put_records` maps botocore's.

Kept apart from wire.py (the body and the client) so each stays small; both are the same hot path.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from botocore.httpsession import ProxyConfiguration, get_cert_path
from botocore.utils import get_environ_proxies
from urllib3 import HTTPConnectionPool, HTTPSConnectionPool, ProxyManager, Timeout
from urllib3.exceptions import (
    ConnectTimeoutError,
    EmptyPoolError,
    NewConnectionError,
    ProtocolError,
    ProxyError,
    ReadTimeoutError,
    SSLError,
)
from urllib3.util import parse_url

from sinks.kinesis.service import (
    MALFORMED_RESPONSE,
    CallFailed,
    EntryFailure,
    FailureKind,
    PutOutcome,
    PutResponse,
    classify,
    named_positions,
)

try:  # orjson parses a 500-entry answer several times faster than json; json is the fallback
    import orjson

    def _loads(body: bytes) -> Any:
        return orjson.loads(body)
except ImportError:  # pragma: no cover - orjson is a dependency; this keeps a stripped install working

    def _loads(body: bytes) -> Any:
        return json.loads(body)


# How much of an unparseable answer goes into the failure's message: enough to recognise a proxy's page.
ANSWER_EXCERPT_CHARS = 200
_HTTP_OK_MIN, _HTTP_OK_MAX = 200, 299


def outcome_of_answer(status: int, body: bytes, headers: Mapping[str, str], records: int, latency_s: float) -> PutOutcome:
    """An HTTP answer to a PutRecords of `records` entries as the typed outcome service.py defines."""
    if _HTTP_OK_MIN <= status <= _HTTP_OK_MAX:
        return _accepted(body, records, latency_s)
    return _refused(status, body, headers, records, latency_s)


def _accepted(body: bytes, records: int, latency_s: float) -> PutOutcome:
    try:
        answer = _loads(body)
    except ValueError:
        return CallFailed(MALFORMED_RESPONSE, f"an answer that is not JSON: {_excerpt(body)!r}", FailureKind.MALFORMED,
                          latency_s)
    results = answer.get("Records") if isinstance(answer, dict) else None
    if not isinstance(results, list) or len(results) != records or not set(map(type, results)) <= {dict}:
        # Without one result per entry we cannot tell which entries were accepted: sending them all again
        # risks duplicates, treating the gap as accepted would lose records.
        count = len(results) if isinstance(results, list) else 0
        return CallFailed(MALFORMED_RESPONSE, f"{count} results for {records} records", FailureKind.MALFORMED, latency_s)
    # All accepted is the common case: three C-speed passes instead of a Python loop per entry.
    if not any([result.get("ErrorCode") for result in results]):  # noqa: C419 - a list is faster than a generator
        shard_ids = tuple([result.get("ShardId") for result in results])
        sequence_numbers = tuple([result.get("SequenceNumber") for result in results])
        if set(map(type, shard_ids)) | set(map(type, sequence_numbers)) <= {str}:
            return PutResponse((), latency_s, shard_ids, sequence_numbers)
    return _accepted_by_position(results, latency_s)


def _accepted_by_position(results: list[dict[str, Any]], latency_s: float) -> PutResponse:
    """A 200 answer entry by entry: failures at their positions, where the others went (text only)."""
    failures: list[EntryFailure] = []
    shard_ids: list[str | None] = []
    sequence_numbers: list[str | None] = []
    for position, result in enumerate(results):
        code = result.get("ErrorCode")
        if code:  # per-entry ErrorCode is authoritative; FailedRecordCount is only a summary of it
            failures.append(EntryFailure(position, str(code), str(result.get("ErrorMessage") or "")))
            shard_ids.append(None)
            sequence_numbers.append(None)
        else:
            shard_ids.append(_text_or_none(result.get("ShardId")))
            sequence_numbers.append(_text_or_none(result.get("SequenceNumber")))
    return PutResponse(tuple(failures), latency_s, tuple(shard_ids), tuple(sequence_numbers))


def _refused(status: int, body: bytes, headers: Mapping[str, str], records: int, latency_s: float) -> CallFailed:
    """An error answer: the code from `__type` (else the x-amzn-ErrorType header, else HTTP<status>)."""
    try:
        answer = _loads(body) if body else {}
    except ValueError:
        answer = None
    if isinstance(answer, dict):
        raw_code = answer.get("__type") or headers.get("x-amzn-ErrorType") or ""
        raw_message = answer.get("message", answer.get("Message", ""))
        message = raw_message if isinstance(raw_message, str) else str(raw_message)
    else:  # a proxy's or load balancer's page: keep the start of it, it usually says what went wrong
        raw_code = headers.get("x-amzn-ErrorType") or ""
        message = _excerpt(body)
    # Code forms: "ResourceNotFoundException", "com.amazonaws.kinesis.v20131202#...", "Code:http://..."
    code = str(raw_code).split(":", 1)[0].rsplit("#", 1)[-1] or f"HTTP{status}"
    kind = classify(code, status, message)
    invalid: tuple[tuple[int, str], ...] = ()
    if kind is FailureKind.INVALID:
        invalid = tuple((p, f"{code}: {message}") for p in named_positions(message, records))
    return CallFailed(code, message, kind, latency_s, invalid)


def _text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _excerpt(body: bytes) -> str:
    return body[: ANSWER_EXCERPT_CHARS * 4].decode("utf-8", "replace")[:ANSWER_EXCERPT_CHARS]


def network_failure(exc: Exception, sent: bool, latency_s: float) -> CallFailed:
    """A request that got no answer. `sent`: the whole body was handed to the socket, so Kinesis may have
    taken it. The codes are botocore's exception names for the same failures, so metrics keep their labels."""
    if isinstance(exc, NewConnectionError):  # before ConnectTimeoutError: urllib3 derives it from that
        code = "EndpointConnectionError"
    elif isinstance(exc, ConnectTimeoutError):
        code = "ConnectTimeoutError"
    elif isinstance(exc, ReadTimeoutError):
        code = "ReadTimeoutError"
    elif isinstance(exc, SSLError):
        code = "SSLError"
    elif isinstance(exc, ProxyError):
        code = "ProxyConnectionError"
    elif isinstance(exc, ProtocolError):  # reset, closed mid-answer, truncated answer
        code = "ConnectionClosedError"
    elif isinstance(exc, EmptyPoolError):
        code = "EmptyPoolError"
    else:
        code = "HTTPClientError"
    return CallFailed(code, str(exc), FailureKind.NETWORK, latency_s, maybe_delivered=sent)


def body_then_mark(body: bytes, sent: list[bool]) -> Iterator[bytes]:
    """The body as urllib3's chunk iterable; resuming after the yield means the socket took all of it."""
    yield body
    sent.append(True)


def connection_pool(
    endpoint_url: str, timeout: Timeout, max_connections: int, verify: bool | str
) -> tuple[HTTPConnectionPool, ProxyManager | None]:
    """Keep-alive connections to the endpoint: at most `max_connections`, a thread waits for a free one, no
    retries (the sink decides). For https, the environment's proxy (as botocore finds it) tunnels them; the
    manager is returned to be cleared on close."""
    url = parse_url(endpoint_url)
    assert url.host is not None
    options: dict[str, Any] = {"maxsize": max_connections, "block": True, "retries": False, "timeout": timeout}
    if url.scheme != "https":
        return HTTPConnectionPool(url.host, url.port, **options), None
    if verify is False:
        options |= {"cert_reqs": "CERT_NONE", "assert_hostname": False}
    else:  # True: botocore's default bundle; a str: that bundle
        options |= {"cert_reqs": "CERT_REQUIRED", "ca_certs": get_cert_path(verify)}
    proxies = ProxyConfiguration(get_environ_proxies(endpoint_url))
    proxy_url = proxies.proxy_url_for(endpoint_url)
    if not proxy_url:
        return HTTPSConnectionPool(url.host, url.port, **options), None
    manager = ProxyManager(proxy_url, num_pools=1, proxy_headers=proxies.proxy_headers_for(proxy_url), **options)
    return manager.connection_from_url(endpoint_url), manager
