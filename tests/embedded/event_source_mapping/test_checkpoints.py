"""Pure parts of the event-source runner: reading partial batch responses, and the shard checkpoint."""

from __future__ import annotations

from typing import Any

import pytest

from embedded.event_source_mapping.checkpoints import ShardProgress
from embedded.event_source_mapping.events import StreamRecord
from embedded.event_source_mapping.invocation import parse_batch_response


def _fail_items(*seqs: str) -> dict[str, Any]:
    return {"batchItemFailures": [{"itemIdentifier": s} for s in seqs]}


@pytest.fixture
def records() -> list[StreamRecord]:
    """Three stream records with sequence numbers 10, 11, 12."""
    return [StreamRecord(str(n), "k", b"x", 1.0) for n in (10, 11, 12)]


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


def test_checkpoint_moves_only_over_finished_prefix() -> None:
    """Records finished out of order (other lanes) move the checkpoint only once every earlier one is done."""
    progress = ShardProgress()
    for seq in ("1", "2", "3", "4"):
        progress.read(seq)
    progress.done(["2", "4"])
    assert (progress.checkpoint, progress.outstanding) == (None, 4)
    progress.done(["1"])
    assert (progress.checkpoint, progress.outstanding) == ("2", 2)
    progress.done(["3"])
    assert (progress.checkpoint, progress.outstanding) == ("4", 0)
