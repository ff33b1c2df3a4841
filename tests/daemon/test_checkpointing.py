"""The checkpoint thread: saves each source's acknowledged prefix (only when it moved), commits spools, reports
and retries a failed save, and its lag says what a crash now would send again."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import pytest

from daemon.checkpointing import Checkpointer
from daemon.checkpoints import CheckpointStore
from daemon.progress import ProgressWindow
from daemon.telemetry import Telemetry
from sources.base import Source, SourceConfig
from tests.conftest import poll_until

WAIT_S = 5.0


class Positions(Source):
    """A source whose checkpoint state is the committed map itself."""

    config_model = SourceConfig

    def __init__(self) -> None:
        super().__init__(SourceConfig(type="positions"))

    def run(self, ctx: Any) -> None:
        return None

    def checkpoints(self) -> bool:
        return True

    def checkpoint_state(self, committed: Mapping[Hashable, Any]) -> dict[str, Any]:
        return {"at": committed.get("f")}


class FailingStore:
    """What a failing spool commit leaves: `failures` failures to go, and the positions committed after them."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.saved: list[Any] = []


class Commits:
    def __init__(self) -> None:
        self.positions: list[Any] = []

    def commit(self, position: Any) -> None:
        self.positions.append(position)


def test_a_source_is_saved_when_its_prefix_moved_and_not_otherwise(tmp_path: Path) -> None:
    """Two rounds without progress write once; the file holds the prefix, not the records acknowledged past a gap."""
    telemetry = Telemetry("fake")
    store = CheckpointStore(tmp_path, telemetry)
    window = ProgressWindow()
    checkpointer = Checkpointer(telemetry, 3600)
    checkpointer.track_source("src", Positions(), window, store, "stream@1")
    first, second, third = (window.emitted("f", n) for n in (10, 20, 30))
    window.acknowledged([first, third])
    checkpointer.save_all()
    checkpointer.save_all()
    assert telemetry.checkpoint_saves.labels(source="src")._value.get() == 1
    assert store.load("src", "positions", "stream@1") == {"at": 10}
    window.acknowledged([second])
    checkpointer.stop()  # the final save at shutdown
    assert store.load("src", "positions", "stream@1") == {"at": 30}


def test_a_failed_save_is_reported_and_the_next_round_writes_it(tmp_path: Path) -> None:
    """ENOSPC once: counted as write_failed, nothing marked saved, the next round commits the same prefix."""
    telemetry = Telemetry("fake")
    store = FailingStore(failures=1)
    window = ProgressWindow()
    checkpointer = Checkpointer(telemetry, 3600)
    checkpointer.track_spool("live", store_as_commits(store), window)
    numbers = [window.emitted(None, [1, n]) for n in range(5)]
    window.acknowledged(numbers)
    checkpointer.save_all()
    assert telemetry.checkpoint_errors.labels(source="live", reason="write_failed")._value.get() == 1
    assert store.saved == []
    checkpointer.save_all()
    assert store.saved == [[1, 4]]


def store_as_commits(store: FailingStore) -> Any:
    """The failing store as a spool's commit (the same failure path)."""

    class Spool:
        def commit(self, position: Any) -> None:
            if store.failures:
                store.failures -= 1
                raise OSError(28, "No space left on device")
            store.saved.append(position)

    return Spool()


def test_the_lag_counts_pending_and_unsaved_records() -> None:
    """Pending records and acknowledged-but-unsaved ones both count: what a kill -9 now would re-send."""
    telemetry = Telemetry("fake")
    commits = Commits()
    window = ProgressWindow()
    checkpointer = Checkpointer(telemetry, 3600)
    checkpointer.track_spool("live", commits, window)
    numbers = [window.emitted(None, [1, n]) for n in range(10)]
    window.acknowledged(numbers[:6])
    samples = {s.labels["source"]: s.value for m in telemetry.durability.collect() for s in m.samples if "lag_records" in s.name}
    assert samples == {"live": 10}
    checkpointer.save_all()
    samples = {s.labels["source"]: s.value for m in telemetry.durability.collect() for s in m.samples if "lag_records" in s.name}
    assert samples == {"live": 4} and commits.positions == [[1, 5]]


@pytest.mark.parametrize("interval_s", [0.05])
def test_the_thread_saves_at_its_interval(interval_s: float) -> None:
    """Started, the thread commits the prefix on its own within a few intervals."""
    telemetry = Telemetry("fake")
    commits = Commits()
    window = ProgressWindow()
    checkpointer = Checkpointer(telemetry, interval_s)
    checkpointer.track_spool("live", commits, window)
    checkpointer.start()
    try:
        window.acknowledged([window.emitted(None, [1, 7])])
        poll_until(lambda: commits.positions == [[1, 7]], WAIT_S, "the commit")
    finally:
        checkpointer.stop()
