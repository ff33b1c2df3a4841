"""File source checkpoints in follow mode: rotation and truncation across restarts, and dropped entries."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any

from sources.file import FileSource, FileSourceConfig
from tests.conftest import poll_until
from tests.fakes import RecordingContext
from tests.sources.test_file_checkpoint import key, lines, ns, saved

POLL_S = 0.02
DEADLINE_S = 5.0


class Run:
    """A following source (resumed from `state` if given) in its own thread, as the daemon runs it."""

    def __init__(self, state: dict[str, Any] | None = None, **config: Any) -> None:
        self.source = FileSource(FileSourceConfig(follow=True, poll_interval=POLL_S, **config))
        if state is not None:
            self.source.resume(state)
        self.ctx = RecordingContext()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.source.run(self.ctx)
        except BaseException as exc:  # noqa: BLE001 - surfaced by the test
            self.error = exc

    def wait_for(self, count: int) -> None:
        poll_until(lambda: len(self.ctx.tokens) >= count or self.error, DEADLINE_S, f"{count} inputs, have {ns(self.ctx)}")
        assert self.error is None

    def polls(self, count: int) -> None:
        """Until the follower went through `count` more idle polls (it has looked at every path since)."""
        target = len(self.ctx.wait_requests) + count
        poll_until(lambda: len(self.ctx.wait_requests) >= target or self.error, DEADLINE_S, f"{count} polls")
        assert self.error is None

    def stop(self) -> dict[str, Any]:
        """Stop it; the state saved with everything it handed over acknowledged."""
        self.ctx.stop.set()
        self.thread.join(DEADLINE_S)
        assert not self.thread.is_alive() and self.error is None
        return saved(self.source, self.ctx)


def test_a_rotation_while_stopped_resumes_the_old_file_and_reads_the_new_one_from_its_start(tmp_path: Path) -> None:
    """app.log renamed to app.log.1 (with a last line) and a new app.log while down: each continues where due."""
    log = tmp_path / "app.log"
    log.write_bytes(lines(0, 3))
    pattern = str(tmp_path / "app.log*")
    first = Run(paths=[pattern])
    first.wait_for(3)
    state = first.stop()
    old_key = key(log)
    with log.open("ab") as handle:  # written just before the rotation
        handle.write(lines(3, 1))
    log.rename(tmp_path / "app.log.1")
    log.write_bytes(lines(10, 2))
    second = Run(state, paths=[pattern])
    second.wait_for(3)
    second.polls(2)
    after = second.stop()
    by_file: dict[str, list[int]] = {origin.rsplit(":", 1)[0]: [] for _, _, origin in second.ctx.emitted}
    for _, event, origin in second.ctx.emitted:
        by_file[origin.rsplit(":", 1)[0]].append(event["n"])
    assert by_file == {str(tmp_path / "app.log.1"): [3], str(log): [10, 11]}
    assert f"{tmp_path / 'app.log.1'}:4" in [origin for _, _, origin in second.ctx.emitted]  # line numbers go on
    assert set(after["files"]) == {old_key, key(log)}
    assert after["files"][old_key]["offset"] == (tmp_path / "app.log.1").stat().st_size


def test_entries_of_files_no_followed_path_shows_are_dropped(tmp_path: Path) -> None:
    """A followed file deleted while down: after the first look at the paths its entry leaves the state."""
    kept, gone = tmp_path / "a.log", tmp_path / "b.log"
    kept.write_bytes(lines(0, 2))
    gone.write_bytes(lines(2, 2))
    first = Run(paths=[str(tmp_path)])
    first.wait_for(4)
    state = first.stop()
    gone_key = key(gone)
    assert set(state["files"]) == {key(kept), gone_key}
    gone.unlink()
    second = Run(state, paths=[str(tmp_path)])
    second.polls(2)
    after = json.loads(json.dumps(second.source.checkpoint_state({})))
    second.stop()
    assert second.ctx.tokens == []
    assert set(after["files"]) == {key(kept)}


def test_a_file_rotated_away_while_running_leaves_the_state(tmp_path: Path) -> None:
    """Followed only as app.log: once rotated out of sight and drained, its identity is dropped from the state."""
    log = tmp_path / "app.log"
    log.write_bytes(lines(0, 2))
    run = Run(paths=[str(log)])
    run.wait_for(2)
    old_key = key(log)
    log.rename(tmp_path / "app.log.1")
    log.write_bytes(lines(5, 1))
    run.wait_for(3)
    run.polls(2)
    state = run.stop()
    assert set(state["files"]) == {key(log)} and old_key != key(log)


def test_truncation_while_following_then_restart_reads_only_what_came_after(tmp_path: Path) -> None:
    """Truncated in place while followed and rewritten: the state follows the new content; a restart re-reads nothing."""
    log = tmp_path / "app.log"
    log.write_bytes(lines(0, 4))
    run = Run(paths=[str(log)])
    run.wait_for(4)
    with log.open("r+b") as handle:  # copytruncate
        handle.truncate(0)
    run.polls(2)
    with log.open("ab") as handle:
        handle.write(lines(7, 2))
    run.wait_for(6)
    state = run.stop()
    assert ns(run.ctx) == [0, 1, 2, 3, 7, 8]
    assert state["files"][key(log)]["offset"] == os.stat(log).st_size
    again = Run(state, paths=[str(log)])
    again.polls(2)
    again.stop()
    assert again.ctx.tokens == []


def test_records_after_a_truncation_are_not_covered_by_the_old_files_acknowledgements(tmp_path: Path) -> None:
    """Truncated and rewritten with the same first bytes while followed: acks of the old content do not skip the new."""
    log = tmp_path / "app.log"
    log.write_bytes(lines(0, 4))
    run = Run(paths=[str(log)])
    run.wait_for(4)
    with log.open("r+b") as handle:
        handle.truncate(0)
    run.polls(2)
    with log.open("ab") as handle:  # the same first lines again, and more: only the truncation tells them apart
        handle.write(lines(0, 6))
    run.wait_for(10)
    run.ctx.stop.set()
    run.thread.join(DEADLINE_S)
    state = saved(run.source, run.ctx, range(4))  # only the old content was delivered
    again = Run(state, paths=[str(log)])
    again.wait_for(6)
    again.polls(1)
    again.stop()
    assert ns(again.ctx) == [0, 1, 2, 3, 4, 5]


def test_a_file_followed_from_empty_gets_a_fingerprint_of_what_it_grew_to(tmp_path: Path) -> None:
    """Opened empty, then written: the saved fingerprint covers the bytes read, so inode reuse is still told apart."""
    log = tmp_path / "app.log"
    log.touch()
    run = Run(paths=[str(log)])
    run.polls(2)
    with log.open("ab") as handle:
        handle.write(lines(0, 3))
    run.wait_for(3)
    run.polls(1)
    state = run.stop()
    entry = state["files"][key(log)]
    assert entry["fingerprint_bytes"] == log.stat().st_size
    assert entry["fingerprint"] == hashlib.sha256(log.read_bytes()).hexdigest()
    with log.open("r+b") as handle:  # same inode, another content, longer than the saved offset
        handle.write(lines(100, 4))
    again = Run(state, paths=[str(log)])
    again.wait_for(4)
    again.stop()
    assert ns(again.ctx) == [100, 101, 102, 103]
