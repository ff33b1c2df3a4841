"""A local stand-in for Lambda's Kinesis event source mapping: polls each shard and invokes the function.

Per shard, one reader thread calls GetRecords and routes records into `parallelization_factor` lanes by
partition key (so one key's records stay in order); each lane thread builds batches (batch size, batching
window) and invokes the function, one batch at a time. Failures are handled as Lambda does: a partial
batch response retries from the lowest failed record; a function error retries the batch, split in two
when bisecting; when retries or record age run out, the batch's metadata goes to the on-failure
destination and the lane moves on.
"""

from __future__ import annotations

import queue
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from daemon.embedded.events import (
    CONDITION_RECORD_AGE_EXCEEDED,
    CONDITION_RETRIES_EXHAUSTED,
    EventSource,
    LambdaContext,
    StreamRecord,
    failed_from,
)
from infra.settings import EventSourceMappingSettings

# Lambda polls an idle shard about once a second; shorter here keeps local end-to-end latency low.
IDLE_POLL_S = 0.2
# GetRecords returns at most 10,000 records per call.
GET_RECORDS_LIMIT = 10_000
# Back off between attempts on a failing batch, and when the endpoint cannot be reached.
RETRY_BACKOFF_S = (0.1, 0.2, 0.5, 1.0, 2.0)
ENDPOINT_ERROR_BACKOFF_S = 1.0
# Records read ahead per lane before the reader waits: bounds memory when the function is slow.
LANE_BACKLOG_RECORDS = 20_000
FUNCTION_ERROR = "Unhandled"
# -1 in Lambda's settings means "no limit".
UNLIMITED = -1


@dataclass
class RunnerStats:
    invocations: int = 0
    records_succeeded: int = 0
    function_errors: int = 0
    partial_failures: int = 0
    batches_sent_to_on_failure: int = 0
    records_sent_to_on_failure: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        with self.lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)


