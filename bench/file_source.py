"""The file source alone: how fast it reads, splits, parses and hands over ~1 KB X v2 tweets.

The source replays a file of `--records` sample tweets (cli/sample.py) into a context whose `emit` does
nothing, so the figures are the source's own cost: line reading, origins, the JSON parse and the hand-over
call. `--profile` runs once more under cProfile and prints where the time goes. `--parser` also times the
line reader and the parser alone over the same lines (the fast path and the stdlib path it falls back to).

    .venv/bin/python -m bench.file_source --records 100000 --repeat 3 --profile
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import tempfile
import time
from pathlib import Path
from typing import Any

from cli.sample import write_sample
from sources.file import FileSource, FileSourceConfig

SEED = 2015
PER_RECORDS = 100_000  # CPU seconds are reported per this many records
PROFILE_LINES = 25


class NullContext:
    """A SourceContext that takes every record and does nothing with it (and fails on a rejection)."""

    name = "bench"
    stopping = False

    def __init__(self) -> None:
        self.emitted = 0

    def emit(self, data: bytes, event: Any, origin: str, token: Any = None) -> bool:
        self.emitted += 1
        return True

    def reject(self, data: bytes, origin: str, reason: str, detail: str, token: Any = None) -> None:
        raise AssertionError(f"{origin}: {reason}: {detail}")

    def wait(self, seconds: float) -> bool:
        return False

    def connection(self, connected: bool, detail: str = "") -> None: ...

    def reconnecting(self, reason: str, delay_s: float, detail: str = "") -> None: ...

    def protocol_message(self, kind: str, detail: str) -> None: ...


def replay(path: Path, records: int) -> dict[str, float]:
    """One replay of `path`: records/s (wall) and CPU seconds per PER_RECORDS records."""
    ctx = NullContext()
    source = FileSource(FileSourceConfig(paths=[str(path)]))
    wall, cpu = time.perf_counter(), time.process_time()
    source.run(ctx)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if ctx.emitted != records:
        raise AssertionError(f"emitted {ctx.emitted} of {records} records")
    return {"records_per_s": round(records / wall), "cpu_s_per_100k": round(cpu * PER_RECORDS / records, 3)}


def time_parts(path: Path) -> dict[str, float]:
    """CPU seconds per PER_RECORDS lines of the parts alone: the line reader, parse_json_record, the stdlib
    path it falls back to, a bare json.loads."""
    from sources import parsing
    from sources.file_read import LineReader, OpenFile

    lines = path.read_bytes().splitlines()
    limit = 1024 * 1024
    result: dict[str, float] = {}
    opened = OpenFile(path)
    try:
        reader = LineReader(opened.stream, limit)
        cpu = time.process_time()
        while reader.read(True) is not None:
            pass
        result["line_reader_cpu_s_per_100k"] = round((time.process_time() - cpu) * PER_RECORDS / len(lines), 3)
    finally:
        opened.close()
    slow = getattr(parsing, "_parse_slow", None)
    for name, parse in (("parse_json_record", parsing.parse_json_record), ("slow_path", slow)):
        if parse is None:
            continue
        cpu = time.process_time()
        for line in lines:
            parse(line, limit)
        result[f"{name}_cpu_s_per_100k"] = round((time.process_time() - cpu) * PER_RECORDS / len(lines), 3)
    cpu = time.process_time()
    for line in lines:
        json.loads(line)
    result["json_loads_cpu_s_per_100k"] = round((time.process_time() - cpu) * PER_RECORDS / len(lines), 3)
    return result


def profile(path: Path, records: int) -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    replay(path, records)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(PROFILE_LINES)
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=PER_RECORDS)
    parser.add_argument("--repeat", type=int, default=3, help="replays; the best one is reported")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of one more replay")
    parser.add_argument("--parser", action="store_true", help="also time the line reader and the parser alone")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tweets.jsonl"
        write_sample(path, args.records, SEED)
        size = path.stat().st_size
        runs = [replay(path, args.records) for _ in range(args.repeat)]
        best = min(runs, key=lambda run: run["cpu_s_per_100k"])
        report: dict[str, Any] = {"records": args.records, "mean_line_bytes": round(size / args.records), **best, "runs": runs}
        if args.parser:
            report.update(time_parts(path))
        print(json.dumps(report, indent=2))
        if args.profile:
            print(profile(path, args.records))


if __name__ == "__main__":
    main()
