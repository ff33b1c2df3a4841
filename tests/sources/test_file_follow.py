"""Follow mode (`tail -F`): appends, partial lines, rotation, copytruncate, delete and recreate, new glob matches, stop."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sources.file import FileSource, FileSourceConfig
from tests.conftest import poll_until
from tests.fakes import RecordingContext
from tests.sources.test_file import tweet

POLL_S = 0.02
DEADLINE_S = 5.0
# The daemon joins a source for 5 s (daemon/app.py _SOURCE_STOP_TIMEOUT_S); a follower must be far quicker.
STOP_WITHIN_S = 1.0


class Follower:
    """A following file source running in its own thread, as the daemon runs it."""

    def __init__(self, **config: Any) -> None:
        config.setdefault("poll_interval", POLL_S)
        self.source = FileSource(FileSourceConfig(follow=True, **config))
        self.ctx = RecordingContext()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.source.run(self.ctx)
        except BaseException as exc:  # noqa: BLE001 - surfaced by the test
            self.error = exc

    def ids(self) -> list[str]:
        return [event["data"]["id"] for _, event, _ in self.ctx.emitted]

    def wait_for_ids(self, wanted: list[int]) -> None:
        expected = [str(n) for n in wanted]
        poll_until(lambda: self.ids() == expected or self.error, DEADLINE_S, f"ids {expected}, have {self.ids()}")
        assert self.error is None

    def wait_for_message(self, kind: str) -> None:
        poll_until(lambda: any(k == kind for k, _ in self.ctx.protocol_messages), DEADLINE_S, f"a {kind} message")

    def wait_for_polls(self, count: int) -> None:
        """Until the follower has gone through `count` more idle polls."""
        target = len(self.ctx.wait_requests) + count
        poll_until(lambda: len(self.ctx.wait_requests) >= target or self.error, DEADLINE_S, f"{count} polls")
        assert self.error is None

    def stop(self) -> float:
        started = time.monotonic()
        self.ctx.stop.set()
        self.thread.join(DEADLINE_S)
        assert not self.thread.is_alive()
        return time.monotonic() - started


@pytest.fixture
def followers() -> Iterator[list[Follower]]:
    started: list[Follower] = []
    yield started
    for follower in started:
        follower.stop()
        assert follower.error is None


def follow(followers: list[Follower], **config: Any) -> Follower:
    follower = Follower(**config)
    followers.append(follower)
    return follower


def append(path: Path, data: bytes) -> None:
    with path.open("ab") as handle:
        handle.write(data)


def lines(*ids: int) -> bytes:
    return b"".join(tweet(n) + b"\n" for n in ids)


def test_appended_lines_are_read_as_they_come(tmp_path: Path, followers: list[Follower]) -> None:
    """Lines appended after the start are handed over in order, without restarting the source."""
    path = tmp_path / "t.jsonl"
    path.write_bytes(lines(1, 2))
    follower = follow(followers, paths=[str(path)])
    follower.wait_for_ids([1, 2])
    append(path, lines(3))
    follower.wait_for_ids([1, 2, 3])
    append(path, lines(4, 5))
    follower.wait_for_ids([1, 2, 3, 4, 5])


def test_a_partial_last_line_waits_for_its_newline(tmp_path: Path, followers: list[Follower]) -> None:
    """Half a line is not handed over (nor rejected) until its newline is written; then it is one whole record."""
    path = tmp_path / "t.jsonl"
    path.write_bytes(lines(1) + tweet(2)[:10])
    follower = follow(followers, paths=[str(path)])
    follower.wait_for_ids([1])
    stat = path.stat()
    # The reader has looked at the partial line (the position stays at its start) and handed nothing over.
    at_partial = (str(path), stat.st_dev, stat.st_ino, len(tweet(1)) + 1)
    poll_until(lambda: follower.source.position() == at_partial, DEADLINE_S, "the position at the partial line")
    append(path, tweet(2)[10:] + b"\n")
    follower.wait_for_ids([1, 2])
    assert follower.ctx.rejected == []
    assert follower.ctx.emitted[1][0] == tweet(2)


def test_rotation_by_rename_drains_the_old_file_then_reads_the_new(tmp_path: Path, followers: list[Follower]) -> None:
    """After `mv t t.1` and a new t, lines still written to t.1 (its last one unterminated) come before the new file's."""
    path = tmp_path / "t.jsonl"
    path.write_bytes(lines(1))
    follower = follow(followers, paths=[str(path)])
    follower.wait_for_ids([1])
    rotated = tmp_path / "t.jsonl.1"
    os.rename(path, rotated)
    append(rotated, lines(2) + tweet(3))  # the writer still had the old file open
    path.write_bytes(lines(4))
    follower.wait_for_ids([1, 2, 3, 4])
    follower.wait_for_message("file_rotated")
    append(path, lines(5))
    follower.wait_for_ids([1, 2, 3, 4, 5])
    new = path.stat()
    assert list(follower.source.positions()) == [(new.st_dev, new.st_ino)]


