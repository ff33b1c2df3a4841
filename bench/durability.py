"""Durability benchmark (issue 16): what checkpoints and the spool cost the daemon, next to the same daemon
without them.

In one run, against one null Kinesis endpoint (bench/null_kinesis.py, 4 shards, its own process), every case
is the real daemon (`python -m cli.main run`) in a process of its own, with a fresh state directory, delivering
the same number of records, timed from spawn until the endpoint counted them all:
- `file`: the file source replaying data/sample_tweets.jsonl repeated to N lines, `checkpoint: false`;
- `file-checkpoint`: the same with `checkpoint: true` (default `state.checkpoint_interval`, 1 s);
- `file-checkpoint-0.2s`: the same with `state.checkpoint_interval: 0.2`;
- `synthetic`: a live-like source, `synthetic` (kind tweets, count N, rate 0), `spool: {enabled: false}`;
- `synthetic-spool-batch`: the same with `spool: {enabled: true}` and `state.fsync: batch`;
- `synthetic-spool-interval`: the same with `state.fsync: interval` (default `state.fsync_interval`, 1 s).
Each durable case is compared with the no-durability case of its source. CPU (user + system) comes from the
child's `os.wait4`, peak RSS from its VmHWM, fsyncs from its `tweet_producer_fsyncs_total{file}` scraped once
the endpoint has every record.

    .venv/bin/python -m bench.durability --repeat 3 --write   # 100,000 records a case -> docs/benchmarks.md
    .venv/bin/python -m bench.durability --quick              # a few thousand records, one round: a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

from bench.durability_probe import by_label, cpu_at, file_system_of, free_port, process_cpu_s, settled_metrics, total
from bench.durability_report import SECTION_HEADING, write_section
from bench.kinesis import BENCH_FLUSH_DEADLINE, LIFTED_SHARD_LIMITS, CaseResult, _measure, median_run
from bench.kinesis_cases import REGION, STREAM
from bench.kinesis_procs import REPO, Child, DaemonUnderTest, Endpoint, case_env
from bench.kinesis_profile import Sampler, pyspy, summarise

WORK = REPO / "bench" / ".work"
SAMPLE = REPO / "data" / "sample_tweets.jsonl"
SHARDS = 4
DEFAULT_RECORDS = 100_000
QUICK_RECORDS = 2_000
DEFAULT_REPEAT = 3
DEFAULT_CASE_TIMEOUT_S = 300.0
SYNTHETIC_SEED = 16
# After the endpoint counted every record, the daemon's own counters may lag by the last answers in flight.
METRICS_SETTLE_S = 10.0
KIB = 1024
PER_FSYNCS = 1000
PER_CPU = 100_000
# The driver's poll of the endpoint, and of the daemon's CPU: the delivering window's CPU is interpolated
# between two samples, so a short slice keeps that error small (each poll is one cheap local request).
CPU_SAMPLE_S = 0.05
CHECKPOINT_FAST_INTERVAL_S = 0.2
LIVE_RATE = 3000.0


@dataclass(frozen=True)
class Case:
    name: str
    source: str  # "file" or "synthetic"
    source_extra: dict[str, Any]
    state_extra: dict[str, Any]
    baseline: str | None  # the no-durability case it is compared with; None for a baseline itself
    rate: float = 0  # synthetic records/s; 0 = as fast as the daemon takes them


CASES = (
    Case("file", "file", {"checkpoint": False}, {}, None),
    Case("file-checkpoint", "file", {"checkpoint": True}, {}, "file"),
    Case("file-checkpoint-0.2s", "file", {"checkpoint": True}, {"checkpoint_interval": CHECKPOINT_FAST_INTERVAL_S}, "file"),
    Case("synthetic", "synthetic", {"spool": {"enabled": False}}, {}, None),
    Case("synthetic-spool-batch", "synthetic", {"spool": {"enabled": True}}, {"fsync": "batch"}, "synthetic"),
    Case("synthetic-spool-interval", "synthetic", {"spool": {"enabled": True}}, {"fsync": "interval"}, "synthetic"),
    # At a live stream's pace (a few thousand tweets/s) the spool's cost is CPU per record, not throughput.
    Case("synthetic-rate", "synthetic", {"spool": {"enabled": False}}, {}, None, rate=LIVE_RATE),
    Case(
        "synthetic-rate-spool-batch", "synthetic", {"spool": {"enabled": True}}, {"fsync": "batch"}, "synthetic-rate", LIVE_RATE
    ),
)
CASE_BY_NAME = {case.name: case for case in CASES}


@dataclass
class DurabilityResult(CaseResult):
    baseline: str | None = None
    delivery_s: float = 0.0  # from the first record the endpoint took to the last: the steady part of the run
    delivery_cpu_s: float = 0.0  # the daemon's CPU over that window (from /proc/<pid>/stat, interpolated)
    sys_cpu_s: float = 0.0  # of cpu_s, the system (kernel) part: writes and fsyncs show here
    fsyncs: dict[str, float] = field(default_factory=dict)  # tweet_producer_fsyncs_total by file
    metrics: dict[str, float] = field(default_factory=dict)  # received / sent / kept / dropped totals
    state_fs: str = ""  # the state directory's file system type: fsync costs what the device makes it cost

    @property
    def delivery_rate(self) -> float:
        return self.records / self.delivery_s if self.delivery_s > 0 else 0.0

    @property
    def delivery_cpu_per_100k(self) -> float:
        return self.delivery_cpu_s * PER_CPU / self.records if self.records else 0.0

    @property
    def sys_cpu_per_100k(self) -> float:
        return self.sys_cpu_s * PER_CPU / self.records if self.records else 0.0

    @property
    def fsyncs_per_1000(self) -> float:
        return sum(self.fsyncs.values()) * PER_FSYNCS / self.records if self.records else 0.0


def tweets_file(path: Path, records: int) -> Path:
    """data/sample_tweets.jsonl repeated (and cut) to `records` lines: the same generator as the synthetic
    source's tweets, so both sources hand over records of the same size."""
    sample = [line for line in SAMPLE.read_bytes().splitlines() if line]
    with path.open("wb") as out:
        for index in range(records):
            out.write(sample[index % len(sample)] + b"\n")
    return path


