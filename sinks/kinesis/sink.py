"""The `kinesis` sink: prepare entries, then hand them to the delivery engine (engine.py) that keeps several
PutRecords requests in flight, per shard, and reports each record's end through the daemon's completion.

Three kinds of refusal, three treatments: a transient one (throttling, 5xx, network) is retried with
backoff up to the per-record budget (`retry.max_attempts`, `retry.max_age`); a refusal by the stream
itself (access denied, no such stream, KMS key unusable, credentials) holds the records and retries them
with backoff, without an attempt limit, while the sink reports itself unhealthy; a refusal of one record
(invalid, named by the answer or found by halving the request) dead-letters that record only.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence

from botocore.exceptions import BotoCoreError, ClientError

from sinks.base import Completion, Deadline, Record, Sink, SinkEvents, register_sink
from sinks.kinesis.config import KinesisSinkConfig
from sinks.kinesis.engine import Engine, Transport
from sinks.kinesis.health import STARTUP_CHECK_TIMEOUT_S, HealthTracker, check_stream, describe_target
from sinks.kinesis.records import EntryBuilder, KinesisEntry
from sinks.kinesis.retry import Backoff
from sinks.kinesis.routing import UNKNOWN_SHARD, Router
from sinks.kinesis.service import KinesisService
from sinks.kinesis.shards import Shard, ShardMap, ShardMapError, list_open_shards
from sinks.kinesis.wire import PutRecordsClient

# Refreshes on evidence (misroutes, a possibly closed shard) at most this often: a burst of misrouted
# answers while the map is stale costs one ListShards, not one per answer.
EVIDENCE_REFRESH_MIN_INTERVAL_S = 1.0
_EVIDENCE_REASONS = frozenset({"misroute", "closed_shard", "child_shards"})

ShardLister = Callable[[], list[Shard]]


@register_sink
class KinesisSink(Sink[KinesisEntry]):
    config_model = KinesisSinkConfig
    config: KinesisSinkConfig

    def __init__(
        self,
        config: KinesisSinkConfig,
        events: SinkEvents,
        rng: random.Random | None = None,
        *,
        transport: Transport | None = None,
        lister: ShardLister | None = None,
    ) -> None:
        super().__init__(config, events)
        self.builder = EntryBuilder(config.partition_key, config.max_record_bytes)
        self.service = KinesisService(config)
        self.backoff = Backoff(config.retry.initial_backoff, config.retry.max_backoff, rng)
        self.transport: Transport = transport or PutRecordsClient(
            self.service.session,
            self.service.region or "",
            self.service.endpoint,
            connect_timeout=config.connect_timeout,
            read_timeout=config.read_timeout,
            max_connections=config.in_flight,
        )
        self._lister = lister or (lambda: list_open_shards(self.service.client, self.service.stream))
        self._last_listed: list[Shard] = []
        self.shard_map = ShardMap(self._list_shards, refresh_interval_s=config.shard_map.refresh_interval)
        self.health = HealthTracker(events, describe_target(self.service))
        self._refresh_lock = threading.Lock()
        self._last_evidence_refresh = -EVIDENCE_REFRESH_MIN_INTERVAL_S
        self._engine: Engine | None = None
        self._destination: str | None = None
        self._stop_map = threading.Event()
        self._map_thread: threading.Thread | None = None

    @property
    def unhealthy(self) -> str | None:
        return self.health.unhealthy

    def check(self, timeout_s: float = STARTUP_CHECK_TIMEOUT_S) -> None:
        summary = check_stream(self.service, self.config, timeout_s)
        self._destination = summary.identity(f"{self.service.endpoint}/{self.service.stream}")
        self._ensure_map()

    def destination(self) -> str | None:
        """The stream checked at start-up: its ARN and creation time (None before `check`)."""
        return self._destination

    def prepare(self, record: Record) -> KinesisEntry:
        return self.builder.build(record)

    # --- the v2 contract ------------------------------------------------------------------------------

    def start(self, completion: Completion[KinesisEntry]) -> None:
        self._ensure_map()
        self._engine = self._new_engine()
        self._engine.start(completion)
        self._map_thread = threading.Thread(target=self._refresh_periodically, name="kinesis-shard-map", daemon=True)
        self._map_thread.start()

    def submit(self, entries: Sequence[KinesisEntry], deadline: Deadline) -> int:
        assert self._engine is not None, "start() was not called"
        return self._engine.submit(entries, deadline)

    def finish(self, deadline: Deadline) -> None:
        assert self._engine is not None, "start() was not called"
        try:
            self._engine.finish(deadline)
        finally:
            self._stop_map.set()
            if self._map_thread is not None:
                self._map_thread.join()

    def close(self) -> None:
        close = getattr(self.transport, "close", None)
        if close is not None:
            close()
        self.service.close()

    # --- the shard map --------------------------------------------------------------------------------

    def _new_engine(self) -> Engine:
        return Engine(self.config, self.service.stream, self.transport, Router(self.shard_map, self.config.shard_limits),
                      self.events, self.health, self.backoff, self._refresh)

    def _ensure_map(self) -> None:
        if self.shard_map.generation == 0:
            self._refresh("start")

    def _list_shards(self) -> list[Shard]:
        """ListShards; when it fails, the last good answer (or one stand-in shard): sending goes on."""
        try:
            shards = self._lister()
        except (ClientError, BotoCoreError, ShardMapError):
            shards = []
        if shards:
            self._last_listed = shards
        return self._last_listed or [UNKNOWN_SHARD]

    def _refresh(self, reason: str) -> bool:
        """List the shards again (rate-limited for evidence); True if the set changed."""
        with self._refresh_lock:
            now = time.monotonic()
            if reason in _EVIDENCE_REASONS:
                if now - self._last_evidence_refresh < EVIDENCE_REFRESH_MIN_INTERVAL_S:
                    return False
                self._last_evidence_refresh = now
            changed = self.shard_map.refresh(reason)
        self.events.shard_map_refreshed(shards=len(self.shard_map.shards), reason=reason, changed=changed)
        return changed

    def _refresh_periodically(self) -> None:
        interval = self.config.shard_map.refresh_interval
        while not self._stop_map.wait(interval):
            if self.shard_map.refresh_due() and self._refresh("periodic") and self._engine is not None:
                self._engine.resharded()

