"""The spool on segment files (daemon/spool.py) against the spool on SQLite in WAL mode (bench/spool_sqlite.py).

One run measures both, side by side, under fsync batch and interval, for records of 300 B and 3 KB:

- throughput: a source thread appends `--records` records as fast as it can while a reader drains them as
  the daemon's feeder does (read 500 at a time) and a committer commits the last one read every 0.2 s (the
  checkpoint thread). records/s of the appends and until the reader had them all; process CPU seconds per
  100k records over the same span (every thread); fsyncs: the fsync/fdatasync system calls of the case's
  process (strace, when installed; open and close included), and what the spool itself counts (segments: the
  fsyncs through its FileSystem, commit file included; SQLite: its commits and the checkpoints that synced).
  Every record is checked on the way out (each read back once, in order, intact) and the spool is empty after
  the last commit.
- recovery: a process fills a spool with `--recovery-records` records and stops without closing it (as a
  kill after the last fsync); a new process times `open()` (recovery) and checks the count. Disk bytes per
  record are those files' sizes over the records. The page cache is warm (no root to drop it).

Each case runs in its own process, `--repeat` times round by round; each row is its median by records/s (the
runs' range beside it). The spool lives in a temp dir on the real disk (`--dir`, default the system's temp).

    .venv/bin/python -m bench.spool --repeat 3 --json spool-bench.json
    .venv/bin/python -m bench.spool --quick          # seconds: what tests/bench/test_spool_bench.py runs
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from daemon.durable import LOCAL, AppendFile, ForwardingAppendFile
from sources.base import SpoolSettings

RECORD_SIZES = (300, 3000)
READ_BATCH = 500
READ_TIMEOUT_S = 0.05
COMMIT_EVERY_S = 0.2
FSYNC_INTERVAL_S = 1.0
PER_RECORDS = 100_000
# Large enough never to block: capacity is not what is measured here.
MAX_BYTES = 64 * 1024**3
CASE_TIMEOUT_S = 1800.0
DEFAULT_RECORDS = {300: 100_000, 3000: 30_000}
QUICK_RECORDS = 2000
RECOVERY_RECORDS = 1_000_000
QUICK_RECOVERY_RECORDS = 5000
SEQ_DIGITS = 12
REPO_ROOT = Path(__file__).resolve().parents[1]  # the children run `-m bench.spool` from here
_PREFIX = b'{"seq":'
_SEQ_END = len(_PREFIX) + SEQ_DIGITS


@dataclass(frozen=True)
class Case:
    spool: str  # "segments" or "sqlite"
    fsync: str  # "batch" or "interval"
    inserts: str  # sqlite: "grouped" (a committer thread) or "each" (a transaction per append); segments: "-"

    @property
    def label(self) -> str:
        return self.spool if self.spool == "segments" else f"sqlite ({self.inserts})"


# The brief's pairings first (sqlite batch = grouped at FULL, interval = each at NORMAL), then the other
# pairing of each, so both insert styles are seen under both policies.
CASES = (
    Case("segments", "batch", "-"),
    Case("sqlite", "batch", "grouped"),
    Case("sqlite", "batch", "each"),
    Case("segments", "interval", "-"),
    Case("sqlite", "interval", "each"),
    Case("sqlite", "interval", "grouped"),
)


def record(seq: int, size: int) -> bytes:
    """A JSON record of exactly `size` bytes whose first bytes carry `seq`."""
    head = b'%s%*d,"text":"' % (_PREFIX, SEQ_DIGITS, seq)  # space-padded: valid JSON
    return head + b"x" * (size - len(head) - 2) + b'"}'


class CountingEvents:
    """SpoolEvents that count each event (a benchmark run expects no drops, corruption or write failures)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def spool_fsync(self, seconds: float) -> None:
        self.counts["fsync"] += 1

    def spool_dropped(self, records: int, first_origin: str | None, last_origin: str | None) -> None:
        self.counts["dropped"] += records

    def spool_blocked(self, seconds: float) -> None:
        self.counts["blocked"] += 1

    def spool_write_failed(self, error: OSError) -> None:
        self.counts["write_failed"] += 1

    def spool_recovered(self, records: int, bytes: int) -> None:  # noqa: A002 - the protocol's name
        self.counts["recovered"] += records

    def spool_corrupt(self, segment: str, offset: int, detail: str) -> None:
        self.counts["corrupt"] += 1