def case_config(case: Case, work: Path, state: Path, endpoint_url: str, tweets: Path, records: int, port: int) -> Path:
    """The daemon's config for one run of `case` (JSON is YAML: no YAML writer needed)."""
    if case.source == "file":
        source: dict[str, Any] = {"name": "tweets", "type": "file", "paths": [str(tweets)]}
    else:
        source = {
            "name": "tweets",
            "type": "synthetic",
            "kind": "tweets",
            "count": records,
            "rate": case.rate,
            "seed": SYNTHETIC_SEED,
        }
    config = {
        "stack": "bench",
        "embedded": {"enabled": False},
        "sources": [{**source, **case.source_extra}],
        "sink": {"type": "kinesis", "stream": STREAM, "region": REGION, "endpoint_url": endpoint_url, **LIFTED_SHARD_LIMITS},
        "shutdown": {"flush_deadline": BENCH_FLUSH_DEADLINE},
        "state": {"directory": str(state), **case.state_extra},
        "metrics": {"enabled": True, "listen": f"127.0.0.1:{port}"},
        "log": {"level": "warning", "format": "json"},
    }
    path = work / f"{state.name}.config.yaml"
    path.write_text(json.dumps(config, indent=1), encoding="utf-8")
    return path


def run_case(
    daemon: DaemonUnderTest,
    endpoint: Endpoint,
    work: Path,
    case: Case,
    tweets: Path,
    records: int,
    round_: int,
    timeout_s: float,
    profile_to: Path | None = None,
) -> DurabilityResult:
    """One run of `case` with a fresh state directory: spawn, wait for every record at the endpoint, scrape
    the daemon's counters, SIGTERM it, measure it. With `profile_to`, py-spy samples it from its first
    accepted record on, into that file."""
    result = DurabilityResult(case.name, records, baseline=case.baseline)
    state = work / f"{case.name}.{round_}.state"  # fresh: a finished replay's checkpoint would skip the file
    port = free_port()
    config = case_config(case, work, state, endpoint.url, tweets, records, port)
    endpoint.reset(limits=False, expect=records)
    started = time.monotonic()  # CLOCK_MONOTONIC is system-wide: comparable with the endpoint's timestamps
    argv = [daemon.python, "-m", "cli.main", "run", "--config", str(config)]
    child = Child(argv, case_env(work, daemon), work, work / f"{case.name}.{round_}")
    cpu: list[tuple[float, float]] = []  # (monotonic time, the daemon's CPU seconds), one a wait slice
    executable = pyspy() if profile_to is not None else None
    sampler: Sampler | None = None
    try:
        while True:
            stats = endpoint.wait(CPU_SAMPLE_S)
            if executable and profile_to and sampler is None and stats["first_accepted_at"] is not None:
                sampler = Sampler(executable, child.process.pid, profile_to)
            now, used = time.monotonic(), process_cpu_s(child.process.pid)
            if used is not None:
                cpu.append((now, used))
            child.sample_rss()
            if stats["reached_at"] is not None:
                result.ok, result.seconds = True, stats["reached_at"] - started
                result.metrics = settled_metrics(port, records, METRICS_SETTLE_S)
                break
            if child.exited():
                result.error = f"exit {child.status} with {stats['user_records']:,} of {records:,}: {child.first_error()}"
                break
            if time.monotonic() - started > timeout_s:
                result.error = f"timed out after {timeout_s:g}s with {stats['user_records']:,} of {records:,} delivered"
                break
    except (OSError, RuntimeError) as exc:  # the metrics scrape failed: the case failed, the run goes on
        result.ok, result.error = False, f"{type(exc).__name__}: {exc}"
    finally:
        if sampler is not None and (problem := sampler.stop()):
            print(f"{case.name}: py-spy failed: {problem}", flush=True)
        child.stop()
    result.stats = endpoint.stats()
    _measure(child, result)
    if child.rusage is not None:
        result.sys_cpu_s = child.rusage.ru_stime
    if result.stats["first_accepted_at"] is not None:
        result.first_record_s = result.stats["first_accepted_at"] - started
        if result.ok:
            result.delivery_s = result.stats["reached_at"] - result.stats["first_accepted_at"]
            first, reached = result.stats["first_accepted_at"], result.stats["reached_at"]
            result.delivery_cpu_s = cpu_at(cpu, reached) - cpu_at(cpu, first)
    if result.ok and child.status not in (0, -signal.SIGTERM):
        result.ok, result.error = False, f"delivered everything but exited {child.status}: {child.first_error()}"
    result.error = result.error.replace(f"{work}/", "")
    result.fsyncs = by_label(result.metrics, "tweet_producer_fsyncs_total", "file")
    result.metrics = {
        name: total(result.metrics, f"tweet_producer_{name}_total")
        for name in ("records_received", "records_sent", "records_kept", "spool_dropped_records", "spool_replayed_records")
    }
    result.state_fs = file_system_of(work)
    dead_letters = state / "dead-letter.jsonl"
    if dead_letters.exists():
        with dead_letters.open("rb") as lines:
            result.dead_lettered = sum(1 for _ in lines)
    return result


