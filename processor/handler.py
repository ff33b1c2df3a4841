"""The Lambda handler: Kinesis batch in, DynamoDB items out, a partial batch response back.

Per invocation:
1. Each Kinesis record is decoded (base64, KPL de-aggregation, UTF-8, JSON), mapped and turned into
   items (Powertools BatchProcessor, one record at a time). A record that can never be stored is
   dead-lettered and counts as processed, so the shard moves on; if the dead-letter destination refuses
   it, the record is reported as a batch item failure instead (never dropped).
2. All items of the batch are written together (processor/writer.py). Records whose items are still
   unwritten when the time budget runs out are reported as batch item failures: Lambda retries from the
   lowest one, and rewriting the others is harmless because items are deterministic (processor/items.py).

Two entry points run the same code: `handler`, which Lambda calls, reads its settings from the environment
on every invocation and builds its clients from it (processor/clients.py); `make_handler(settings,
dynamodb=..., sqs=...)` returns a handler bound to explicit settings and clients, for a host process (the
embedded stack) that must not change its own environment to run the processor.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.kinesis_stream_event import KinesisStreamRecord

from processor import telemetry
from processor.clients import EnvironmentClients, GivenClients, ProcessorClients
from processor.config import ProcessorSettings
from processor.deadletter import DeadLetterDestination, dead_letter_entry, destination
from processor.decoding import UserRecord, envelope, parse_json, user_records
from processor.errors import PROCESSING_ERROR, REJECTED_BY_TABLE, ConfigurationError, DeadLetterUnavailable, PermanentFailure
from processor.items import build_item, build_key
from processor.mappings import map_deletion, map_event, unwrap_envelope
from processor.telemetry import InvocationMetrics, logger
from processor.writer import PutItem, TableWriter

# Time kept back from the invocation's remaining time: one more write attempt can take up to
# CONNECT + READ timeout (clients.py), then the response must still reach Lambda before its timeout.
SAFETY_MARGIN_MS = 10_000
# Budget when called without a Lambda context (tools, tests): the function's default timeout.
DEFAULT_REMAINING_MS = 60_000
DEAD_LETTER_UNAVAILABLE = "dead_letter_unavailable"
# Item attributes for what the producer's envelope carried (a source's `add: {envelope: true}` transform).
PRODUCER_SOURCE = "ProducerSource"
RECEIVED_AT = "ReceivedAt"


@dataclass(frozen=True)
class _Source:
    """Where an item came from: the record's position in the batch and the user record itself."""

    index: int
    record: UserRecord


def _remaining_ms(context: Any) -> int:
    get_remaining = getattr(context, "get_remaining_time_in_millis", None)
    return int(get_remaining()) if callable(get_remaining) else DEFAULT_REMAINING_MS


