"""kill -9 at random moments while a file source replays 100,000 records, restart, ten times (issue 16).

The source's checkpoint (state.checkpoint_interval 0.2 s) bounds what a restart sends again: after each kill
the test reads the checkpoint file the next run resumes from and counts the records already in the stream at
or after that line ("in flight at the kill"). In the end the stream holds every line (0 missing, nothing
foreign), the copies are at most the sum of those counts, and a run after completion sends nothing.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon.crash_rig import (
    LAND_TIMEOUT_S,
    ReplayFile,
    RestartableKinesis,
    Rig,
    in_flight,
    kinesis,
    read_checkpoint,
    settle_after_kill,
    wait_stored,
)
from tests.daemon.test_kinesis_delivery import tweet_lines

RECORDS = 100_000
# Slow enough that the replay lasts across all ten kills (about 20 s of reading in all).
RATE = 5000
KILLS = 10
KILL_AFTER_S = (0.5, 3.0)  # after `daemon_started`
SEED = 1610
CHECKPOINT_INTERVAL_S = 0.2
BUFFER_RECORDS = 2000
# Most a single kill may leave in flight with working checkpoints: what the source reads between two saves
# plus the delivery latency (a second here, for a loaded machine), and the buffer's records. Without
# checkpoints a restart replays from line 1, tens of thousands of records by the later kills.
IN_FLIGHT_WINDOW_S = CHECKPOINT_INTERVAL_S + 1.0
MAX_IN_FLIGHT_PER_KILL = int(RATE * IN_FLIGHT_WINDOW_S) + BUFFER_RECORDS
SOURCE = "replay"


@pytest.fixture
def fake() -> Iterator[RestartableKinesis]:
    with kinesis(seed=16) as stream:
        yield stream


@pytest.fixture
def replay(tmp_path: Path) -> ReplayFile:
    return ReplayFile.write(tmp_path / "tweets.jsonl", tweet_lines(RECORDS, pad=40))


@pytest.fixture
def rig(tmp_path: Path, fake: RestartableKinesis, replay: ReplayFile) -> Iterator[Rig]:
    sources = f'  - name: {SOURCE}\n    type: file\n    paths: ["{replay.path}"]\n    rate: {RATE}\n'
    state = f"  checkpoint_interval: {CHECKPOINT_INTERVAL_S}s\n"
    extra = f"buffer:\n  max_records: {BUFFER_RECORDS}\n"
    with Rig(tmp_path, fake, sources, state=state, extra=extra) as runs:
        yield runs


@pytest.mark.slow
def test_ten_kills_during_a_replay_lose_nothing_and_duplicate_at_most_what_was_in_flight(rig: Rig, replay: ReplayFile) -> None:
    """10 SIGKILLs at random moments of a 100,000-line replay: 0 missing, copies <= in flight at the kills, no rerun."""
    number_of = {line: number for number, line in enumerate(replay.lines, start=1)}
    rng = random.Random(SEED)
    print(f"\nseed {SEED}: {KILLS} kills {KILL_AFTER_S[0]}-{KILL_AFTER_S[1]} s after daemon_started")
    bound = 0
    resumed_from = []
    for kill in range(1, KILLS + 1):
        daemon = rig.start()
        delay = rng.uniform(*KILL_AFTER_S)
        daemon.alive_for(delay)
        daemon.kill9()
        stored = settle_after_kill(rig.fake)
        resume = replay.resume_line(read_checkpoint(rig.state_dir, SOURCE))
        flight = in_flight(stored, number_of, resume)
        print(f"kill {kill}: after {delay:.2f} s, {len(stored)} distinct in the stream, resume at line {resume}, "
              f"in flight {flight}")
        assert flight <= MAX_IN_FLIGHT_PER_KILL, f"kill {kill}: {flight} in flight - the checkpoint lags far behind"
        bound += flight
        resumed_from.append(resume)
    assert resumed_from == sorted(resumed_from), "a checkpoint went backwards"
    assert 1 < resumed_from[-1] <= RECORDS, "the kills did not land during the replay"

    final = rig.start()
    missing = wait_stored(rig.fake, set(replay.lines))
    assert not missing, f"{len(missing)} lines missing from the stream"
    final.wait_for_event("all_sources_finished", timeout=LAND_TIMEOUT_S)
    summary = final.terminate()
    counts = rig.fake.data_counts()
    assert set(counts) == set(replay.lines), "something foreign in the stream"
    duplicates = sum(n - 1 for n in counts.values())
    print(f"duplicates {duplicates}, in flight at the kills {bound} (final run: {summary})")
    assert duplicates <= bound
    assert summary["lost"] == 0 and summary["dead_lettered"] == 0

    # A finished replay is not repeated: the next run reads nothing and sends nothing.
    again = rig.start()
    finished = again.wait_for_event("all_sources_finished", timeout=LAND_TIMEOUT_S)
    summary = again.terminate()
    assert finished["received"] == 0 and summary["received"] == 0 and summary["sent"] == 0
    assert rig.fake.data_counts() == counts