class EventSourceRunner:
    def __init__(
        self,
        *,
        kinesis: Any,
        stream_name: str,
        region: str,
        function: Callable[[dict[str, Any], Any], Any],
        settings: EventSourceMappingSettings,
        on_failure: Callable[[dict[str, Any]], None],
        function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:local",
        function_timeout_s: float = 60.0,
        memory_mb: int = 256,
        logger: Any = None,
        idle_poll_s: float = IDLE_POLL_S,
        retry_backoff_s: tuple[float, ...] = RETRY_BACKOFF_S,
        at_timestamp: float | None = None,
    ) -> None:
        self.kinesis = kinesis
        self.stream_name = stream_name
        self.function = function
        self.settings = settings
        self.on_failure = on_failure
        self.function_arn = function_arn
        self.function_timeout_s = function_timeout_s
        self.memory_mb = memory_mb
        self.log = logger
        self.idle_poll_s = idle_poll_s
        self.retry_backoff_s = retry_backoff_s
        self.at_timestamp = at_timestamp
        self.region = region
        self.stats = RunnerStats()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._source: EventSource | None = None

    def start(self) -> None:
        summary = self.kinesis.describe_stream_summary(StreamName=self.stream_name)["StreamDescriptionSummary"]
        account = self.function_arn.split(":")[4]
        self._source = EventSource(
            stream_arn=summary["StreamARN"],
            region=self.region,
            invoke_identity_arn=f"arn:aws:iam::{account}:role/{self.function_arn.rsplit(':', 1)[-1]}-role",
        )
        shards = self.kinesis.list_shards(StreamName=self.stream_name)["Shards"]
        for shard in shards:
            if "EndingSequenceNumber" in shard.get("SequenceNumberRange", {}) and self.settings.starting_position == "LATEST":
                continue  # a closed shard holds nothing new for a LATEST mapping
            lanes = [queue.Queue[StreamRecord | None](LANE_BACKLOG_RECORDS) for _ in range(self.settings.parallelization_factor)]
            shard_id = shard["ShardId"]
            self._spawn(f"esm-read-{shard_id}", self._read_shard, shard_id, lanes)
            for index, lane in enumerate(lanes):
                self._spawn(f"esm-{shard_id}-{index}", self._run_lane, shard_id, lane)

    def stop(self, timeout: float) -> None:
        """Finish the batches in flight (bounded by `timeout`) and stop every thread."""
        self._stopping.set()
        give_up = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, give_up - time.monotonic()))
        self._threads.clear()

    def _spawn(self, name: str, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _event(self, name: str, **fields: Any) -> None:
        if self.log is not None:
            self.log.warning(name, stream=self.stream_name, **fields)

    # --- reading --------------------------------------------------------------------------------

    def _iterator(self, shard_id: str, after: str | None) -> str | None:
        kwargs: dict[str, Any] = {"StreamName": self.stream_name, "ShardId": shard_id}
        if after is not None:
            kwargs |= {"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "StartingSequenceNumber": after}
        elif self.settings.starting_position == "AT_TIMESTAMP":
            kwargs |= {"ShardIteratorType": "AT_TIMESTAMP", "Timestamp": self.at_timestamp or time.time()}
        else:
            kwargs["ShardIteratorType"] = self.settings.starting_position
        iterator: str | None = self.kinesis.get_shard_iterator(**kwargs)["ShardIterator"]
        return iterator

    def _read_shard(self, shard_id: str, lanes: list[queue.Queue[StreamRecord | None]]) -> None:
        last_read: str | None = None
        iterator: str | None = None
        while not self._stopping.is_set():
            try:
                if iterator is None:
                    iterator = self._iterator(shard_id, last_read)
                    if iterator is None:
                        break
                response = self.kinesis.get_records(ShardIterator=iterator, Limit=GET_RECORDS_LIMIT)
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code")
                iterator = None  # ExpiredIteratorException and friends: resume after the last record read
                self._event("esm_get_records_failed", shard=shard_id, code=code)
                self._stopping.wait(ENDPOINT_ERROR_BACKOFF_S)
                continue
            except BotoCoreError as exc:
                self._event("esm_endpoint_unreachable", shard=shard_id, error=str(exc))
                self._stopping.wait(ENDPOINT_ERROR_BACKOFF_S)
                continue
            for raw in response["Records"]:
                record = StreamRecord.from_get_records(raw)
                lane = lanes[zlib.crc32(record.partition_key.encode()) % len(lanes)] if len(lanes) > 1 else lanes[0]
                while not self._stopping.is_set():
                    try:
                        lane.put(record, timeout=self.idle_poll_s)
                        break
                    except queue.Full:
                        continue
                last_read = record.sequence_number
            iterator = response.get("NextShardIterator")
            if iterator is None:
                break  # the shard was closed and fully read
            if not response["Records"]:
                self._stopping.wait(self.idle_poll_s)
        for lane in lanes:
            lane.put(None)  # tells the lane no more records will come

    # --- invoking -------------------------------------------------------------------------------

    def _run_lane(self, shard_id: str, lane: queue.Queue[StreamRecord | None]) -> None:
        ended = False
        while not ended and not self._stopping.is_set():
            batch, ended = self._collect(lane)
            if batch:
                self._deliver(shard_id, batch)

    def _collect(self, lane: queue.Queue[StreamRecord | None]) -> tuple[list[StreamRecord], bool]:
        """Up to batch_size records, waiting at most the batching window once the first has arrived."""
        batch: list[StreamRecord] = []
        window_ends: float | None = None
        while len(batch) < self.settings.batch_size:
            if window_ends is None:
                timeout = self.idle_poll_s
            else:
                timeout = window_ends - time.monotonic()
                if timeout <= 0:
                    break
            try:
                record = lane.get(timeout=timeout)
            except queue.Empty:
                if window_ends is None and self._stopping.is_set():
                    break
                continue
            if record is None:
                return batch, True
            batch.append(record)
            if window_ends is None:
                window_ends = time.monotonic() + self.settings.maximum_batching_window_seconds
        return batch, False

    def _deliver(self, shard_id: str, batch: list[StreamRecord]) -> None:
        """Invoke until every record of `batch` succeeded or went to the on-failure destination."""
        parts = [batch]
        attempts = 0  # retries of the current part
        invocations = 0
        while parts:
            part = parts[0]
            invocations += 1
            outcome = self._invoke(shard_id, part)
            if outcome is None:
                self.stats.add(records_succeeded=len(part))
                parts.pop(0)
                attempts = 0
                continue
            first_failed, error = outcome
            if first_failed > 0:
                self.stats.add(records_succeeded=first_failed)
                part = parts[0] = part[first_failed:]
            condition = self._exhausted(part, attempts)
            if condition is not None:
                failure = self._source.on_failure(  # type: ignore[union-attr]
                    shard_id, part, condition, invocations, self.function_arn, error
                )
                self._send_on_failure(failure, part)
                parts.pop(0)
                attempts = 0
                continue
            attempts += 1
            if error == FUNCTION_ERROR and self.settings.bisect_batch_on_function_error and len(part) > 1:
                middle = len(part) // 2
                parts[0:1] = [part[:middle], part[middle:]]
            backoff = self.retry_backoff_s[min(attempts, len(self.retry_backoff_s)) - 1]
            if self._stopping.wait(backoff):
                return  # stopping: as on Lambda, unfinished records are read again next time

    def _invoke(self, shard_id: str, part: list[StreamRecord]) -> tuple[int, str] | None:
        """None when the whole part succeeded; else (index of the first record to retry, error kind)."""
        assert self._source is not None
        context = LambdaContext(
            function_name=self.function_arn.rsplit(":", 1)[-1],
            invoked_function_arn=self.function_arn,
            memory_limit_in_mb=self.memory_mb,
            timeout_s=self.function_timeout_s,
        )
        self.stats.add(invocations=1)
        try:
            response = self.function(self._source.event(shard_id, part), context)
        except Exception as exc:  # noqa: BLE001 - a function error is data here, as it is for Lambda
            self.stats.add(function_errors=1)
            self._event("esm_function_error", shard=shard_id, records=len(part), error=f"{type(exc).__name__}: {exc}")
            return 0, FUNCTION_ERROR
        if not self.settings.report_batch_item_failures:
            return None
        first_failed = failed_from(response, part)
        if first_failed is None:
            return None
        self.stats.add(partial_failures=1)
        return first_failed, "PartialBatchFailure"

    def _exhausted(self, part: list[StreamRecord], attempts: int) -> str | None:
        retries = self.settings.maximum_retry_attempts
        if retries != UNLIMITED and attempts >= retries:
            return CONDITION_RETRIES_EXHAUSTED
        max_age = self.settings.maximum_record_age_seconds
        if max_age != UNLIMITED and time.time() - part[0].arrival > max_age:
            return CONDITION_RECORD_AGE_EXCEEDED
        return None

    def _send_on_failure(self, failure: dict[str, Any], part: list[StreamRecord]) -> None:
        self.stats.add(batches_sent_to_on_failure=1, records_sent_to_on_failure=len(part))
        try:
            self.on_failure(failure)
        except Exception as exc:  # noqa: BLE001 - the destination failing must not stop the shard
            self._event("esm_on_failure_destination_failed", error=f"{type(exc).__name__}: {exc}", failure=failure)
