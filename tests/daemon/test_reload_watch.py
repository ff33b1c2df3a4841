"""The config file watch (`reload.watch`): a changed file is reloaded once it held still, whether it was replaced by
a rename or written in place, and a running daemon picks up an edit without a signal."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from daemon.reload_watch import ConfigWatch
from tests.daemon.test_kinesis_delivery import DUMMY_AWS, START_TIMEOUT_S, config_body, stop, tweet_lines, write_lines
from tests.fake_kinesis import FakeKinesis

INTERVAL_S = 1.0


def test_a_change_is_due_once_it_held_still_for_one_interval(tmp_path: Path) -> None:
    """In-place writes are reported one interval after the last one; an unchanged file never."""
    path = tmp_path / "config.yaml"
    path.write_text("a: 1\n")
    watch = ConfigWatch(path, INTERVAL_S, now=0.0)
    assert not watch.due(1.0)  # unchanged
    path.write_text("a: 22\n")
    assert not watch.due(1.5)  # checked at most once per interval
    assert not watch.due(2.0)  # changed: seen, not yet still
    path.write_text("a: 333\n")
    assert not watch.due(3.0)  # changed again meanwhile
    assert watch.due(4.0)  # held still for one interval
    watch.loaded()
    assert not watch.due(5.0) and not watch.due(6.0)


def test_a_file_renamed_into_place_is_a_change_and_a_missing_one_is_not(tmp_path: Path) -> None:
    """An editor's atomic save (a new inode) is reported; a file that is briefly missing is waited out."""
    path = tmp_path / "config.yaml"
    path.write_text("a: 1\n")
    watch = ConfigWatch(path, INTERVAL_S, now=0.0)
    path.unlink()
    assert not watch.due(1.0) and not watch.due(2.0)
    staged = tmp_path / ".config.yaml.swp"
    staged.write_text("a: 1\n")  # same bytes and size: only the inode says it is another file
    os.replace(staged, path)
    assert not watch.due(3.0)
    assert watch.due(4.0)


def test_a_running_daemon_reloads_an_edited_file_without_a_signal(tmp_path: Path, daemon_factory: Any) -> None:
    """With reload.watch on, adding a source to the file starts it: its lines reach the stream, none twice."""
    with FakeKinesis(2, seed=17) as fake:
        first = write_lines(tmp_path / "first.jsonl", tweet_lines(50))
        second = write_lines(tmp_path / "second.jsonl", [line.replace(b'"id": "', b'"id": "s') for line in tweet_lines(50)])
        body = config_body(first, fake) + "reload:\n  watch: true\n  watch_interval: 0.2s\n"
        daemon = daemon_factory(body, embedded=False).start(DUMMY_AWS)
        daemon.wait_for_event("daemon_started", timeout=START_TIMEOUT_S)
        assert fake.wait_until(lambda f: len(f.user_records()) >= 50, START_TIMEOUT_S)
        added = f'  - name: second\n    type: file\n    paths: ["{second}"]\n'
        text = daemon.config_path.read_text(encoding="utf-8")
        daemon.config_path.write_text(text.replace("sink:\n", added + "sink:\n", 1), encoding="utf-8")
        reloaded = daemon.wait_for_event("config_reloaded", timeout=START_TIMEOUT_S)
        assert reloaded["started"] == ["second"] and reloaded["unchanged"] == ["replay"]
        requested = daemon.wait_for_event("config_reload_requested", timeout=1)
        assert requested["trigger"] == "file_changed"
        assert fake.wait_until(lambda f: len(f.user_records()) >= 100, START_TIMEOUT_S)
        summary = stop(daemon)
        expected = first.read_bytes().splitlines() + second.read_bytes().splitlines()
        assert fake.data_counts() == dict.fromkeys(expected, 1)
        assert summary["received"] == summary["sent"] == 100
