"""Transforms' cost on the record path: records/s with no transforms, a filter only, and a filter + projection.

The real path up to the sink: the file source reads and parses each line, its SourceContext counts it, runs the
chain and hands it to the Kinesis sink's real `prepare` (partition key, size), the buffer, and the worker; the
sink itself ends each entry at once (no network), so the figures are the producer's own cost. All cases run in
one process, on the same generated tweets, interleaved round by round; each figure is the median of the rounds.

Two filters: `lang` keeps the 2 of 15 languages an operator might want (the typical case: most records end
early and the sink has less to do); `keep-all` keeps every record, so every record pays for the filter, the
projection and the re-serialisation (the worst case). The section reports the target's verdict on both.

    .venv/bin/python -m bench.transforms --records 30000 --rounds 5 --write
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SECTION_HEADING = "## Transforms: filter and projection on the record path"
TARGET_SLOWDOWN = 0.10  # the target: at most 10 % fewer records/s than without transforms
# What an operator keeps of an X v2 tweet for the table: what the processor reads, plus the rule tags.
PROJECTION = ["data.id", "data.text", "data.author_id", "data.created_at", "data.lang", "data.entities", "includes.users",
              "matching_rules"]  # fmt: skip
KEEP_ALL = "data.public_metrics.like_count >= `0`"
LANG = "data.lang == 'en' || data.lang == 'ja'"
_SETTLE_POLL_S = 0.002
TYPICAL = "filter lang + fields"
WORST = "filter keep-all + fields"


@dataclass(frozen=True)
class Case:
    name: str
    steps: tuple[dict[str, Any], ...]


CASES = (
    Case("none", ()),
    Case("filter keep-all", ({"filter": KEEP_ALL},)),
    Case(WORST, ({"filter": KEEP_ALL}, {"fields": PROJECTION})),
    Case(TYPICAL, ({"filter": LANG}, {"fields": PROJECTION})),
)


def _null_sink() -> Any:
    """A kinesis-shaped sink that takes every entry at once: the real `prepare`, no requests."""
    from sinks.base import Completion, Deadline, Record, Sink, SinkConfig
    from sinks.kinesis.records import EntryBuilder, KinesisEntry

    class NullSink(Sink[KinesisEntry]):
        config_model = SinkConfig

        def __init__(self) -> None:
            self.builder = EntryBuilder(["data.author_id"], 1024 * 1024)
            self.completion: Completion[KinesisEntry] | None = None

        def prepare(self, record: Record) -> KinesisEntry:
            return self.builder.build(record)

        def start(self, completion: Completion[KinesisEntry]) -> None:
            self.completion = completion

        def submit(self, entries: Sequence[KinesisEntry], deadline: Deadline) -> int:
            assert self.completion is not None
            self.completion.sent(entries)
            return len(entries)

        def finish(self, deadline: Deadline) -> None:
            pass

    return NullSink()


def run_case(case: Case, path: Path, expected: int) -> dict[str, Any]:
    """One pass of the file through the record path; records/s from the first read to the last record's end."""
    from daemon.buffer import RecordBuffer
    from daemon.deadletter import DeadLetterFile
    from daemon.pipeline import SinkWorker, SourceContext
    from daemon.telemetry import Telemetry
    from daemon.transforms import SourceTransforms, compile_chain
    from daemon.transforms.config import STEP_MODELS
    from sources.file import FileSource, FileSourceConfig

    chain = None
    if case.steps:
        steps = tuple(STEP_MODELS[next(iter(s))].model_validate(s) for s in case.steps)
        chain = compile_chain(SourceTransforms(steps=steps), "bench")  # type: ignore[arg-type]
    telemetry = Telemetry("null")
    buffer = RecordBuffer(10_000, 64 * 1024**2)
    dead = DeadLetterFile(path.with_suffix(".dead.jsonl"), "null")
    sink = _null_sink()
    worker = SinkWorker(sink, buffer, telemetry, dead)
    context = SourceContext("bench", buffer, telemetry, dead, threading.Event(), sink, transform=chain)
    started = time.perf_counter()
    worker.start()
    FileSource(FileSourceConfig(paths=[str(path)])).run(context)
    ledger = telemetry.ledger
    while (t := ledger.totals())["sent"] + t["filtered"] + t["dead_lettered"] < expected:
        time.sleep(_SETTLE_POLL_S)
    seconds = time.perf_counter() - started
    worker.finish(5.0)
    totals = ledger.totals()
    if totals["received"] != expected or totals["dead_lettered"]:
        raise RuntimeError(f"case {case.name}: {totals}")
    return {"seconds": seconds, "sent": totals["sent"], "filtered": totals["filtered"]}


