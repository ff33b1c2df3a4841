"""The spool benchmark (bench/spool.py): its quick mode measures both spools with sane figures, and the SQLite
spool it measures (bench/spool_sqlite.py) keeps the Spool contract, so the comparison is a fair one."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from bench import spool as bench
from bench.spool import CASES, QUICK_RECORDS, QUICK_RECOVERY_RECORDS, RECORD_SIZES, CountingEvents, record
from bench.spool_sqlite import DROP_MIN_RECORDS, ROW_OVERHEAD_BYTES, SqliteSpool
from sources.base import SpoolSettings

NO_STOP = threading.Event()
READ_DEADLINE_S = 10.0
# Small records for the capacity tests: a row's bytes are its data, origin ("o") and the overhead.
SMALL = 100
ROW = SMALL + 1 + ROW_OVERHEAD_BYTES


def _sqlite(path: Path, fsync: str = "batch", inserts: Any = None, **settings: Any) -> tuple[SqliteSpool, CountingEvents]:
    events = CountingEvents()
    return SqliteSpool(path, SpoolSettings(**settings), fsync, 0.05, events, inserts=inserts), events


def _read(spool: SqliteSpool, count: int) -> list[Any]:
    got: list[Any] = []
    deadline = time.monotonic() + READ_DEADLINE_S
    while len(got) < count and time.monotonic() < deadline:
        got.extend(spool.read(500, 0.1))
    return got


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("spool-bench") / "figures.json"
    assert bench.main(["--quick", "--json", str(out)]) == 0
    result: dict[str, Any] = json.loads(out.read_text())
    return result


@pytest.mark.slow
def test_quick_mode_measures_every_case_and_reads_every_record_back(quick: dict[str, Any]) -> None:
    """Every spool x fsync x insert style x record size ran; each read back every record it appended (the
    child checks content and order) and held nothing after the last commit; no drop, corruption or write error."""
    rows = quick["throughput"]
    labels = {(case.label, case.fsync) for case in CASES}
    assert {(row["spool"], row["fsync"], row["size"]) for row in rows} == {
        (*label, size) for label in labels for size in RECORD_SIZES
    }
    assert len(rows) == len(CASES) * len(RECORD_SIZES)
    assert {row["spool"].split()[0] for row in rows} == {"segments", "sqlite"}
    for row in rows:
        assert row["appended"] == row["read"] == QUICK_RECORDS, row
        assert row["left_after_commit"] == 0, row
        assert row["commits"] >= 1
        assert not {"dropped", "corrupt", "write_failed", "blocked"} & set(row["events"]), row
        assert row["events"]["recovered"] == 0
        assert row["append_records_per_s"] > 0 and row["drained_records_per_s"] > 0 and row["cpu_s_per_100k"] > 0
        assert row["peak_disk_bytes"] >= QUICK_RECORDS * row["size"] // 10  # sampled: the files held records
        assert len(row["runs"]) == 1


@pytest.mark.slow
def test_quick_mode_fsync_counts_add_up(quick: dict[str, Any]) -> None:
    """fsync=batch syncs during the run on both spools; what a spool counts it did is within the fsync system
    calls of its process (when strace could count them)."""
    for row in quick["throughput"]:
        counted = row["spool_counted"]
        if row["spool"] == "segments":
            spool_fsyncs = counted["file_fsyncs"] + counted["dir_fsyncs"]
            assert counted["file_fsyncs"] >= 1
            if row["fsync"] == "batch":
                assert row["events"]["fsync"] >= 1
        else:
            spool_fsyncs = counted["sqlite_commits"] if "grouped" in row["spool"] and row["fsync"] == "batch" else 0
            assert counted["sqlite_commits"] >= 1
        if quick["strace"]:
            assert row["fsync_syscalls"] >= max(spool_fsyncs, 1), row


@pytest.mark.slow
def test_quick_mode_recovers_both_spools_with_every_record(quick: dict[str, Any]) -> None:
    """Both spools were filled, left by a killed process and reopened: open() found every record, the first
    reads back intact, and their files hold at least the records' bytes."""
    rows = quick["recovery"]
    assert {(row["spool"], row["size"]) for row in rows} == {(s, size) for s in ("segments", "sqlite") for size in RECORD_SIZES}
    for row in rows:
        assert row["waiting"] == row["records"] == QUICK_RECOVERY_RECORDS, row
        assert row["first_ok"], row
        assert row["events"]["recovered"] == row["records"]
        assert row["disk_bytes_per_record"] >= row["size"]
        assert row["recovery_s"] > 0