def ratios(results: list[DurabilityResult]) -> dict[str, dict[str, float]]:
    """Each durable case's figures over its baseline's, from the measured values."""
    by_case = {r.case: r for r in results if r.ok}
    out: dict[str, dict[str, float]] = {}
    for r in results:
        base = by_case.get(r.baseline or "")
        if not r.ok or base is None or not base.rate or not base.delivery_rate or not base.cpu_per_100k:
            continue
        out[r.case] = {
            "rate_x": r.rate / base.rate,
            "delivery_rate_x": r.delivery_rate / base.delivery_rate,
            "cpu_x": r.cpu_per_100k / base.cpu_per_100k,
            "delivery_cpu_x": r.delivery_cpu_s / base.delivery_cpu_s if base.delivery_cpu_s else 0.0,
            "peak_rss_x": r.peak_rss_mib / base.peak_rss_mib if base.peak_rss_mib else 0.0,
        }
    return out


def _print(r: DurabilityResult) -> None:
    if not r.ok:
        print(f"{r.case:26} FAILED: {r.error}", flush=True)
        return
    fsyncs = ", ".join(f"{k} {v:,.0f}" for k, v in sorted(r.fsyncs.items())) or "none"
    print(
        f"{r.case:26} {r.records:>8,} rec {r.rate:>9,.0f} rec/s ({r.delivery_rate:>9,.0f} delivering) "
        f"{r.cpu_per_100k:6.2f} CPU s/100k ({r.delivery_cpu_per_100k:5.2f} delivering) "
        f"{r.peak_rss_mib:5.0f} MiB; fsyncs {fsyncs}; "
        f"endpoint {r.stats['user_records']:,}; dead-lettered {r.dead_lettered}",
        flush=True,
    )


# Profiled with --profile: the unspooled live-like case and the spooled ones, where the cost is.
PROFILED = ("synthetic", "synthetic-spool-batch", "synthetic-spool-interval")


def profiles(
    daemon: DaemonUnderTest, endpoint: Endpoint, work: Path, tweets: Path, records: int, timeout_s: float
) -> dict[str, Any]:
    """Each profiled case once more (untimed) with py-spy attached: where its GIL-holding time goes."""
    if pyspy() is None:
        print("--profile: py-spy is not installed (pip install py-spy); no profiles", flush=True)
        return {}
    found: dict[str, Any] = {}
    for name in PROFILED:
        raw = work / f"{name}.pyspy.txt"
        run_case(daemon, endpoint, work, CASE_BY_NAME[name], tweets, records, -1, timeout_s, profile_to=raw)
        if raw.exists():
            found[name] = summarise(raw)
            top = ", ".join(f"{area} {100 * share:.0f} %" for area, share in found[name]["areas"][:8])
            print(f"profile {name}: {top}", flush=True)
    return found


