"""A local stand-in for Lambda's Kinesis event source mapping: polls each shard and invokes the function.

Per shard, one reader thread calls GetRecords and routes records into `parallelization_factor` lanes by
partition key (so one key's records stay in order); each lane builds batches (BatchSize, batching window,
payload limit) and invokes the function one batch at a time (`runner_lane`). Failures are handled as
Lambda does: a partial batch response retries from the lowest failed record; a function error retries the
batch, split in two when bisecting; when retries or record age run out, the batch's metadata goes to the
on-failure destination and the lane moves on. A child shard is read once its parents are done.
"""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from embedded.event_source_mapping.checkpoints import ShardProgress
from embedded.event_source_mapping.events import EventSource, StreamRecord
from embedded.event_source_mapping.invocation import Invoker
from embedded.event_source_mapping.lanes import Lane, LaneTiming, backoff_delay
from embedded.event_source_mapping.settings import validate_settings
from embedded.event_source_mapping.stats import PollerStats, StatsRecorder
from infra.settings import EventSourceMappingSettings

__all__ = ["EventSourcePoller", "PollerStats"]

# Lambda polls an idle shard about once a second; shorter here keeps local end-to-end latency low.
IDLE_POLL_S = 0.2
# GetRecords returns at most 10,000 records per call.
GET_RECORDS_LIMIT = 10_000
# Retries of a failed batch back off exponentially between these bounds.
RETRY_BACKOFF_BASE_S = 0.1
RETRY_BACKOFF_CAP_S = 2.0
# Errors reaching the endpoint (connection refused while it restarts, 5xx, throttling) back off likewise.
ENDPOINT_BACKOFF_BASE_S = 0.2
ENDPOINT_BACKOFF_CAP_S = 5.0
# GetRecords errors that leave the iterator valid: retry it after a backoff.
_THROTTLING_CODES = frozenset({"ProvisionedThroughputExceededException", "LimitExceededException", "KMSThrottlingException"})


@dataclass
class _Shard:
    shard_id: str
    parents: tuple[str, ...]
    start_type: str  # the iterator type until a record was read
    progress: ShardProgress
    at_timestamp: float | None = None
    iterator: str | None = None  # taken in start() for LATEST, so records put after start() are seen
    lanes: list[Lane] = field(default_factory=list)
    lane_threads: list[threading.Thread] = field(default_factory=list)
    finished: threading.Event = field(default_factory=threading.Event)


