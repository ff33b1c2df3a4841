"""Structured logs and metrics (Powertools), safe for Lambda and for the embedded stack's daemon.

Metrics are collected per invocation in a private object and flushed at its end, so concurrent
invocations in one process (the embedded stack) never mix or clear each other's metrics. CloudWatch EMF
lines are printed only inside Lambda (AWS_EXECUTION_ENV starts with "AWS_Lambda_") and unless
POWERTOOLS_METRICS_DISABLED is true; elsewhere the same numbers only feed `totals()`, which a host
process can read (e.g. to export them) without parsing stdout.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import Counter

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit
from aws_lambda_powertools.metrics.functions import is_metrics_disabled

NAMESPACE = "TweetProducer"
SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME", "DDBEventProcessor")
_LAMBDA_EXECUTION_ENV_PREFIX = "AWS_Lambda_"

# Metric names.
RECORDS = "Records"  # Kinesis records received
USER_RECORDS = "UserRecords"  # payloads after KPL de-aggregation
ITEMS_WRITTEN = "ItemsWritten"
ITEMS_DELETED = "ItemsDeleted"  # delete records (Mastodon) applied to the table
DELETES_WITHOUT_AUTHOR = "DeletesWithoutAuthor"  # delete records naming no author: their item cannot be found
DUPLICATES_COLLAPSED = "DuplicateKeysCollapsed"
DEAD_LETTERED = "DeadLettered"
BATCH_ITEM_FAILURES = "BatchItemFailures"
FAILURES = "Failures"  # with a Reason dimension
BATCH_DURATION = "BatchDuration"

logger = Logger(service=SERVICE)
# Powertools writes JSON lines to stdout itself; propagating would print every line again through the
# host's root handlers (the daemon's stderr, the Lambda runtime's handler).
logging.getLogger(SERVICE).propagate = False

_totals: Counter[str] = Counter()
_totals_lock = threading.Lock()


def totals() -> dict[str, int]:
    """Process-wide sums of every count since start (failures as `Failures.<reason>`)."""
    with _totals_lock:
        return dict(_totals)


def emf_enabled() -> bool:
    return os.environ.get("AWS_EXECUTION_ENV", "").startswith(_LAMBDA_EXECUTION_ENV_PREFIX) and not is_metrics_disabled()


class InvocationMetrics:
    """The counts of one invocation; `flush` publishes them once."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()

    def add(self, name: str, value: int = 1) -> None:
        self.counts[name] += value

    def failure(self, reason: str, value: int = 1) -> None:
        self.failures[reason] += value

    def flush(self, duration_ms: float) -> None:
        with _totals_lock:
            _totals.update(self.counts)
            _totals.update({f"{FAILURES}.{reason}": n for reason, n in self.failures.items()})
        if not emf_enabled():
            return
        metrics = EphemeralMetrics(namespace=NAMESPACE, service=SERVICE)
        for name, value in self.counts.items():
            metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
        metrics.add_metric(name=BATCH_DURATION, unit=MetricUnit.Milliseconds, value=duration_ms)
        metrics.flush_metrics()
        # A dimension applies to a whole EMF document: one small document per failure reason.
        for reason, value in self.failures.items():
            by_reason = EphemeralMetrics(namespace=NAMESPACE, service=SERVICE)
            by_reason.add_dimension(name="Reason", value=reason)
            by_reason.add_metric(name=FAILURES, unit=MetricUnit.Count, value=value)
            by_reason.flush_metrics()
