"""The `kinesis` sink: prepare entries, then PutRecords with partial re-sends and backoff until delivered."""

from __future__ import annotations

import random

from sinks.base import BatchLimits, Deadline, Record, Sink, SinkEvents, WriteResult, register_sink
from sinks.kinesis.config import KinesisSinkConfig
from sinks.kinesis.records import EntryBuilder, KinesisEntry
from sinks.kinesis.retry import REASON_PUT_REJECTED, REASON_RETRIES_EXHAUSTED, Backoff, decide
from sinks.kinesis.service import CallFailed, KinesisService, PutOutcome


@register_sink
class KinesisSink(Sink[KinesisEntry]):
    config_model = KinesisSinkConfig
    config: KinesisSinkConfig

    def __init__(self, config: KinesisSinkConfig, events: SinkEvents, rng: random.Random | None = None) -> None:
        super().__init__(config, events)
        self.builder = EntryBuilder(config.partition_key, config.max_record_bytes)
        self.service = KinesisService(config)
        self.backoff = Backoff(config.retry.initial_backoff, config.retry.max_backoff, rng)
        self._limits = BatchLimits(config.max_batch_records, config.max_batch_bytes, config.linger)

    @property
    def limits(self) -> BatchLimits:
        return self._limits

    def prepare(self, record: Record) -> KinesisEntry:
        return self.builder.build(record)

    def write(self, batch: list[KinesisEntry], deadline: Deadline) -> WriteResult[KinesisEntry]:
        result: WriteResult[KinesisEntry] = WriteResult()
        pending = batch
        attempt = 0
        max_attempts = self.config.retry.max_attempts
        while pending:
            if deadline.expired():
                result.unsent.extend(pending)
                break
            attempt += 1
            outcome = self.service.put_records(pending)
            decision = decide(outcome, len(pending))
            self._report(outcome, decision.codes, len(pending))
            retry = set(decision.retry)
            rejected = {position for position, _ in decision.reject}
            result.sent.extend(e for i, e in enumerate(pending) if i not in retry and i not in rejected)
            result.failed.extend((pending[i], REASON_PUT_REJECTED, detail) for i, detail in decision.reject)
            pending = [pending[i] for i in decision.retry]
            if not pending:
                break
            if max_attempts and attempt >= max_attempts:
                detail = f"not accepted after {attempt} attempts (last: {', '.join(sorted(decision.codes))})"
                result.failed.extend((e, REASON_RETRIES_EXHAUSTED, detail) for e in pending)
                break
            delay = self.backoff.delay(attempt)
            remaining = deadline.remaining()
            if remaining is not None and delay >= remaining:
                # No re-send can start before the deadline: return now, and announce no retry that won't happen.
                result.unsent.extend(pending)
                break
            self.events.records_retried(
                records=len(pending), attempt=attempt, delay_s=delay, reason=",".join(sorted(decision.codes))
            )
            if deadline.sleep(delay):
                result.unsent.extend(pending)
                break
        return result

    def _report(self, outcome: PutOutcome, codes: dict[str, int], entries: int) -> None:
        if isinstance(outcome, CallFailed):
            detail = f"{outcome.kind.value}: {outcome.message}"
            self.events.put_failed(code=outcome.code, records=entries, latency_s=outcome.latency_s, detail=detail)
            return
        failed = sum(codes.values())
        self.events.put_succeeded(records=entries - failed, latency_s=outcome.latency_s)
        for code, count in codes.items():
            self.events.put_failed(code=code, records=count, latency_s=None, detail="entries failed in a partial response")

    def close(self) -> None:
        self.service.close()
