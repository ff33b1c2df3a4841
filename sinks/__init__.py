"""Sink plugins: each delivers records to one destination.

A sink registers its class under the `type:` name used in config.yaml. Sinks never import the daemon or
a source: the daemon hands each one its config, prepared entries, a completion path and an event observer.
"""

from __future__ import annotations

from sinks.base import (
    SINK_TYPES,
    Completion,
    Deadline,
    Entry,
    Record,
    RecordRejected,
    Sink,
    SinkConfig,
    SinkEvents,
    register_sink,
)
from sinks.batch import BatchLimits, BatchSink, WriteResult

__all__ = [
    "SINK_TYPES",
    "BatchLimits",
    "BatchSink",
    "Completion",
    "Deadline",
    "Entry",
    "Record",
    "RecordRejected",
    "Sink",
    "SinkConfig",
    "SinkEvents",
    "WriteResult",
    "load_builtin_sinks",
    "register_sink",
]


def load_builtin_sinks() -> None:
    """Import the bundled sink modules so that they register themselves."""
    import sinks.kinesis  # noqa: F401
