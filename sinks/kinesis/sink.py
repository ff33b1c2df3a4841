"""The `kinesis` sink: prepare entries, then PutRecords with partial re-sends and backoff until delivered.

Three kinds of refusal, three treatments: a transient one (throttling, 5xx, network) is retried with
backoff up to `retry.max_attempts`; a refusal by the stream itself (access denied, no such stream, KMS key
unusable, credentials) holds the records and retries them with backoff, without an attempt limit, while
the sink reports itself unhealthy; a refusal of one record (invalid, named by the answer or found by
halving the request) dead-letters that record only.
"""

from __future__ import annotations

import random

from sinks.base import Deadline, Record, SinkEvents, register_sink
from sinks.batch import BatchLimits, BatchSink, WriteResult
from sinks.kinesis.config import KinesisSinkConfig
from sinks.kinesis.health import STARTUP_CHECK_TIMEOUT_S, check_stream, describe_target
from sinks.kinesis.records import EntryBuilder, KinesisEntry
from sinks.kinesis.retry import REASON_PUT_REJECTED, REASON_RETRIES_EXHAUSTED, Backoff, Decision, decide
from sinks.kinesis.service import CallFailed, KinesisService, PutOutcome, PutResponse


@register_sink
class KinesisSink(BatchSink[KinesisEntry]):
    config_model = KinesisSinkConfig
    config: KinesisSinkConfig

    def __init__(self, config: KinesisSinkConfig, events: SinkEvents, rng: random.Random | None = None) -> None:
        super().__init__(config, events)
        self.builder = EntryBuilder(config.partition_key, config.max_record_bytes)
        self.service = KinesisService(config)
        self.backoff = Backoff(config.retry.initial_backoff, config.retry.max_backoff, rng)
        self._limits = BatchLimits(config.max_batch_records, config.max_batch_bytes, config.linger)
        self.unhealthy: str | None = None  # the error code the stream refused everything with, while it does

    @property
    def limits(self) -> BatchLimits:
        return self._limits

    def check(self, timeout_s: float = STARTUP_CHECK_TIMEOUT_S) -> None:
        check_stream(self.service, self.config, timeout_s)

    def prepare(self, record: Record) -> KinesisEntry:
        return self.builder.build(record)

    def write(self, batch: list[KinesisEntry], deadline: Deadline) -> WriteResult[KinesisEntry]:
        result: WriteResult[KinesisEntry] = WriteResult()
        pending = list(batch)
        window = len(pending)  # entries per request; shrinks while halving an invalid request
        bisecting = False  # until the entry at fault is found, successes do not widen the window again
        failures = 0  # consecutive attempts that needed a backoff: the backoff's exponent
        tries: dict[int, int] = {}  # id(entry) -> transient failures, against retry.max_attempts
        max_attempts = self.config.retry.max_attempts
        while pending:
            if deadline.expired():
                result.unsent.extend(pending)
                break
            request, rest = pending[:window], pending[window:]
            outcome = self.service.put_records(request)
            decision = decide(outcome, len(request))
            self._report(outcome, decision, request)
            self._track_health(outcome, decision)
            if decision.split:
                bisecting, window = True, max(1, len(request) // 2)  # the same entries, in smaller requests, at once
                continue
            retry, hold = set(decision.retry), set(decision.hold)
            again_positions = sorted(retry | hold | set(decision.resend))
            settled = set(again_positions) | {position for position, _ in decision.reject}
            result.sent.extend(e for i, e in enumerate(request) if i not in settled)
            result.failed.extend((request[i], REASON_PUT_REJECTED, detail) for i, detail in decision.reject)
            again: list[KinesisEntry] = []
            backing_off = False
            for i in again_positions:
                entry = request[i]
                if i in retry:
                    tries[id(entry)] = tries.get(id(entry), 0) + 1
                    if max_attempts and tries[id(entry)] >= max_attempts:
                        detail = f"not accepted after {tries[id(entry)]} attempts (last: {', '.join(sorted(decision.codes))})"
                        result.failed.append((entry, REASON_RETRIES_EXHAUSTED, detail))
                        continue
                backing_off = backing_off or i in retry or i in hold
                again.append(entry)
            pending = again + rest
            if not bisecting or decision.reject:
                bisecting, window = False, len(pending)
            if not pending:
                break
            if not backing_off:
                continue
            failures += 1
            delay = self.backoff.delay(failures)
            remaining = deadline.remaining()
            if remaining is not None and delay >= remaining:
                # No re-send can start before the deadline: return now, and announce no retry that won't happen.
                result.unsent.extend(pending)
                break
            self.events.records_retried(
                records=len(again), attempt=failures, delay_s=delay, reason=",".join(sorted(decision.codes))
            )
            if deadline.sleep(delay):
                result.unsent.extend(pending)
                break
        return result

    def _report(self, outcome: PutOutcome, decision: Decision, request: list[KinesisEntry]) -> None:
        not_taken = len(decision.retry) + len(decision.hold) + len(decision.reject) + len(decision.resend)
        if decision.split:
            not_taken = len(request)
        self.events.put_requested(
            result=decision.result, records=len(request), accepted=len(request) - not_taken, latency_s=outcome.latency_s
        )
        if isinstance(outcome, CallFailed):
            detail = f"{outcome.kind.value}: {outcome.message}"
            for code, count in decision.codes.items():
                self.events.put_failed(code=code, records=count, detail=detail)
            return
        messages = {f.code: f.message for f in reversed(outcome.failures)}  # the first message of each code
        for code, count in sorted(decision.codes.items()):
            self.events.put_failed(code=code, records=count, detail=f"entries refused in a partial response: {messages[code]}")

    def _track_health(self, outcome: PutOutcome, decision: Decision) -> None:
        """Unhealthy while the stream refuses everyone; healthy again at the first request it answers normally."""
        if decision.unhealthy is not None:
            code, message = decision.unhealthy
            if self.unhealthy != code:
                self.unhealthy = code
                detail = f"{describe_target(self.service)} refuses writes: {code}: {message}; records are held and retried"
                self.events.sink_health(healthy=False, reason=code, detail=detail)
        elif isinstance(outcome, PutResponse) and self.unhealthy is not None:
            reason, self.unhealthy = self.unhealthy, None
            self.events.sink_health(healthy=True, reason=reason, detail=f"{describe_target(self.service)} takes writes again")

    def close(self) -> None:
        self.service.close()

