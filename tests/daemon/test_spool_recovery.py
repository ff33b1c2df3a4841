"""What open() does with what an earlier run left: torn tails, damaged headers, a damaged commit file, strays."""

from __future__ import annotations

from pathlib import Path

from daemon.spool_segments import COMMIT_NAME, HEADER_BYTES, segment_name
from tests.daemon.test_spool_support import NO_STOP, make_spool, read_all, record


def spool_with(directory: Path, count: int, commit_at: int | None = None, segment_bytes: int = 4096) -> None:
    spool, _ = make_spool(directory, segment_bytes=segment_bytes)
    spool.open()
    for n in range(count):
        spool.append(record(n), None, str(n), NO_STOP)
    got = read_all(spool)
    if commit_at is not None:
        spool.commit(got[commit_at].position)
    spool.close()


def test_a_torn_tail_is_cut_reported_and_the_records_before_it_kept(tmp_path: Path) -> None:
    """Half a frame at the end of the newest segment: reported with segment and offset, cut, earlier records kept."""
    spool_with(tmp_path, 50)
    last = max(tmp_path.glob("*.seg"))
    good = last.stat().st_size
    with last.open("ab") as handle:
        handle.write(b"\x00\x00\x00\x40\x12\x34")
    spool, events = make_spool(tmp_path)
    assert spool.open() == 50
    assert [(seg, off) for seg, off, _ in events.corrupt] == [(str(last), good)]
    assert "6 bytes cut" in events.corrupt[0][2]
    assert last.stat().st_size == good
    assert [int(r.origin) for r in read_all(spool)] == list(range(50))
    spool.close()
    again, events_again = make_spool(tmp_path)
    again.open()
    assert events_again.corrupt == []  # cut once, for good
    again.close()


def test_a_corrupt_frame_in_an_older_segment_costs_only_that_segments_rest(tmp_path: Path) -> None:
    """A flipped byte in the middle of an old segment: its later records are reported lost; other segments are intact."""
    spool_with(tmp_path, 300)
    segments = sorted(tmp_path.glob("*.seg"))
    assert len(segments) >= 3
    victim = segments[1]
    raw = bytearray(victim.read_bytes())
    raw[HEADER_BYTES + 200] ^= 0xFF
    victim.write_bytes(bytes(raw))
    spool, events = make_spool(tmp_path)
    waiting = spool.open()
    back = [int(r.origin) for r in read_all(spool)]
    assert len(events.corrupt) == 1 and events.corrupt[0][0] == str(victim)
    assert back == sorted(back) and len(back) == waiting
    missing = sorted(set(range(300)) - set(back))
    assert missing and missing == list(range(missing[0], missing[-1] + 1))  # one run: the rest of that segment
    assert back[-1] == 299
    spool.close()


def test_a_damaged_header_is_moved_aside_and_an_empty_new_segment_removed(tmp_path: Path) -> None:
    """A segment whose header is not ours is kept aside for a person (reported); a 0-byte leftover goes quietly."""
    spool_with(tmp_path, 300)
    segments = sorted(tmp_path.glob("*.seg"))
    first = segments[0]
    raw = bytearray(first.read_bytes())
    raw[0] ^= 0xFF
    first.write_bytes(bytes(raw))
    empty = tmp_path / segment_name(999)
    empty.write_bytes(b"")
    spool, events = make_spool(tmp_path)
    spool.open()
    assert [seg for seg, _, _ in events.corrupt] == [str(first)]
    assert (tmp_path / (first.name + ".unusable")).read_bytes() == bytes(raw)
    assert not empty.exists()
    back = [int(r.origin) for r in read_all(spool)]
    assert back and back[-1] == 299 and 0 not in back
    spool.append(b"new", None, "new", NO_STOP)
    assert read_all(spool)[-1].position[0] > 999  # ids never go back, even past a removed leftover
    spool.close()


def test_a_damaged_commit_file_is_reported_and_everything_replayed(tmp_path: Path) -> None:
    """An unreadable commit file means replay every surviving record (duplicates, never loss), reported."""
    spool_with(tmp_path, 100, commit_at=49, segment_bytes=1024**2)
    (tmp_path / COMMIT_NAME).write_bytes(b"{not json")
    spool, events = make_spool(tmp_path)
    assert spool.open() == 100
    assert events.corrupt and events.corrupt[0][0] == str(tmp_path / COMMIT_NAME)
    spool.close()


def test_segments_behind_the_commit_are_deleted_on_open_and_strays_ignored(tmp_path: Path) -> None:
    """Segments left behind the commit (a crash between commit and delete) go at open; other files are left alone."""
    spool_with(tmp_path, 300, commit_at=250)
    names_before = sorted(p.name for p in tmp_path.glob("*.seg"))
    first_id = int(names_before[0].split(".")[0])
    leftover = tmp_path / segment_name(first_id - 1)
    leftover.write_bytes(b"whatever")  # behind the commit: deleted without being read
    stray = tmp_path / "notes.txt"
    stray.write_text("keep me")
    spool, events = make_spool(tmp_path)
    assert spool.open() == 49
    assert not leftover.exists() and stray.exists()
    assert events.corrupt == []
    assert [int(r.origin) for r in read_all(spool)] == list(range(251, 300))
    spool.close()