@pytest.mark.slow
def test_markdown_has_a_row_per_measurement(quick: dict[str, Any]) -> None:
    """The Markdown report has one row per throughput and per recovery measurement."""
    text = bench.markdown(quick)
    assert sum(line.startswith(("| segments", "| sqlite")) for line in text.splitlines()) == len(quick["throughput"]) + len(
        quick["recovery"]
    )


def test_record_is_exactly_its_size_and_carries_its_number() -> None:
    """The bench's records have the asked size and their sequence number where the reader looks for it."""
    for size in RECORD_SIZES:
        data = record(123, size)
        assert len(data) == size
        assert json.loads(data)["seq"] == 123


@pytest.mark.parametrize(
    ("fsync", "inserts"), [("batch", "grouped"), ("batch", "each"), ("interval", "each"), ("interval", "grouped")]
)
def test_sqlite_reopen_replays_uncommitted_and_positions_keep_increasing(tmp_path: Path, fsync: str, inserts: str) -> None:
    """After a commit and a close the SQLite spool replays exactly the rest in order; once everything was committed
    and the table is empty, new positions still come after every earlier one."""
    spool, _ = _sqlite(tmp_path, fsync, inserts)
    assert spool.open() == 0
    for n in range(300):
        assert spool.append(record(n, SMALL), {"n": n}, "o", NO_STOP)
    got = _read(spool, 300)
    assert [r.data for r in got] == [record(n, SMALL) for n in range(300)]
    spool.commit(got[119].position)
    spool.close()

    again, events = _sqlite(tmp_path, fsync, inserts)
    assert again.open() == 180
    assert events.counts["recovered"] == 180
    rest = _read(again, 180)
    assert [r.data for r in rest] == [record(n, SMALL) for n in range(120, 300)]
    again.commit(rest[-1].position)
    assert again.stats().records == 0
    again.close()

    third, _ = _sqlite(tmp_path, fsync, inserts)
    assert third.open() == 0
    third.append(b"new", None, "o", NO_STOP)
    (new,) = _read(third, 1)
    assert new.position > got[-1].position
    third.close()