class _CountingAppendFile(ForwardingAppendFile):
    def __init__(self, inner: AppendFile, fs: CountingFS) -> None:
        self._inner = inner
        self._fs = fs

    def fsync(self) -> None:
        self._fs.fsyncs += 1
        self._inner.fsync()


class CountingFS:
    """The real file system, counting fsyncs of files and directories (the segment spool's)."""

    def __init__(self) -> None:
        self.fsyncs = 0
        self.dir_fsyncs = 0

    def open_append(self, path: Path) -> AppendFile:
        return _CountingAppendFile(LOCAL.open_append(path), self)

    def fsync_dir(self, path: Path) -> None:
        self.dir_fsyncs += 1
        LOCAL.fsync_dir(path)

    def __getattr__(self, name: str) -> Any:
        return getattr(LOCAL, name)


def make_spool(case: Case, directory: Path, events: CountingEvents, fs: CountingFS) -> Any:
    settings = SpoolSettings(max_bytes=MAX_BYTES)
    if case.spool == "segments":
        from daemon.spool import Spool

        return Spool(directory, settings, case.fsync, FSYNC_INTERVAL_S, events, fs=fs)
    from bench.spool_sqlite import SqliteSpool

    inserts: Literal["grouped", "each"] = "grouped" if case.inserts == "grouped" else "each"
    return SqliteSpool(directory, settings, case.fsync, FSYNC_INTERVAL_S, events, inserts=inserts)


def _spool_fsyncs(spool: Any, fs: CountingFS) -> dict[str, int]:
    if hasattr(spool, "commits"):
        return {"sqlite_commits": spool.commits, "sqlite_checkpoints": spool.checkpoints}
    return {"file_fsyncs": fs.fsyncs, "dir_fsyncs": fs.dir_fsyncs}


def _disk_bytes(directory: Path) -> int:
    return sum(path.stat().st_size for path in directory.rglob("*") if path.is_file())


# -- the cases, each in a process of its own ----------------------------------------------------------------


def run_throughput(case: Case, size: int, records: int, directory: Path) -> dict[str, Any]:
    """Append `records` while a reader drains and commits; check every record came out once, in order."""
    events, fs = CountingEvents(), CountingFS()
    spool = make_spool(case, directory, events, fs)
    if spool.open() != 0:
        raise AssertionError(f"{directory}: not empty")
    stopping = threading.Event()
    done = threading.Event()
    state: dict[str, Any] = {"read": 0, "last": None, "problem": None, "commits": 0, "peak_disk": 0}

    def reader() -> None:
        expected = 0
        while expected < records and state["problem"] is None:
            for item in spool.read(READ_BATCH, READ_TIMEOUT_S):
                seq = int(item.data[len(_PREFIX) : _SEQ_END])
                if seq != expected or item.data != record(seq, size):
                    state["problem"] = f"read record {seq} ({len(item.data)} bytes) where {expected} was next"
                    break
                expected += 1
                state["last"] = item.position
            state["read"] = expected
        done.set()

    def committer() -> None:
        while not done.wait(COMMIT_EVERY_S):
            state["peak_disk"] = max(state["peak_disk"], spool.stats().disk_bytes)
            if state["last"] is not None:
                spool.commit(state["last"])
                state["commits"] += 1

    threads = [threading.Thread(target=reader), threading.Thread(target=committer)]
    wall, cpu = time.perf_counter(), time.process_time()
    for thread in threads:
        thread.start()
    for seq in range(records):
        if not spool.append(record(seq, size), {"seq": seq}, "bench", stopping):
            raise AssertionError(f"append {seq} refused")
    append_wall = time.perf_counter() - wall
    for thread in threads:
        thread.join()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if state["problem"]:
        raise AssertionError(state["problem"])
    peak_disk = max(state["peak_disk"], spool.stats().disk_bytes)
    spool.commit(state["last"])
    left = spool.stats()
    fsyncs = _spool_fsyncs(spool, fs)
    spool.close()
    return {
        "appended": records,
        "read": state["read"],
        "left_after_commit": left.records,
        "commits": state["commits"] + 1,
        "append_records_per_s": round(records / append_wall),
        "drained_records_per_s": round(records / wall),
        "cpu_s_per_100k": round(cpu * PER_RECORDS / records, 3),
        "peak_disk_bytes": peak_disk,  # the spool's files, sampled at each commit
        "spool_counted": fsyncs,
        "events": dict(events.counts),
    }