class _Invocation:
    """The state of one handler call (several may run at once in one process: nothing here is shared)."""

    def __init__(self, settings: ProcessorSettings, clients: ProcessorClients, context: Any, metrics: InvocationMetrics) -> None:
        self.settings = settings
        self.clients = clients
        self.metrics = metrics
        self.started_at = datetime.now(UTC)
        self.deadline = time.monotonic() + max(0, _remaining_ms(context) - SAFETY_MARGIN_MS) / 1000
        self.request_id = getattr(context, "aws_request_id", None)
        self._dead_letters: DeadLetterDestination | None = None
        self._position: dict[int, int] = {}

    def dead_letter(self, record: UserRecord, failure: PermanentFailure) -> None:
        """Send to the dead-letter destination; raises DeadLetterUnavailable if it refuses."""
        if self._dead_letters is None:
            self._dead_letters = destination(self.settings, self.clients.sqs)
        correlation = {
            "shard_id": record.shard_id,
            "sequence_number": record.sequence_number,
            "sub_sequence_number": record.sub_sequence_number,
            "reason": failure.reason,
        }
        try:
            self._dead_letters.send(dead_letter_entry(record, failure))
        except DeadLetterUnavailable as exc:
            self.metrics.failure(DEAD_LETTER_UNAVAILABLE)
            logger.error("dead-letter destination failed; the record will be retried", extra=correlation | {"error": str(exc)})
            raise
        self.metrics.add(telemetry.DEAD_LETTERED)
        self.metrics.failure(failure.reason)
        logger.warning(
            f"record dead-lettered: {failure.detail}", extra=correlation | {"destination": self._dead_letters.description}
        )

    def prepare(self, record: KinesisStreamRecord) -> list[PutItem[_Source]]:
        """Phase 1 (per Kinesis record): the items to write. Permanent failures are dead-lettered here."""
        raw = record.raw_event
        index = self._position.setdefault(id(raw), len(self._position))
        self.metrics.add(telemetry.RECORDS)
        try:
            users = user_records(raw)
        except PermanentFailure as failure:
            data = (raw.get("kinesis") or {}).get("data")
            self.dead_letter(envelope(raw, data.encode("utf-8", "replace") if isinstance(data, str) else b""), failure)
            return []
        puts: list[PutItem[_Source]] = []
        for user in users:
            self.metrics.add(telemetry.USER_RECORDS)
            try:
                event, wrapped = unwrap_envelope(parse_json(user))
                deletion = map_deletion(event)
                if deletion is not None:
                    if deletion.username is None:
                        # The table is keyed by author first: a delete of a status the source never saw
                        # cannot find its item (if one exists). Counted, not dead-lettered: nothing to retry.
                        self.metrics.add(telemetry.DELETES_WITHOUT_AUTHOR)
                        continue
                    puts.append(PutItem(item=build_key(deletion), ref=_Source(index, user), delete=True))
                    continue
                post = map_event(event, self.settings.generic)
                extra = None if wrapped is None else {PRODUCER_SOURCE: wrapped.source, RECEIVED_AT: wrapped.received_at}
                item = build_item(
                    post, user.arrival or self.started_at, self.settings.ttl_attribute, self.settings.ttl_days, extra
                )
            except PermanentFailure as failure:
                self.dead_letter(user, failure)
                continue
            except Exception as exc:  # noqa: BLE001 - see PROCESSING_ERROR
                logger.exception(
                    "unexpected error mapping a record",
                    extra={"shard_id": user.shard_id, "sequence_number": user.sequence_number},
                )
                self.dead_letter(user, PermanentFailure(PROCESSING_ERROR, f"{type(exc).__name__}: {exc}"))
                continue
            puts.append(PutItem(item=item, ref=_Source(index, user)))
        return puts

    def write(self, puts: list[PutItem[_Source]]) -> set[int]:
        """Phase 2 (whole batch): write the items; returns the batch positions of records to retry."""
        if not puts:
            return set()
        report = TableWriter(self.clients.dynamodb(), self.settings.table_name).write(puts, self.deadline)
        deleted = sum(1 for put in report.written if put.delete)
        self.metrics.add(telemetry.ITEMS_WRITTEN, len(report.written) - deleted)
        if deleted:
            self.metrics.add(telemetry.ITEMS_DELETED, deleted)
        self.metrics.add(telemetry.DUPLICATES_COLLAPSED, report.duplicates_collapsed)
        retry: set[int] = set()
        for put, message in report.rejected:
            try:
                self.dead_letter(put.ref.record, PermanentFailure(REJECTED_BY_TABLE, message))
            except DeadLetterUnavailable:
                retry.add(put.ref.index)
        for put, error in report.unwritten:
            self.metrics.failure(error.split(":", 1)[0])
            retry.add(put.ref.index)
        if report.unwritten:
            first = report.unwritten[0]
            logger.warning(
                f"{len(report.unwritten)} items not written before the deadline; their records will be retried",
                extra={
                    "shard_id": first[0].ref.record.shard_id,
                    "first_sequence_number": first[0].ref.record.sequence_number,
                    "last_error": first[1],
                    "calls": report.calls,
                },
            )
        return retry


