"""The event source mapping settings the runner accepts: the ranges Lambda enforces for a Kinesis source."""

from __future__ import annotations

from embedded.event_source_mapping.lanes import UNLIMITED
from infra.settings import EventSourceMappingSettings

# Valid ranges of the mapping's settings for a Kinesis source (CreateEventSourceMapping).
BATCH_SIZE_RANGE = (1, 10_000)
BATCHING_WINDOW_RANGE_S = (0, 300)
PARALLELIZATION_FACTOR_RANGE = (1, 10)
RETRY_ATTEMPTS_RANGE = (-1, 10_000)
RECORD_AGE_RANGE_S = (60, 604_800)  # or -1 (no limit)


def validate_settings(settings: EventSourceMappingSettings) -> None:
    """Raise ValueError naming the first setting outside the range Lambda accepts."""
    checks = [
        ("batch_size", settings.batch_size, BATCH_SIZE_RANGE),
        ("maximum_batching_window_seconds", settings.maximum_batching_window_seconds, BATCHING_WINDOW_RANGE_S),
        ("parallelization_factor", settings.parallelization_factor, PARALLELIZATION_FACTOR_RANGE),
        ("maximum_retry_attempts", settings.maximum_retry_attempts, RETRY_ATTEMPTS_RANGE),
    ]
    if settings.maximum_record_age_seconds != UNLIMITED:
        checks.append(("maximum_record_age_seconds", settings.maximum_record_age_seconds, RECORD_AGE_RANGE_S))
    for name, value, (low, high) in checks:
        if not low <= value <= high:
            raise ValueError(f"event source mapping setting {name}={value!r} is outside {low}..{high}")
    if settings.starting_position not in ("TRIM_HORIZON", "LATEST", "AT_TIMESTAMP"):
        raise ValueError(f"event source mapping setting starting_position={settings.starting_position!r} is not valid")