def run_build(case: Case, size: int, records: int, directory: Path) -> dict[str, Any]:
    """Fill a spool, fsync it, stop without closing (a kill after the last fsync)."""
    events, fs = CountingEvents(), CountingFS()
    spool = make_spool(case, directory, events, fs)
    spool.open()
    stopping = threading.Event()
    started = time.perf_counter()
    for seq in range(records):
        if not spool.append(record(seq, size), None, "bench", stopping):
            raise AssertionError(f"append {seq} refused")
    if not spool.sync():
        raise AssertionError("the final sync failed")
    result = {"build_s": round(time.perf_counter() - started, 2), "disk_bytes": _disk_bytes(directory)}
    _emit(result)
    os._exit(0)


def run_recover(case: Case, size: int, records: int, directory: Path) -> dict[str, Any]:
    """Time open() over what run_build left; check it found every record and the first reads back."""
    events, fs = CountingEvents(), CountingFS()
    spool = make_spool(case, directory, events, fs)
    started = time.perf_counter()
    waiting = spool.open()
    seconds = time.perf_counter() - started
    first = spool.read(1, 1.0)
    ok = waiting == records and len(first) == 1 and first[0].data == record(0, size)
    result = {"recovery_s": round(seconds, 3), "waiting": waiting, "first_ok": ok, "events": dict(events.counts)}
    _emit(result)
    os._exit(0)  # no close: the next repeat recovers the same state


