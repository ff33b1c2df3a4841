"""The shard checkpoint (embedded/event_source_mapping/checkpoints.py): it moves over finished prefixes only."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from embedded.event_source_mapping.checkpoints import ShardProgress


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


def test_a_resumed_shard_keeps_its_checkpoint_until_a_record_after_it_is_done() -> None:
    """The checkpoint given at construction stands until the first newly read record finishes."""
    progress = ShardProgress("9")
    progress.read("10")
    assert progress.checkpoint == "9"
    progress.done(["10"])
    assert progress.checkpoint == "10"


@settings(max_examples=200, deadline=None)
@given(order=st.permutations(range(12)), steps=st.integers(min_value=0, max_value=12))
def test_checkpoint_is_the_end_of_the_longest_finished_prefix(order: list[int], steps: int) -> None:
    """Finishing records in any order, the checkpoint is the last record of the longest all-done prefix."""
    sequence_numbers = [f"{n:03d}" for n in range(12)]
    progress = ShardProgress()
    for seq in sequence_numbers:
        progress.read(seq)
    finished = {sequence_numbers[i] for i in order[:steps]}
    progress.done(sorted(finished))
    prefix = 0
    while prefix < len(sequence_numbers) and sequence_numbers[prefix] in finished:
        prefix += 1
    assert progress.checkpoint == (sequence_numbers[prefix - 1] if prefix else None)
    assert progress.outstanding == len(sequence_numbers) - prefix
