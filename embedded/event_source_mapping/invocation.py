"""One invocation of the function, classified the way Lambda's Kinesis event source mapping reads it."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from embedded.event_source_mapping.events import EventSource, LambdaContext, StreamRecord
from embedded.event_source_mapping.stats import StatsRecorder

# responseContext.functionError for an exception, a timeout or an unserializable response.
FUNCTION_ERROR_UNHANDLED = "Unhandled"
# Lambda's synchronous invocation payload limit (request and response): 6 MB.
INVOKE_PAYLOAD_LIMIT_BYTES = 6 * 1024 * 1024
# The envelope of one event record (ARNs, event id, field names) besides its base64 data and partition key.
EVENT_RECORD_OVERHEAD_BYTES = 1024


def event_record_bytes(record: StreamRecord) -> int:
    """An upper estimate of one record's share of the invocation payload."""
    return 4 * ((len(record.data) + 2) // 3) + len(record.partition_key.encode()) + EVENT_RECORD_OVERHEAD_BYTES


@dataclass(frozen=True)
class Outcome:
    """What an invocation means for its records.

    `first_failed` is None when every record succeeded; otherwise the records from that index on are to be
    retried (0 = the whole batch). `function_error` is set for an invocation error (exception, timeout),
    which is what BisectBatchOnFunctionError splits on; a partial or invalid response leaves it None.
    """

    first_failed: int | None
    function_error: str | None = None
    invalid_response: bool = False
    reason: str = ""


SUCCESS = Outcome(None)


def parse_batch_response(response: Any, records: list[StreamRecord]) -> Outcome:
    """Read a ReportBatchItemFailures response.

    Success: None, an empty object, a null or empty `batchItemFailures`. A failure list checkpoints before
    the lowest failed sequence number. Anything else (a non-object, a non-list, an entry without a valid
    `itemIdentifier`, an identifier not in this batch) fails the whole batch, as Lambda treats it.
    """
    if response is None:
        return SUCCESS
    if not isinstance(response, dict):
        return Outcome(0, invalid_response=True, reason=f"response is a {type(response).__name__}, not an object")
    failures = response.get("batchItemFailures")
    if failures is None or failures == []:
        return SUCCESS
    if not isinstance(failures, list):
        return Outcome(0, invalid_response=True, reason="batchItemFailures is not a list")
    positions = {record.sequence_number: index for index, record in enumerate(records)}
    lowest = len(records)
    for failure in failures:
        identifier = failure.get("itemIdentifier") if isinstance(failure, dict) else None
        if not isinstance(identifier, str) or not identifier:
            return Outcome(0, invalid_response=True, reason=f"batch item failure {failure!r} has no itemIdentifier")
        if identifier not in positions:
            reason = f"itemIdentifier {identifier!r} is not a sequence number of this batch"
            return Outcome(0, invalid_response=True, reason=reason)
        lowest = min(lowest, positions[identifier])
    return Outcome(lowest, reason="partial batch failure")


class Invoker:
    """Calls the function in-process with a Lambda-shaped event and context."""

    def __init__(
        self,
        *,
        function: Callable[[dict[str, Any], Any], Any],
        source: EventSource,
        function_arn: str,
        timeout_s: float,
        memory_mb: int,
        report_batch_item_failures: bool,
        stats: StatsRecorder,
        log: Any,
    ) -> None:
        self._function = function
        self._source = source
        self._function_arn = function_arn
        self._timeout_s = timeout_s
        self._memory_mb = memory_mb
        self._report_failures = report_batch_item_failures
        self._stats = stats
        self._log = log

    def invoke(self, shard_id: str, records: list[StreamRecord]) -> Outcome:
        context = LambdaContext(
            function_name=self._function_arn.rsplit(":", 1)[-1],
            invoked_function_arn=self._function_arn,
            memory_limit_in_mb=self._memory_mb,
            timeout_s=self._timeout_s,
        )
        event = self._source.event(shard_id, records)
        self._stats.add(invocations=1, records_delivered=len(records))
        started = time.monotonic()
        try:
            response = self._function(event, context)
        except Exception as exc:  # noqa: BLE001 - a function error is data here, as it is for Lambda
            return self._error(shard_id, records, context, f"{type(exc).__name__}: {exc}")
        elapsed = time.monotonic() - started
        if elapsed > self._timeout_s:
            # Lambda would have stopped the function at its timeout; the batch counts as failed.
            self._stats.add(function_timeouts=1)
            return self._error(shard_id, records, context, f"Task timed out after {elapsed:.2f} seconds")
        try:
            size = len(json.dumps(response).encode())
        except (TypeError, ValueError) as exc:
            return self._error(shard_id, records, context, f"Runtime.MarshalError: response is not JSON ({exc})")
        if size > INVOKE_PAYLOAD_LIMIT_BYTES:
            return self._error(shard_id, records, context, f"response of {size} bytes exceeds the invocation payload limit")
        if not self._report_failures:
            return SUCCESS  # without ReportBatchItemFailures Lambda ignores what the function returns
        outcome = parse_batch_response(response, records)
        if outcome.first_failed is not None:
            invalid = outcome.invalid_response
            self._stats.add(invalid_responses=int(invalid), partial_failures=int(not invalid))
            self._log.warning(
                "esm_invalid_batch_response" if invalid else "esm_batch_item_failures",
                shard=shard_id,
                records=len(records),
                first_failed=records[outcome.first_failed].sequence_number,
                reason=outcome.reason,
                request_id=context.aws_request_id,
            )
        return outcome

    def _error(self, shard_id: str, records: list[StreamRecord], context: LambdaContext, error: str) -> Outcome:
        self._stats.add(function_errors=1)
        self._log.warning(
            "esm_function_error",
            shard=shard_id,
            records=len(records),
            first=records[0].sequence_number,
            error=error,
            request_id=context.aws_request_id,
        )
        return Outcome(0, function_error=FUNCTION_ERROR_UNHANDLED, reason=error)