# Figures derived from the fields, written into results.json beside them for a reader of the JSON.
DERIVED = ("delivery_rate", "delivery_cpu_per_100k", "sys_cpu_per_100k", "fsyncs_per_1000")


def render(results_json: Path, doc: Path) -> int:
    """Write the section again from a finished run's results.json (after a change of wording)."""
    report = json.loads(results_json.read_text(encoding="utf-8"))
    results = [DurabilityResult(**{k: v for k, v in r.items() if k not in DERIVED}) for r in report["results"]]
    write_section(doc, report, results)
    print(f"{doc}: section written from {results_json}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--records", type=int, default=None, help=f"records per case (default {DEFAULT_RECORDS:,})")
    parser.add_argument("--repeat", type=int, default=None, help=f"rounds; the median run is reported (default {DEFAULT_REPEAT})")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_RECORDS:,} records, one round (unless given)")
    parser.add_argument("--cases", nargs="+", choices=list(CASE_BY_NAME), default=None, help="run only these cases")
    parser.add_argument("--timeout", type=float, default=DEFAULT_CASE_TIMEOUT_S, help="seconds a case may take")
    parser.add_argument("--write", action="store_true", help=f"write the section '{SECTION_HEADING[3:]}' into --doc")
    parser.add_argument("--doc", type=Path, default=REPO / "docs" / "benchmarks.md", help="the Markdown file --write edits")
    parser.add_argument("--work", type=Path, default=WORK, help="where the run's directory is made (state dirs live there)")
    parser.add_argument("--daemon-repo", type=Path, default=None, help="run the daemon of this checkout (its .venv if any)")
    parser.add_argument("--profile", action="store_true", help="then profile the synthetic cases once each with py-spy")
    parser.add_argument(
        "--render", type=Path, default=None, metavar="RESULTS", help="only rewrite the section from a results.json"
    )
    args = parser.parse_args(argv)
    if args.render is not None:
        return render(args.render, args.doc)
    records = args.records or (QUICK_RECORDS if args.quick else DEFAULT_RECORDS)
    repeat = args.repeat or (1 if args.quick else DEFAULT_REPEAT)
    cases = [CASE_BY_NAME[name] for name in (args.cases or CASE_BY_NAME)]
    daemon = DaemonUnderTest.at(args.daemon_repo) if args.daemon_repo is not None else DaemonUnderTest()

    args.work.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="durability-", dir=args.work))
    tweets = tweets_file(work / "tweets.jsonl", records)
    command = "python -m bench.durability " + " ".join(argv if argv is not None else sys.argv[1:])
    report: dict[str, Any] = {
        "command": command.strip(),
        "records": records,
        "repeat": repeat,
        "average_bytes": tweets.stat().st_size / records - 1,
        "live_rate": LIVE_RATE,
        "daemon": daemon.describe(),
        "state_fs": file_system_of(work),
        "cpus": os.cpu_count(),
        "load_before": os.getloadavg()[0],
    }
    endpoint = Endpoint(SHARDS)
    print(f"endpoint {endpoint.url}; {records:,} records a case, {repeat} round(s); work dir {work} "
          f"({report['state_fs']})", flush=True)  # fmt: skip
    runs: dict[str, list[DurabilityResult]] = {case.name: [] for case in cases}
    try:
        # Round by round, so a change in the machine's load falls on every case alike.
        for round_ in range(repeat):
            for case in cases:
                runs[case.name].append(run_case(daemon, endpoint, work, case, tweets, records, round_, args.timeout))
                _print(runs[case.name][-1])
        if args.profile:
            report["profiles"] = profiles(daemon, endpoint, work, tweets, records, args.timeout)
    finally:
        endpoint.stop()
    results = [cast(DurabilityResult, median_run(cast(list[CaseResult], runs[case.name]))) for case in cases]
    report["load_after"] = os.getloadavg()[0]
    report["results"] = [{**asdict(r), **{name: getattr(r, name) for name in DERIVED}} for r in results]
    report["ratios"] = ratios(results)
    (work / "results.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    if args.write:
        write_section(args.doc, report, results)
        print(f"{args.doc}: section written", flush=True)
    print(f"results: {work / 'results.json'}", flush=True)
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
