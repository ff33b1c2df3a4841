"""The acknowledged prefix: a checkpoint passes a record only once it and every record before it are done."""

from __future__ import annotations

import threading

from hypothesis import given, settings
from hypothesis import strategies as st

from daemon import progress
from daemon.progress import ProgressWindow


def test_out_of_order_acknowledgements_never_move_the_prefix_past_a_gap() -> None:
    """Records 2 and 3 done before 1: the committed position stays at 0's until 1 is done, then jumps to 3's."""
    window = ProgressWindow()
    numbers = [window.emitted("f", offset) for offset in (10, 20, 30, 40)]
    window.acknowledged([numbers[0]])
    assert window.committed() == {"f": 10}
    window.acknowledged([numbers[2], numbers[3]])
    assert window.committed() == {"f": 10}
    assert window.lag()[0] == 3
    window.acknowledged([numbers[1]])
    assert window.committed() == {"f": 40}
    assert window.lag() == (0, 0.0)
    assert window.committed_records == 4


def test_each_key_keeps_the_position_of_its_last_record_in_the_prefix() -> None:
    """Interleaved files: the prefix folds into one position per file, each its latest inside the prefix."""
    window = ProgressWindow()
    a1, b1, a2, b2 = (window.emitted(key, pos) for key, pos in (("a", 1), ("b", 1), ("a", 2), ("b", 2)))
    window.acknowledged([a1, b1, a2])
    assert window.committed() == {"a": 2, "b": 1}
    window.acknowledged([b2])
    assert window.committed() == {"a": 2, "b": 2}


def test_lag_seconds_is_the_age_of_the_oldest_record_not_yet_done() -> None:
    """The lag's age comes from the oldest pending record's emit time, on the window's clock."""
    now = [100.0]
    window = ProgressWindow(clock=lambda: now[0])
    first = window.emitted(None, 1)
    now[0] = 101.0
    window.emitted(None, 2)
    now[0] = 105.0
    assert window.lag() == (2, 5.0)
    window.acknowledged([first])
    assert window.lag() == (1, 4.0)


@settings(max_examples=100, deadline=None)
@given(st.data(), st.integers(min_value=0, max_value=40))
def test_committed_is_always_the_fold_of_the_longest_acknowledged_prefix(data: st.DataObject, count: int) -> None:
    """Whatever order and batching acknowledgements come in, committed = per key, the last position of the
    longest prefix of acknowledged records (with the folded part of the window trimmed every few records)."""
    saved_trim = progress._TRIM_AT
    progress._TRIM_AT = data.draw(st.integers(min_value=1, max_value=8))
    try:
        _check_prefix(data, count)
    finally:
        progress._TRIM_AT = saved_trim


def _check_prefix(data: st.DataObject, count: int) -> None:
    window = ProgressWindow()
    tokens = [(data.draw(st.sampled_from(["a", "b", None])), n) for n in range(count)]
    numbers = [window.emitted(key, pos) for key, pos in tokens]
    order = data.draw(st.permutations(numbers))
    acked: set[int] = set()
    while order:
        size = data.draw(st.integers(min_value=1, max_value=len(order)))
        batch, order = order[:size], order[size:]
        window.acknowledged(batch)
        acked.update(batch)
        prefix = 0
        while prefix in acked:
            prefix += 1
        expected: dict[object, int] = {}
        for key, pos in tokens[:prefix]:
            expected[key] = pos
        assert window.committed() == expected
        assert window.committed_records == prefix
        assert window.lag()[0] == count - prefix
        window.acknowledged(batch)  # a repeated report (of records maybe trimmed already) changes nothing
        assert window.committed() == expected


def test_concurrent_acknowledgements_from_many_threads_commit_everything() -> None:
    """Sink threads acknowledging at once: every record ends in the prefix exactly once."""
    window = ProgressWindow()
    numbers = [window.emitted(None, n) for n in range(20_000)]
    chunks = [numbers[i::8] for i in range(8)]
    threads = [threading.Thread(target=lambda c=c: [window.acknowledged([n]) for n in reversed(c)]) for c in chunks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert window.committed() == {None: 19_999}
    assert window.committed_records == 20_000