def _emit(result: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


# -- the driver -------------------------------------------------------------------------------------------------


def _child(mode: str, case: Case, size: int, records: int, directory: Path, strace: bool) -> dict[str, Any]:
    command = [sys.executable, "-m", "bench.spool", "--child", mode, case.spool, case.fsync, case.inserts,
               str(size), str(records), str(directory)]  # fmt: skip
    trace = directory.parent / f"{directory.name}.strace"
    if strace:
        command = ["strace", "-f", "--seccomp-bpf", "-c", "-o", str(trace), "-e", "trace=fsync,fdatasync", *command]
    done = subprocess.run(command, capture_output=True, text=True, timeout=CASE_TIMEOUT_S, check=False, cwd=REPO_ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"{mode} {case} {size} B failed ({done.returncode}): {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if strace:
        result["fsync_syscalls"] = _strace_calls(trace.read_text())
        trace.unlink()
    return result


def _strace_works() -> bool:
    """strace is installed and may trace here (ptrace can be forbidden in containers)."""
    if shutil.which("strace") is None:
        return False
    probe = ["strace", "-f", "--seccomp-bpf", "-c", "-o", os.devnull, "-e", "trace=fsync", sys.executable, "-c", "pass"]
    return subprocess.run(probe, capture_output=True, timeout=CASE_TIMEOUT_S, check=False).returncode == 0


def _strace_calls(summary: str) -> int:
    calls = 0
    for line in summary.splitlines():
        fields = line.split()
        if fields and fields[-1] in ("fsync", "fdatasync"):
            calls += int(fields[3])
    return calls


def _median_run(runs: list[dict[str, Any]], key: str) -> dict[str, Any]:
    ordered = sorted(runs, key=lambda run: run[key])
    median = dict(ordered[(len(ordered) - 1) // 2])
    median["runs"] = runs
    median["range"] = [ordered[0][key], ordered[-1][key]]
    return median


def measure(base: Path, repeat: int, sizes: tuple[int, ...], records: dict[int, int], recovery: int,
            strace: bool) -> dict[str, Any]:  # fmt: skip
    """recovery=0: no recovery measurements."""
    throughput: dict[tuple[Case, int], list[dict[str, Any]]] = {}
    for _ in range(repeat if records else 0):
        for size in sizes:
            for case in CASES:
                directory = Path(tempfile.mkdtemp(prefix="spool-", dir=base))
                try:
                    run = _child("throughput", case, size, records[size], directory, strace)
                finally:
                    shutil.rmtree(directory, ignore_errors=True)
                throughput.setdefault((case, size), []).append(run)
    rows = []
    for (case, size), runs in throughput.items():
        rows.append({"spool": case.label, "fsync": case.fsync, "size": size, **_median_run(runs, "drained_records_per_s")})
    recoveries = []
    for size in sizes if recovery else ():
        # Recovery does not depend on how the records were written: one build per spool (interval: quick).
        for case in (Case("segments", "interval", "-"), Case("sqlite", "interval", "grouped")):
            directory = Path(tempfile.mkdtemp(prefix="spool-", dir=base))
            try:
                built = _child("build", case, size, recovery, directory, False)
                runs = [_child("recover", case, size, recovery, directory, False) for _ in range(repeat)]
            finally:
                shutil.rmtree(directory, ignore_errors=True)
            row = _median_run(runs, "recovery_s")
            recoveries.append({"spool": case.spool, "size": size, "records": recovery, **built,
                               "disk_bytes_per_record": round(built["disk_bytes"] / recovery, 1), **row})  # fmt: skip
    return {"throughput": rows, "recovery": recoveries, "repeat": repeat, "strace": strace,
            "load_average": os.getloadavg()}  # fmt: skip


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "| spool | fsync | record | records | appends/s | drained records/s | CPU s per 100k | fsync calls per 1k "
        "| counted by the spool | peak disk MiB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for row in result["throughput"]:
        low, high = row["range"]
        syscalls = row.get("fsync_syscalls")
        per_1k = "-" if syscalls is None else f"{syscalls * 1000 / row['appended']:.2f} ({syscalls:,})"
        counted = ", ".join(f"{key} {value:,}" for key, value in row["spool_counted"].items())
        lines.append(
            f"| {row['spool']} | {row['fsync']} | {row['size']:,} B | {row['appended']:,} | "
            f"{row['append_records_per_s']:,} | {row['drained_records_per_s']:,} ({low:,}–{high:,}) | "
            f"{row['cpu_s_per_100k']:.2f} | {per_1k} | {counted} | {row['peak_disk_bytes'] / 1024**2:,.1f} |"
        )
    lines += ["", "| spool | record | records | disk bytes per record | recovery s (open) | runs |"]
    lines += ["|---|---:|---:|---:|---:|---|"]
    for row in result["recovery"]:
        runs = " / ".join(f"{run['recovery_s']:.2f}" for run in row["runs"])
        lines.append(
            f"| {row['spool']} | {row['size']:,} B | {row['records']:,} | {row['disk_bytes_per_record']:,.1f} | "
            f"{row['recovery_s']:.2f} | {runs} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--records", type=int, help="records per throughput run (default 100k at 300 B, 30k at 3 KB)")
    parser.add_argument("--recovery-records", type=int, default=RECOVERY_RECORDS)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(RECORD_SIZES))
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_RECORDS} records a run, one repeat")
    parser.add_argument("--no-strace", action="store_true", help="do not count fsync system calls with strace")
    parser.add_argument("--only", choices=("throughput", "recovery"), help="measure only this part")
    parser.add_argument("--dir", type=Path, help="where the temp spools go (default: the system's temp dir)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--child", nargs=7, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        mode, spool, fsync, inserts, size, records, directory = args.child
        runner = {"throughput": run_throughput, "build": run_build, "recover": run_recover}[mode]
        _emit(runner(Case(spool, fsync, inserts), int(size), int(records), Path(directory)))
        return 0
    if args.quick:
        args.repeat, args.recovery_records = 1, min(args.recovery_records, QUICK_RECOVERY_RECORDS)
    sizes = tuple(args.sizes)
    records = {size: args.records or (QUICK_RECORDS if args.quick else DEFAULT_RECORDS.get(size, 30_000)) for size in sizes}
    if args.only == "recovery":
        records = {}
    elif args.only == "throughput":
        args.recovery_records = 0
    strace = not args.no_strace and _strace_works()
    base = Path(tempfile.mkdtemp(prefix="spool-bench-", dir=args.dir))
    try:
        result = measure(base, args.repeat, sizes, records, args.recovery_records, strace)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