class _TableBatchProcessor(BatchProcessor):
    """Powertools' Kinesis BatchProcessor with a batch-level write after the per-record phase."""

    def __init__(self, invocation: _Invocation) -> None:
        super().__init__(event_type=EventType.KinesisDataStreams, raise_on_entire_batch_failure=False)
        self._invocation = invocation

    def process(self) -> list[tuple[Any, ...]]:
        results = super().process()
        puts = [put for status, result, _ in results if status == "success" for put in result]
        retry = self._invocation.write(puts)
        if retry:
            # Records whose items were not written join the failures Powertools collected in phase 1.
            failed_raw = [raw for index, raw in enumerate(self.records) if index in retry]
            self.success_messages = [raw for raw in self.success_messages if all(raw is not f for f in failed_raw)]
            self.fail_messages.extend(self._to_batch_type(record=raw, event_type=self.event_type) for raw in failed_raw)
            # Report in stream order, as phase 1 did: Lambda resumes from the lowest failed sequence number.
            position = {id(raw): index for index, raw in enumerate(self.records)}
            self.fail_messages.sort(key=lambda message: position[id(cast(KinesisStreamRecord, message).raw_event)])
        return results


def _handle(
    event: dict[str, Any], context: Any, settings: ProcessorSettings, clients: ProcessorClients
) -> PartialItemFailureResponse:
    """One invocation, whichever entry point (Lambda's `handler`, or a `Processor`) received it."""
    started = time.monotonic()
    if isinstance(event, dict) and event.get("Records") == []:
        return {"batchItemFailures": []}  # Powertools refuses an empty batch; there is nothing to do
    metrics = InvocationMetrics()
    invocation = _Invocation(settings, clients, context, metrics)
    try:
        response = process_partial_response(
            event=event, record_handler=invocation.prepare, processor=_TableBatchProcessor(invocation), context=context
        )
        failures = len(response.get("batchItemFailures", []))
        metrics.add(telemetry.BATCH_ITEM_FAILURES, failures)
        summary = {"request_id": invocation.request_id, "counts": dict(metrics.counts), "failures": dict(metrics.failures)}
        if failures or metrics.failures:
            logger.info("batch processed with failures", extra=summary)
        else:
            logger.debug("batch processed", extra=summary)
        return response
    finally:
        metrics.flush((time.monotonic() - started) * 1000)


_ENVIRONMENT_CLIENTS = EnvironmentClients()


def handler(event: dict[str, Any], context: Any) -> PartialItemFailureResponse:
    """Lambda entry point for Kinesis events; returns {"batchItemFailures": [{"itemIdentifier": seq}, ...]}.

    Settings and clients come from the function's environment, as Lambda sets it.
    """
    try:
        settings = ProcessorSettings.from_environ()
    except ConfigurationError as exc:
        logger.error(f"processor misconfigured: {exc}")
        raise
    return _handle(event, context, settings, _ENVIRONMENT_CLIENTS)


class Processor:
    """A handler(event, context) bound to explicit settings and clients; neither comes from the environment.

    Parameters
    ----------
    settings:
        What Lambda would read from the environment (e.g. `ProcessorSettings.from_environ(mapping)`).
    dynamodb:
        The boto3 DynamoDB client the table is written with.
    sqs:
        The boto3 SQS client for the dead-letter queue; required when `settings` names one.
    """

    def __init__(self, settings: ProcessorSettings, *, dynamodb: Any, sqs: Any | None = None) -> None:
        if settings.dead_letter_queue_url and sqs is None:
            raise ConfigurationError(
                f"dead-letter queue {settings.dead_letter_queue_url} is configured but no SQS client was given"
            )
        self.settings = settings
        self._clients = GivenClients(dynamodb, sqs)

    def __call__(self, event: dict[str, Any], context: Any) -> PartialItemFailureResponse:
        return _handle(event, context, self.settings, self._clients)


def make_handler(settings: ProcessorSettings, *, dynamodb: Any, sqs: Any | None = None) -> Processor:
    """The processor as a handler(event, context) using these settings and clients (see `Processor`)."""
    return Processor(settings, dynamodb=dynamodb, sqs=sqs)