def test_copytruncate_is_detected_and_the_file_read_again(tmp_path: Path, followers: list[Follower]) -> None:
    """A file truncated in place (logrotate copytruncate) is read again from its start, not from the old offset."""
    path = tmp_path / "t.jsonl"
    path.write_bytes(lines(1, 2, 3))
    follower = follow(followers, paths=[str(path)])
    follower.wait_for_ids([1, 2, 3])
    with path.open("r+b") as handle:
        handle.truncate(0)
    follower.wait_for_message("file_truncated")
    append(path, lines(4))
    follower.wait_for_ids([1, 2, 3, 4])
    assert follower.ctx.emitted[3][2] == f"{path}:1"


def test_a_deleted_file_is_waited_for_and_its_successor_read(tmp_path: Path, followers: list[Follower]) -> None:
    """A file deleted while followed is waited for; the file later created at its path is read from its start."""
    path = tmp_path / "t.jsonl"
    path.write_bytes(lines(1))
    follower = follow(followers, paths=[str(path)])
    follower.wait_for_ids([1])
    path.unlink()
    follower.wait_for_polls(3)  # a few polls with no file at the path: the follower must not crash meanwhile
    assert follower.thread.is_alive()
    path.write_bytes(lines(2, 3))
    follower.wait_for_ids([1, 2, 3])


def test_a_path_that_does_not_exist_yet_is_waited_for(tmp_path: Path, followers: list[Follower]) -> None:
    """Following, a missing file is not a crash: it is read once it appears."""
    path = tmp_path / "later.jsonl"
    follower = follow(followers, paths=[str(path)])
    follower.wait_for_polls(3)
    path.write_bytes(lines(7))
    follower.wait_for_ids([7])


def test_new_files_matching_a_glob_are_picked_up(tmp_path: Path, followers: list[Follower]) -> None:
    """Globs are expanded again while following: a new matching file is read from its start; others are ignored."""
    (tmp_path / "a.jsonl").write_bytes(lines(1))
    follower = follow(followers, paths=[str(tmp_path / "*.jsonl")])
    follower.wait_for_ids([1])
    (tmp_path / "b.txt").write_bytes(lines(99))
    (tmp_path / "b.jsonl").write_bytes(lines(2))
    follower.wait_for_ids([1, 2])
    append(tmp_path / "a.jsonl", lines(3))
    follower.wait_for_ids([1, 2, 3])


def test_positions_follow_exactly_what_was_handed_over(tmp_path: Path, followers: list[Follower]) -> None:
    """While following, the file's position is (path, device, inode, offset just past the last line handed over)."""
    path = tmp_path / "t.jsonl"
    path.write_bytes(lines(1))
    follower = follow(followers, paths=[str(path)])
    follower.wait_for_ids([1])
    append(path, lines(2) + b"{bad\n")
    poll_until(lambda: follower.ctx.rejected, DEADLINE_S, "the bad line rejected")
    stat = path.stat()
    position = follower.source.positions()[(stat.st_dev, stat.st_ino)]
    assert (position.offset, position.line) == (stat.st_size, 4)


def test_stop_while_following_returns_within_the_stop_timeout(tmp_path: Path) -> None:
    """A follower idle at the end of its file returns promptly once the daemon is stopping."""
    path = tmp_path / "t.jsonl"
    path.write_bytes(lines(1))
    follower = Follower(paths=[str(path)], poll_interval=1.0 - POLL_S)
    follower.wait_for_ids([1])
    assert follower.stop() < STOP_WITHIN_S
    assert follower.error is None


def test_a_file_rotated_inside_a_followed_directory_is_not_read_twice(tmp_path: Path, followers: list[Follower]) -> None:
    """`mv app.log app.log.1` inside a followed directory: app.log.1 is the same file (same inode) and resumes where
    it was; only lines written after the rename come, once, then the new app.log."""
    path = tmp_path / "app.log"
    path.write_bytes(lines(1, 2))
    follower = follow(followers, paths=[str(tmp_path)])
    follower.wait_for_ids([1, 2])
    os.rename(path, tmp_path / "app.log.1")
    follower.wait_for_polls(3)
    append(tmp_path / "app.log.1", lines(3))
    path.write_bytes(lines(4))
    poll_until(lambda: sorted(follower.ids()) == ["1", "2", "3", "4"] or len(follower.ids()) > 4, DEADLINE_S, "ids 1-4")
    follower.wait_for_polls(3)
    assert sorted(follower.ids()) == ["1", "2", "3", "4"]


def test_a_followed_directory_that_appears_later_is_read(tmp_path: Path, followers: list[Follower]) -> None:
    """Following a directory not created yet: no crash while it is missing, nor when it appears; its files are read."""
    folder = tmp_path / "incoming"
    follower = follow(followers, paths=[str(folder)])
    follower.wait_for_polls(3)
    folder.mkdir()
    follower.wait_for_polls(3)
    (folder / "a.jsonl").write_bytes(lines(1))
    follower.wait_for_ids([1])
