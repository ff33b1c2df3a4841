"""The spool's core contract: append, read, commit, reopen (daemon/spool.py)."""

from __future__ import annotations

import threading
from pathlib import Path

from daemon.spool_segments import HEADER_BYTES
from tests.daemon.test_spool_support import NO_STOP, make_spool, read_all, record


def test_round_trip_in_order_with_positions_and_events(tmp_path: Path) -> None:
    """Records come back in append order, with their origin, parsed event (from memory) and increasing positions."""
    spool, events = make_spool(tmp_path)
    assert spool.open() == 0
    for n in range(50):
        assert spool.append(record(n), {"n": n}, f"origin-{n}", NO_STOP)
    got = read_all(spool)
    assert [r.data for r in got] == [record(n) for n in range(50)]
    assert [r.origin for r in got] == [f"origin-{n}" for n in range(50)]
    assert [r.event for r in got] == [{"n": n} for n in range(50)]
    positions = [tuple(r.position) for r in got]
    assert positions == sorted(set(positions))
    assert spool.stats().records == 50
    spool.commit(got[-1].position)
    assert spool.stats().records == 0
    spool.close()
    assert events.recovered == [(0, 0)]


def test_reopen_replays_exactly_the_uncommitted_records_in_order(tmp_path: Path) -> None:
    """After a commit and a clean close, a new spool over the directory reads exactly the records after the commit."""
    spool, _ = make_spool(tmp_path, segment_bytes=4096)
    spool.open()
    for n in range(300):
        spool.append(record(n), {"n": n}, "o", NO_STOP)
    got = read_all(spool)
    spool.commit(got[119].position)
    spool.close()

    again, events = make_spool(tmp_path, segment_bytes=4096)
    assert again.open() == 180
    replayed = read_all(again)
    assert [r.data for r in replayed] == [record(n) for n in range(120, 300)]
    assert all(r.event is None for r in replayed)  # from disk: the feeder re-parses
    assert [r.position for r in replayed] == [r.position for r in got[120:]]
    assert events.recovered[0][0] == 180
    again.close()


def test_positions_increase_across_reopens_and_new_appends_go_to_a_new_segment(tmp_path: Path) -> None:
    """Appends after a reopen land in a new segment, after every position handed out before."""
    last: list[int] = [0, 0]
    for run in range(3):
        spool, _ = make_spool(tmp_path)
        spool.open()
        spool.append(record(run), None, "o", NO_STOP)
        got = read_all(spool)
        assert got[-1].position > last
        assert got[-1].position[0] > last[0]
        last = got[-1].position
        spool.close()  # nothing committed: every run replays the earlier records first
    final, _ = make_spool(tmp_path)
    assert final.open() == 3
    assert [r.data for r in read_all(final)] == [record(0), record(1), record(2)]
    final.close()


def test_read_waits_for_an_append_and_times_out_empty(tmp_path: Path) -> None:
    """read() returns [] after its timeout when empty, and wakes as soon as a record is appended."""
    spool, _ = make_spool(tmp_path)
    spool.open()
    assert spool.read(10, 0.05) == []
    result: list[object] = []
    reader = threading.Thread(target=lambda: result.extend(spool.read(10, 30.0)))
    reader.start()
    spool.append(b"x", None, "o", NO_STOP)
    reader.join(30.0)
    assert [r.data for r in result] == [b"x"]  # type: ignore[attr-defined]
    spool.close()


def test_records_beyond_the_hot_tail_are_read_from_disk(tmp_path: Path) -> None:
    """With more records than the in-memory tail holds, the older ones are read back from the files (event None)."""
    spool, _ = make_spool(tmp_path, segment_bytes=64 * 1024)
    spool.open()
    total = 3000
    for n in range(total):
        spool.append(record(n), n, "o", NO_STOP)
    got = read_all(spool, batch=777)
    assert [r.data for r in got] == [record(n) for n in range(total)]
    from_disk = [r for r in got if r.event is None]
    assert 0 < len(from_disk) < total
    assert all(r.event == n for n, r in enumerate(got) if r.event is not None)
    spool.close()


def test_commit_deletes_segments_fully_behind_it(tmp_path: Path) -> None:
    """Segments whose records are all committed are deleted from disk; the rest stay."""
    spool, _ = make_spool(tmp_path, segment_bytes=4096)
    spool.open()
    for n in range(400):
        spool.append(record(n), None, "o", NO_STOP)
    got = read_all(spool)
    before = {p.name for p in tmp_path.glob("*.seg")}
    spool.commit(got[250].position)
    after = {p.name for p in tmp_path.glob("*.seg")}
    assert after < before
    assert min(int(name.split(".")[0]) for name in after) == got[251].position[0]
    spool.commit(got[-1].position)
    assert not list(tmp_path.glob("*.seg"))
    assert spool.stats().disk_bytes == 0
    spool.append(b"more", None, "o", NO_STOP)
    assert spool.stats().disk_bytes > HEADER_BYTES
    spool.close()