def measure(records: int, rounds: int, work: Path) -> dict[str, Any]:
    from cli.sample import write_sample
    from daemon.logs import configure_logging

    configure_logging("warning", "json")
    work.mkdir(parents=True, exist_ok=True)
    path = work / "transforms-tweets.jsonl"
    write_sample(path, records, seed=18)
    runs: dict[str, list[dict[str, Any]]] = {case.name: [] for case in CASES}
    run_case(CASES[0], path, records)  # warm-up: imports, caches
    for _ in range(rounds):
        for case in CASES:
            runs[case.name].append(run_case(case, path, records))
    results = []
    for case in CASES:
        seconds = statistics.median(r["seconds"] for r in runs[case.name])
        last = runs[case.name][-1]
        rate = records / seconds
        results.append({"case": case.name, "records_per_s": rate, "sent": last["sent"], "filtered": last["filtered"]})
    base = results[0]["records_per_s"]
    for result in results:
        result["ratio"] = result["records_per_s"] / base
    return {"records": records, "rounds": rounds, "results": results}


def verdict(result: dict[str, Any]) -> str:
    return "met" if result["ratio"] >= 1 - TARGET_SLOWDOWN else "missed"


def slower(result: dict[str, Any]) -> str:
    change = 1 - result["ratio"]
    return f"{change:.0%} slower" if change > 0 else f"{-change:.0%} faster"


def markdown(report: dict[str, Any], command: str) -> str:
    by_case = {r["case"]: r for r in report["results"]}
    typical, worst = by_case[TYPICAL], by_case[WORST]
    lines = [
        SECTION_HEADING,
        "",
        f"`{command}` — file source → SourceContext (transforms) → Kinesis sink `prepare` → buffer → worker,",
        f"into a sink that ends every entry at once; {report['records']:,} generated X v2 tweets, all cases in one",
        f"process, interleaved, median of {report['rounds']} rounds; a 2-core machine shared with other jobs (ratios",
        "moved by up to ±0.1 between runs). Ratio: records/s against no transforms.",
        "",
        "| case | records/s | ratio | sent | filtered |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in report["results"]:
        lines.append(f"| {r['case']} | {r['records_per_s']:,.0f} | {r['ratio']:.2f} | {r['sent']:,} | {r['filtered']:,} |")
    lines += [
        "",
        f"Target: ≤ {TARGET_SLOWDOWN:.0%} slower with a typical filter + projection.",
        f"- Typical (`{TYPICAL}`: most records filtered out): **{verdict(typical)}** ({slower(typical)}).",
        f"- Worst case (`{WORST}`: every record goes through the filter, the projection and the serialisation,",
        f"  nothing dropped): **{verdict(worst)}** ({slower(worst)}).",
        "",
        "A filter alone ships the source's bytes untouched: its cost is the expression (compiled to closures, under",
        "1 µs for a comparison). The worst case adds the projection (about 1.5 µs a tweet, in Python) and the",
        "serialisation of the changed record (orjson, under 1 µs) to a record path of about 9 µs a record.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--records", type=int, default=30_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--work", type=Path, default=REPO / "bench" / ".work")
    parser.add_argument("--write", action="store_true", help=f"write the section '{SECTION_HEADING[3:]}' into --doc")
    parser.add_argument("--doc", type=Path, default=REPO / "docs" / "benchmarks.md")
    args = parser.parse_args(argv)
    report = measure(args.records, args.rounds, args.work)
    print(json.dumps(report, indent=1))
    if args.write:
        from bench.kinesis_report import replace_section

        command = f"python -m bench.transforms --records {args.records} --rounds {args.rounds} --write"
        replace_section(args.doc, SECTION_HEADING, markdown(report, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