class EventSourcePoller:
    """Polls a Kinesis stream's shards and invokes `function` as Lambda's event source mapping would.

    `on_failure` receives Lambda's on-failure record (metadata, never data) for each batch given up on;
    `stats` and `checkpoints` report progress. Call start() once, and stop() to end every thread.
    """

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
        retry_backoff_base_s: float = RETRY_BACKOFF_BASE_S,
        retry_backoff_cap_s: float = RETRY_BACKOFF_CAP_S,
        endpoint_backoff_base_s: float = ENDPOINT_BACKOFF_BASE_S,
        endpoint_backoff_cap_s: float = ENDPOINT_BACKOFF_CAP_S,
        at_timestamp: float | None = None,
        resume_from: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`resume_from` maps shard ids to checkpoints (see `checkpoints`): those shards continue after them.
        `at_timestamp` (epoch seconds) is where an AT_TIMESTAMP mapping starts; `clock` gives wall time for
        record ages."""
        validate_settings(settings)
        if settings.starting_position == "AT_TIMESTAMP" and at_timestamp is None:
            raise ValueError("starting_position AT_TIMESTAMP needs at_timestamp (epoch seconds)")
        if logger is None:
            from daemon.logs import get_logger

            logger = get_logger(component="event-source-runner")
        self.kinesis = kinesis
        self.stream_name = stream_name
        self.region = region
        self.function = function
        self.settings = settings
        self.on_failure = on_failure
        self.function_arn = function_arn
        self.function_timeout_s = function_timeout_s
        self.memory_mb = memory_mb
        self.log = logger.bind(stream=stream_name) if hasattr(logger, "bind") else logger
        self.at_timestamp = at_timestamp
        self._timing = LaneTiming(idle_poll_s, retry_backoff_base_s, retry_backoff_cap_s)
        self._endpoint_backoff = (endpoint_backoff_base_s, endpoint_backoff_cap_s)
        self._resume_from = dict(resume_from or {})
        self._clock = clock
        self._stats = StatsRecorder()
        self._stopping = threading.Event()
        self._lock = threading.Lock()  # guards _shards and _threads (discovery adds to them at run time)
        self._shards: dict[str, _Shard] = {}
        self._threads: list[threading.Thread] = []
        self._source: EventSource | None = None
        self._invoker: Invoker | None = None
        self._stopped = False

    @property
    def stats(self) -> PollerStats:
        return self._stats.snapshot()

    @property
    def stopping(self) -> bool:
        """True once stop() was called (it may still be waiting for the invocations in flight)."""
        return self._stopping.is_set()

    @property
    def checkpoints(self) -> dict[str, str]:
        """Per shard, the sequence number up to which every record is done; pass it as `resume_from`."""
        with self._lock:
            shards = list(self._shards.values())
        return {s.shard_id: cp for s in shards if (cp := s.progress.checkpoint) is not None}

    def start(self) -> None:
        """Discover the stream's shards and start polling them. Errors reaching the stream are raised."""
        summary = self.kinesis.describe_stream_summary(StreamName=self.stream_name)["StreamDescriptionSummary"]
        account = self.function_arn.split(":")[4]
        self._source = EventSource(
            stream_arn=summary["StreamARN"],
            region=self.region,
            invoke_identity_arn=f"arn:aws:iam::{account}:role/{self.function_arn.rsplit(':', 1)[-1]}-role",
        )
        self._invoker = Invoker(
            function=self.function,
            source=self._source,
            function_arn=self.function_arn,
            timeout_s=self.function_timeout_s,
            memory_mb=self.memory_mb,
            report_batch_item_failures=self.settings.report_batch_item_failures,
            stats=self._stats,
            log=self.log,
        )
        for shard in self._list_shards():
            closed = "EndingSequenceNumber" in shard.get("SequenceNumberRange", {})
            if closed and self.settings.starting_position == "LATEST" and shard["ShardId"] not in self._resume_from:
                continue  # a closed shard holds nothing new for a LATEST mapping
            self._add_shard(shard, self.settings.starting_position)
        self.log.info("esm_started", shards=sorted(self._shards), settings=repr(self.settings))

    def stop(self, timeout: float) -> None:
        """Let the invocations in flight finish (bounded by `timeout`), start no new one, stop every thread."""
        if self._stopped:
            return
        self._stopped = True
        self._stopping.set()
        give_up = time.monotonic() + timeout
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(max(0.0, give_up - time.monotonic()))
        alive = [t.name for t in threads if t.is_alive()]
        if alive:
            # A function still running past the timeout cannot be interrupted in-process; its thread is a
            # daemon thread, so it cannot keep the process alive, and its batch stays behind the checkpoint.
            self.log.error("esm_threads_still_running", threads=alive, timeout_s=timeout)
        with self._lock:
            unfinished = sum(shard.progress.outstanding for shard in self._shards.values())
        self._stats.add(records_unfinished_at_stop=unfinished)
        self.log.info("esm_stopped", checkpoints=self.checkpoints, records_unfinished=unfinished, stats=repr(self.stats))

    # --- shards ---------------------------------------------------------------------------------

    def _list_shards(self) -> list[dict[str, Any]]:
        shards: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"StreamName": self.stream_name}
        while True:
            page = self.kinesis.list_shards(**kwargs)
            shards.extend(page["Shards"])
            if not page.get("NextToken"):
                return shards
            kwargs = {"NextToken": page["NextToken"]}  # ListShards rejects StreamName with NextToken

    def _add_shard(self, description: dict[str, Any], start_type: str) -> None:
        assert self._invoker is not None and self._source is not None
        shard_id = description["ShardId"]
        parents = tuple(p for p in (description.get("ParentShardId"), description.get("AdjacentParentShardId")) if p)
        shard = _Shard(shard_id, parents, start_type, ShardProgress(self._resume_from.get(shard_id)), self.at_timestamp)
        for _ in range(self.settings.parallelization_factor):
            shard.lanes.append(
                Lane(
                    shard_id=shard_id,
                    settings=self.settings,
                    invoker=self._invoker,
                    source=self._source,
                    function_arn=self.function_arn,
                    on_failure=self.on_failure,
                    progress=shard.progress,
                    stats=self._stats,
                    stopping=self._stopping,
                    timing=self._timing,
                    clock=self._clock,
                    log=self.log,
                )
            )
        if start_type == "LATEST" and shard.progress.checkpoint is None:
            shard.iterator = self._iterator(shard, None)
        with self._lock:
            if shard_id in self._shards or self._stopping.is_set():
                return
            self._shards[shard_id] = shard
            for index, lane in enumerate(shard.lanes):
                shard.lane_threads.append(self._spawn(f"esm-{shard_id}-lane{index}", lane.run))
            self._spawn(f"esm-{shard_id}-reader", self._read_shard, shard)
        self._stats.add(shards_started=1)

    def _spawn(self, name: str, target: Callable[..., None], *args: Any) -> threading.Thread:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()
        return thread

    def _discover_children(self, parent: _Shard) -> None:
        """After a shard closed, start its children (resharding), reading them from their beginning."""
        attempt = 0
        while not self._stopping.is_set():
            try:
                shards = self._list_shards()
                break
            except (BotoCoreError, ClientError) as exc:
                attempt += 1
                self._endpoint_error("esm_list_shards_failed", parent.shard_id, exc, attempt)
        else:
            return
        for description in shards:
            if parent.shard_id in (description.get("ParentShardId"), description.get("AdjacentParentShardId")):
                self._add_shard(description, "TRIM_HORIZON")

    # --- reading --------------------------------------------------------------------------------

    def _endpoint_error(self, event: str, shard_id: str, exc: BaseException, attempt: int) -> None:
        self._stats.add(endpoint_errors=1)
        self.log.warning(event, shard=shard_id, attempt=attempt, error=f"{type(exc).__name__}: {exc}")
        self._stopping.wait(backoff_delay(attempt, *self._endpoint_backoff))

    def _iterator(self, shard: _Shard, after: str | None) -> str:
        kwargs: dict[str, Any] = {"StreamName": self.stream_name, "ShardId": shard.shard_id}
        if after is not None:
            kwargs |= {"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "StartingSequenceNumber": after}
        elif shard.start_type == "AT_TIMESTAMP":
            kwargs |= {"ShardIteratorType": "AT_TIMESTAMP", "Timestamp": shard.at_timestamp}
        else:
            kwargs["ShardIteratorType"] = shard.start_type
        iterator: str = self.kinesis.get_shard_iterator(**kwargs)["ShardIterator"]
        if shard.start_type == "LATEST" and after is None:
            # Should this iterator need replacing before a record was read, resume from this moment rather
            # than from a later LATEST that would skip what arrived in between.
            shard.start_type, shard.at_timestamp = "AT_TIMESTAMP", self._clock()
        return iterator

    def _read_shard(self, shard: _Shard) -> None:
        if not self._wait_for_parents(shard):
            return
        after = shard.progress.checkpoint  # a resumed shard continues after its checkpoint
        iterator = shard.iterator
        attempt = 0
        closed = False
        while not self._stopping.is_set():
            try:
                if iterator is None:
                    iterator = self._iterator(shard, after)
                response = self.kinesis.get_records(ShardIterator=iterator, Limit=GET_RECORDS_LIMIT)
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "")
                if code == "ExpiredIteratorException":
                    # Records already read wait in the lanes, so continue after the last one read, not the
                    # checkpoint (which would hand them over twice); a resumed runner uses the checkpoint.
                    self._stats.add(iterator_refreshes=1)
                    self.log.info("esm_iterator_expired", shard=shard.shard_id, after=after)
                    iterator = None
                    continue
                if code not in _THROTTLING_CODES:
                    iterator = None
                attempt += 1
                self._endpoint_error("esm_get_records_failed", shard.shard_id, exc, attempt)
                continue
            except BotoCoreError as exc:  # connection refused, timeouts: the iterator is still good
                attempt += 1
                self._endpoint_error("esm_endpoint_unreachable", shard.shard_id, exc, attempt)
                continue
            except Exception as exc:  # never let the reader die silently
                attempt += 1
                iterator = None
                self._stats.add(internal_errors=1)
                self.log.error("esm_reader_error", shard=shard.shard_id, error=f"{type(exc).__name__}: {exc}", exc_info=True)
                self._stopping.wait(backoff_delay(attempt, *self._endpoint_backoff))
                continue
            attempt = 0
            records = [StreamRecord.from_get_records(raw) for raw in response.get("Records", [])]
            if records and not self._route(shard, records):
                break  # stopping: what could not be queued stays outstanding, behind the checkpoint
            if records:
                after = records[-1].sequence_number
            iterator = response.get("NextShardIterator")
            if iterator is None:
                closed = True
                break
            if not records:
                self._stopping.wait(self._timing.idle_poll_s)
        for lane in shard.lanes:
            lane.close()
        if closed:
            self._finish_closed_shard(shard)

    def _route(self, shard: _Shard, records: list[StreamRecord]) -> bool:
        """Register the records in read order (the checkpoint's order), then hand each lane its share."""
        shares: list[list[StreamRecord]] = [[] for _ in shard.lanes]
        for record in records:
            shard.progress.read(record.sequence_number)
            shares[zlib.crc32(record.partition_key.encode()) % len(shard.lanes)].append(record)
        self._stats.add(records_read=len(records))
        return all(lane.offer(share) for lane, share in zip(shard.lanes, shares, strict=True) if share)

    def _wait_for_parents(self, shard: _Shard) -> bool:
        """A child shard is read only after its parents' records are all done (order per key across a
        reshard); parents this runner does not know (expired, skipped) are not waited for."""
        with self._lock:
            parents = [self._shards[p] for p in shard.parents if p in self._shards]
        for parent in parents:
            while not parent.finished.is_set():
                if self._stopping.wait(self._timing.idle_poll_s):
                    return False
        return True

    def _finish_closed_shard(self, shard: _Shard) -> None:
        for thread in shard.lane_threads:
            while thread.is_alive() and not self._stopping.is_set():
                thread.join(self._timing.idle_poll_s)
        if self._stopping.is_set() or shard.progress.outstanding:
            return
        shard.finished.set()
        self._stats.add(shards_finished=1)
        self.log.info("esm_shard_finished", shard=shard.shard_id, checkpoint=shard.progress.checkpoint)
        self._discover_children(shard)
