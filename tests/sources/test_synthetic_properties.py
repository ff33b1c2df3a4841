"""Properties of every synthetic record, for any seed, kind, population, start time and position."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from sources.parsing import Rejection, parse_json_record
from sources.synthetic import MAX_RECORD_BYTES, MAX_SEED, SyntheticSourceConfig, build_kind
from sources.synthetic_base import encode_json

RECORDS_PER_EXAMPLE = 5
# Far into an endless run: more records than a year at 30,000 a second.
MAX_INDEX = 2**40
# Tweet accounts are built per example; a large population only costs time here, not coverage.
MAX_PROPERTY_POPULATION = 2000


@settings(max_examples=200, deadline=None)
@given(
    kind=st.sampled_from(["tweets", "clickstream", "iot"]),
    seed=st.integers(0, MAX_SEED),
    population=st.one_of(st.just(0), st.integers(1, MAX_PROPERTY_POPULATION)),
    start=st.one_of(st.none(), st.datetimes(datetime(1971, 1, 1), datetime(2200, 1, 1), timezones=st.just(UTC))),
    rate=st.sampled_from([0, 0.5, 1000, 50_000]),
    index=st.integers(0, MAX_INDEX),
)
def test_every_record_is_utf8_json_under_the_limit_equal_to_its_event(
    kind: str, seed: int, population: int, start: datetime | None, rate: float, index: int
) -> None:
    """Each record's bytes parse (strict UTF-8 JSON, size limit) back into exactly the event handed over,
    are the standard compact encoding, and regenerate identically."""
    config = SyntheticSourceConfig(kind=kind, seed=seed, population=population, start_time=start, rate=rate)  # type: ignore[arg-type]
    generator = build_kind(config)
    events = list(itertools.islice(generator.events(index), RECORDS_PER_EXAMPLE))
    for event in events:
        data = generator.encode(event)
        assert len(data) <= MAX_RECORD_BYTES
        parsed = parse_json_record(data, MAX_RECORD_BYTES)
        assert not isinstance(parsed, Rejection), parsed
        assert parsed == event
        assert data == encode_json(event).encode()
    if start is not None:
        again = build_kind(config)
        assert [again.encode(e) for e in itertools.islice(again.events(index), RECORDS_PER_EXAMPLE)] == [
            generator.encode(e) for e in events
        ]