@pytest.mark.slow
def test_sqlite_records_appended_one_transaction_each_survive_a_kill(tmp_path: Path) -> None:
    """inserts=each: what append returned is in SQLite's WAL, so a process killed without close (no checkpoint,
    no final fsync) loses none of it - the segment spool's guarantee on a process crash."""
    case = bench.Case("sqlite", "interval", "each")
    # run_build syncs before exiting; a kill before any checkpoint is this test's point, so exit straight away.
    code = (
        "import os, threading, sys; from pathlib import Path; from bench.spool import make_spool, CountingEvents, "
        "CountingFS, Case, record\n"
        f"s = make_spool(Case{(case.spool, case.fsync, case.inserts)!r}, Path(sys.argv[1]), CountingEvents(), CountingFS())\n"
        "s.open()\n"
        "for n in range(500): s.append(record(n, 100), None, 'o', threading.Event())\n"
        "os._exit(0)\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=bench.REPO_ROOT, check=False, timeout=60)
    assert done.returncode == 0
    assert (tmp_path / "spool.sqlite3-wal").exists()  # nothing closed it: the records are in the WAL
    spool, _ = _sqlite(tmp_path, "interval", "each")
    assert spool.open() == 500
    assert [r.data for r in _read(spool, 500)] == [record(n, 100) for n in range(500)]
    spool.close()


def test_sqlite_drop_oldest_drops_unread_records_counted_and_keeps_the_newest(tmp_path: Path) -> None:
    """when_full=drop_oldest: appends past max_bytes drop the oldest unread records (counted); every record
    appended is either read back or counted dropped, and the newest are read."""
    capacity = 2 * DROP_MIN_RECORDS
    spool, events = _sqlite(tmp_path, "batch", "each", max_bytes=capacity * ROW, when_full="drop_oldest")
    spool.open()
    total = 3 * capacity
    for n in range(total):
        assert spool.append(record(n, SMALL), None, "o", NO_STOP)
    got = _read(spool, total - events.counts["dropped"])
    assert events.counts["dropped"] > 0
    assert len(got) + events.counts["dropped"] == total
    assert got[-1].data == record(total - 1, SMALL)
    numbers = [json.loads(r.data)["seq"] for r in got]
    assert numbers == sorted(numbers)
    spool.close()


def test_sqlite_block_waits_for_a_commit_and_gives_up_when_stopping(tmp_path: Path) -> None:
    """when_full=block: a full spool makes append wait (counted blocked) until a commit frees room; with
    `stopping` set it returns False."""
    spool, events = _sqlite(tmp_path, "batch", "each", max_bytes=10 * ROW)
    spool.open()
    for n in range(10):
        assert spool.append(record(n, SMALL), None, "o", NO_STOP)
    stopping = threading.Event()
    stopping.set()
    assert not spool.append(record(10, SMALL), None, "o", stopping)
    result: list[bool] = []
    waiter = threading.Thread(target=lambda: result.append(spool.append(record(10, SMALL), None, "o", NO_STOP)))
    waiter.start()
    got = _read(spool, 10)
    assert not result  # still waiting: nothing was committed
    spool.commit(got[4].position)
    waiter.join(READ_DEADLINE_S)
    assert result == [True]
    assert events.counts["blocked"] >= 1
    assert [r.data for r in _read(spool, 1)] == [record(10, SMALL)]
    spool.close()


def test_strace_summary_counts_fsync_and_fdatasync() -> None:
    """The strace -c summary parser adds the calls of fsync and fdatasync and ignores the rest."""
    summary = (
        "% time     seconds  usecs/call     calls    errors syscall\n"
        "------ ----------- ----------- --------- --------- ----------------\n"
        " 88.75    0.000142         142        12           fsync\n"
        " 11.25    0.000018          18         3         1 fdatasync\n"
        "------ ----------- ----------- --------- --------- ----------------\n"
        "100.00    0.000160          80        15         1 total\n"
    )
    assert bench._strace_calls(summary) == 15


def test_sqlite_drop_oldest_with_a_reader_running_reads_or_drops_each_record_once(tmp_path: Path) -> None:
    """drop_oldest with a reader draining and committing beside the appends: every record is read once or
    counted dropped, never both or neither, and what is read comes in order."""
    # grouped: appends (into memory) outrun the reader by far, so drops go on while it reads
    spool, events = _sqlite(tmp_path, "batch", "grouped", max_bytes=2 * DROP_MIN_RECORDS * ROW, when_full="drop_oldest")
    spool.open()
    total = 40 * DROP_MIN_RECORDS
    got: list[Any] = []
    appended = threading.Event()

    def reader() -> None:
        deadline = time.monotonic() + READ_DEADLINE_S
        while time.monotonic() < deadline:
            batch = spool.read(10, 0.05)
            got.extend(batch)
            if batch:
                spool.commit(batch[-1].position)
            elif appended.is_set() and spool.stats().records == 0:
                return

    thread = threading.Thread(target=reader)
    for n in range(total):
        assert spool.append(record(n, SMALL), None, "o", NO_STOP)
        if n == 4 * DROP_MIN_RECORDS:  # full, dropping: now read while it goes on
            thread.start()
    appended.set()
    thread.join(READ_DEADLINE_S + 1)
    numbers = [json.loads(r.data)["seq"] for r in got]
    assert numbers == sorted(set(numbers))
    assert len(numbers) + events.counts["dropped"] == total
    assert numbers[-1] == total - 1
    assert numbers[0] > 0  # some were dropped before the reader started (and, most runs, more while it read)
    spool.close()
