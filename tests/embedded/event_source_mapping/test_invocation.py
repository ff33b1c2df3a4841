"""Reading a function's ReportBatchItemFailures response (embedded/event_source_mapping/invocation.py)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from embedded.event_source_mapping.events import StreamRecord
from embedded.event_source_mapping.invocation import parse_batch_response

SEQUENCE_NUMBERS = ("10", "11", "12")
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5) | st.sampled_from(SEQUENCE_NUMBERS),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(["itemIdentifier", "x"]), inner, max_size=2),
    max_leaves=8,
)


def _fail_items(*seqs: str) -> dict[str, Any]:
    return {"batchItemFailures": [{"itemIdentifier": s} for s in seqs]}


@pytest.fixture
def records() -> list[StreamRecord]:
    """Three stream records with sequence numbers 10, 11, 12."""
    return [StreamRecord(seq, "k", b"x", 1.0) for seq in SEQUENCE_NUMBERS]


@pytest.mark.parametrize("response", [None, {}, {"batchItemFailures": None}, {"batchItemFailures": []}, {"other": 1}])
def test_empty_responses_mean_the_whole_batch_succeeded(response: Any, records: list[StreamRecord]) -> None:
    """None, {}, a null or empty failure list: complete success, as Lambda documents."""
    assert parse_batch_response(response, records).first_failed is None


def test_failures_checkpoint_before_the_lowest_failed_record(records: list[StreamRecord]) -> None:
    """Several failed items: the retry starts at the lowest, whatever their order in the response."""
    outcome = parse_batch_response(_fail_items("12", "11"), records)
    assert (outcome.first_failed, outcome.invalid_response, outcome.function_error) == (1, False, None)


@pytest.mark.parametrize(
    "response",
    [
        "ok",
        ["11"],
        {"batchItemFailures": "11"},
        {"batchItemFailures": [{"itemIdentifier": ""}]},
        {"batchItemFailures": [{"itemIdentifier": None}]},
        {"batchItemFailures": [{"itemId": "11"}]},
        {"batchItemFailures": [{"itemIdentifier": "99"}]},
        {"batchItemFailures": [{"itemIdentifier": "12"}, "11"]},
    ],
)
def test_malformed_responses_fail_the_whole_batch(response: Any, records: list[StreamRecord]) -> None:
    """A non-object, a bad list, an empty/null/misnamed identifier or one not in the batch: complete failure."""
    outcome = parse_batch_response(response, records)
    assert (outcome.first_failed, outcome.invalid_response) == (0, True)
    assert outcome.reason


@settings(max_examples=300, deadline=None)
@given(failures=_JSON)
def test_any_response_is_read_as_success_a_retry_point_or_an_invalid_batch(failures: Any) -> None:
    """Whatever the function returns under batchItemFailures, the reading is an outcome, never an exception."""
    records = [StreamRecord(seq, "k", b"x", 1.0) for seq in SEQUENCE_NUMBERS]
    outcome = parse_batch_response({"batchItemFailures": failures}, records)
    assert outcome.first_failed is None or 0 <= outcome.first_failed < len(records)
    if outcome.invalid_response:
        assert outcome.first_failed == 0 and outcome.reason
    if outcome.first_failed is None:
        assert failures in (None, [])


@settings(max_examples=200, deadline=None)
@given(failed=st.sets(st.sampled_from(SEQUENCE_NUMBERS), min_size=1))
def test_valid_failure_lists_retry_from_the_lowest_failed_record(failed: set[str]) -> None:
    """Any non-empty set of this batch's sequence numbers, in any order, retries from the lowest of them."""
    records = [StreamRecord(seq, "k", b"x", 1.0) for seq in SEQUENCE_NUMBERS]
    outcome = parse_batch_response(_fail_items(*sorted(failed, reverse=True)), records)
    assert (outcome.first_failed, outcome.invalid_response) == (SEQUENCE_NUMBERS.index(min(failed)), False)
