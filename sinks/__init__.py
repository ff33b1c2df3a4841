"""Sink plugins: each writes batches of records to one destination.

A sink registers its class under the `type:` name used in config.yaml. Sinks never import the daemon or
a source: the daemon hands each one its config, batches of prepared entries and an event observer.
"""

from __future__ import annotations

from sinks.base import (
    SINK_TYPES,
    BatchLimits,
    Deadline,
    Entry,
    Record,
    RecordRejected,
    Sink,
    SinkConfig,
    SinkEvents,
    WriteResult,
    register_sink,
)

__all__ = [
    "SINK_TYPES",
    "BatchLimits",
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
