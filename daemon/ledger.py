"""Per-source record counts: the ledger the final summary reports, and the tallies behind the received and
filtered counters (cheaper per record than labelled Prometheus counters)."""

from __future__ import annotations

import threading
import time
from collections import Counter as _Tally
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

_wall_clock = time.time


@dataclass
class Ledger:
    """Per-source counts; every received record ends as exactly one of sent, dead-lettered, filtered, unsent,
    kept, dropped or lost.

    received = sent + dead_lettered + filtered + unsent + kept + dropped + lost once the daemon stopped.
    `filtered`: a filter of the source's transforms left it out (acknowledged, never sent). `kept`: left
    for the next start (after the source's checkpoint, or in its spool); `dropped`: a full spool dropped them
    (when_full: drop_oldest); `lost` is non-zero only after a fatal error: records that could be written
    neither to the sink nor to the dead-letter file. While running, received also counts the records in the
    spool, the buffer and in flight.
    """

    tallies: dict[str, ReceivedTally] = field(default_factory=dict)  # source -> records received
    filtered_tallies: dict[str, ReceivedTally] = field(default_factory=dict)  # source -> records filtered out
    sent: _Tally[str] = field(default_factory=_Tally)
    dead_lettered: _Tally[str] = field(default_factory=_Tally)
    unsent: _Tally[str] = field(default_factory=_Tally)
    kept: _Tally[str] = field(default_factory=_Tally)
    dropped: _Tally[str] = field(default_factory=_Tally)
    lost: _Tally[str] = field(default_factory=_Tally)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def received(self) -> _Tally[str]:
        """Records received, per source."""
        with self.lock:
            tallies = list(self.tallies.items())
        return _Tally({source: tally.count for source, tally in tallies})

    @property
    def filtered(self) -> _Tally[str]:
        """Records filtered out, per source. Takes no lock (callers may hold `lock`): copying the dict is atomic."""
        return _Tally({source: tally.count for source, tally in list(self.filtered_tallies.items())})

    def outcomes(self) -> dict[str, _Tally[str]]:
        """Each end a record can reach, with its per-source counts (hold `lock` for a consistent view)."""
        return {
            "sent": self.sent,
            "dead_lettered": self.dead_lettered,
            "filtered": self.filtered,
            "unsent": self.unsent,
            "kept": self.kept,
            "dropped": self.dropped,
            "lost": self.lost,
        }

    def ended(self, source: str) -> int:
        """Records of `source` that reached an end, whichever (hold `lock`)."""
        return sum(tally[source] for tally in self.outcomes().values())

    def totals(self) -> dict[str, int]:
        with self.lock:
            outcomes = {name: sum(tally.values()) for name, tally in self.outcomes().items()}
            tallies = list(self.tallies.values())
        # Read after the outcomes: a record is counted received before any outcome, so received >= their sum.
        return {"received": sum(t.count for t in tallies), **outcomes}


class ReceivedTally:
    """Records one source handed over: a lock and an add per record, where a labelled Prometheus counter and
    a timestamp gauge cost several calls and locks. Scrapes read it (ReceivedCollector), and stamp `last_at`
    when the count moved since the previous read: the last-event time is known to within a scrape interval,
    plenty to alert on a source that stopped."""

    __slots__ = ("_lock", "_seen", "count", "last_at")

    def __init__(self) -> None:
        self.count = 0
        self.last_at = 0.0
        self._seen = 0  # the count at the previous read
        self._lock = threading.Lock()

    def add(self, records: int = 1) -> None:
        with self._lock:
            self.count += records

    def read(self) -> tuple[int, float]:
        """(count, last_at), stamping now if records came since the previous read."""
        with self._lock:
            count = self.count
        if count != self._seen:
            self._seen = count
            self.last_at = _wall_clock()
        return count, self.last_at


class ReceivedCollector:
    """Exposes the received tallies as `tweet_producer_records_received_total{source}` and
    `tweet_producer_source_last_event_timestamp_seconds{source}` (alert when it stops moving)."""

    def __init__(self, tallies: dict[str, ReceivedTally]) -> None:
        self.tallies = tallies

    def collect(self) -> Iterator[Metric]:
        received = CounterMetricFamily("tweet_producer_records_received", "Records handed over by a source.", labels=["source"])
        last = GaugeMetricFamily(
            "tweet_producer_source_last_event_timestamp_seconds",
            "Unix time a source last handed over a record (alert when it stops moving).",
            labels=["source"],
        )
        for source, tally in list(self.tallies.items()):
            count, last_at = tally.read()
            received.add_metric([source], count)
            if last_at:
                last.add_metric([source], last_at)
        yield received
        yield last

    def value(self, source: str) -> int:
        tally = self.tallies.get(source)
        return 0 if tally is None else tally.count


class FilteredCollector:
    """Exposes the filtered tallies as `tweet_producer_records_filtered_total{source}`."""

    def __init__(self, tallies: dict[str, ReceivedTally]) -> None:
        self.tallies = tallies

    def collect(self) -> Iterator[Metric]:
        filtered = CounterMetricFamily(
            "tweet_producer_records_filtered", "Records a filter of the source's transforms left out.", labels=["source"]
        )
        for source, tally in list(self.tallies.items()):
            filtered.add_metric([source], tally.count)
        yield filtered
