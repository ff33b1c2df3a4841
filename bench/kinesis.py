"""Kinesis sink benchmark (issue 14): the daemon end to end against a plain boto3 loop and the AWS sample.

In one run, against one local null Kinesis endpoint (bench/null_kinesis.py, 4 shards, in a process of its
own so its CPU is not the producer's) and one file of ~1 KB X v2 tweets, each case runs in its own process
and is timed from spawn (start-up included) until the endpoint counted all its user records:
- `daemon`: `python -m cli.main run` with a file source and the kinesis sink (defaults);
- `daemon-aggregated`: the same with `sink.aggregation.enabled: true`;
- `daemon-ordered`: the same with `sink.ordered: true`;
- `boto3-loop`: a plain boto3 `put_records` loop, 500 per call, one thread, failed entries re-sent;
- `aws-sample`: the AWS sample's one `put_record` per tweet, on a subset, reported per record.
CPU seconds (user + system) come from the child's `os.wait4` rusage, peak RSS from its VmHWM.

`--throttled`: the endpoint enforces Kinesis's per-shard limits (1,000 records/s, 1 MiB/s over a rolling
second); the daemon (unaggregated, aggregated) and the boto3 loop run for a fixed window; the figures are
goodput as % of the 4 shards' capacity (records or bytes, whichever binds) and throttled attempts per record.

    .venv/bin/python -m bench.kinesis --write              # throughput table -> docs/benchmarks.md
    .venv/bin/python -m bench.kinesis --throttled --write  # against per-shard limits
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.kinesis_cases import REGION, STREAM, shard_shares, tweets_file
from bench.kinesis_procs import CONTROL_TIMEOUT_S, REPO, Child, DaemonUnderTest, Endpoint, case_env
from bench.kinesis_profile import Sampler, pyspy, summarise
from bench.kinesis_report import write_throttled, write_throughput

WORK = REPO / "bench" / ".work"
SHARDS = 4
DEFAULT_RECORDS = 100_000
# The AWS sample makes one HTTP request per record: a subset keeps its case under a minute.
AWS_SAMPLE_RECORDS = 10_000
# A case that has not delivered everything by then failed (a stuck producer must not hang the run).
DEFAULT_CASE_TIMEOUT_S = 300.0
# How long the driver blocks in one /wait call before it checks whether the child is still alive.
WAIT_SLICE_S = 0.25
# Throttled mode: the window measured starts this long after the first accepted record (the first rolling
# second may take a burst no later second can), and lasts THROTTLED_WINDOW_S.
THROTTLED_WARMUP_S = 2
THROTTLED_WINDOW_S = 20
# Records the throttled file must hold: more than 4 shards at 1,000 records/s can take during the run.
THROTTLED_SLACK_S = 5
SHARD_RECORDS_PER_S = 1000
SHARD_BYTES_PER_S = 1024 * 1024
# Throughput mode: the null endpoint enforces no limits, so the daemon's own per-shard pacing (Kinesis's
# 1,000 records/s and 1 MiB/s a shard by default) is lifted far out of reach; otherwise 4 shards would cap it
# at 4,000 records/s and the figures would measure the pacing, not the producer.
LIFTED_SHARD_LIMITS = {"shard_limits": {"records_per_second": 10_000_000, "bytes_per_second": 10_000_000_000}}
# The daemon's flush deadline in the benchmark: what is unsent at SIGTERM in the throttled mode is dropped.
BENCH_FLUSH_DEADLINE = "2s"
KIB = 1024

THROUGHPUT_CASES = ("daemon", "daemon-aggregated", "daemon-ordered", "boto3-loop", "aws-sample")
THROTTLED_CASES = ("daemon", "daemon-aggregated", "boto3-loop")
# What each daemon case adds to the sink's config (keys another helper adds; refused until merged).
DAEMON_SINK_EXTRA: dict[str, dict[str, Any]] = {
    "daemon": {},
    "daemon-aggregated": {"aggregation": {"enabled": True}},
    "daemon-ordered": {"ordered": True},
}


@dataclass
class CaseResult:
    case: str
    records: int
    ok: bool = False
    error: str = ""
    seconds: float = 0.0
    first_record_s: float = 0.0  # from spawn to the first accepted record: start-up, roughly
    cpu_s: float = 0.0
    peak_rss_mib: float = 0.0  # VmHWM
    maxrss_mib: float = 0.0  # wait4's ru_maxrss, kept for reference
    exit_code: int | None = None
    dead_lettered: int = 0  # lines in a daemon case's dead-letter file
    rates: list[float] = field(default_factory=list)  # records/s of every repeat (--repeat), this one's the median
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.records / self.seconds if self.seconds else 0.0

    @property
    def cpu_per_100k(self) -> float:
        return self.cpu_s * 100_000 / self.records if self.records else 0.0


# The daemon cases' checkout: one per run, chosen on the command line (--daemon-repo).
DAEMON = DaemonUnderTest()
# Added to every daemon case's sink config in this run (throughput mode: the lifted per-shard limits, when the
# daemon under test has them).
DAEMON_SINK_COMMON: dict[str, Any] = {}


def daemon_config(work: Path, case: str, endpoint_url: str, tweets: Path) -> Path:
    """A config for the real daemon: the tweets file into the null endpoint, embedded stack and metrics off."""
    sink: dict[str, Any] = {
        "type": "kinesis",
        "stream": STREAM,
        "region": REGION,
        "endpoint_url": endpoint_url,
        **DAEMON_SINK_COMMON,
        **DAEMON_SINK_EXTRA[case],
    }
    config = {
        "stack": "bench",
        "embedded": {"enabled": False},
        "sources": [{"name": "tweets", "type": "file", "paths": [str(tweets)]}],
        "sink": sink,
        "shutdown": {"flush_deadline": BENCH_FLUSH_DEADLINE},
        "dead_letter": {"path": str(work / f"{case}.dead-letter.jsonl")},
        "metrics": {"enabled": False},
        "log": {"level": "warning", "format": "json"},
    }
    path = work / f"{case}.config.yaml"
    # JSON is YAML: no YAML writer needed in the driver.
    path.write_text(json.dumps(config, indent=1), encoding="utf-8")
    return path


def daemon_knows(work: Path, sink_extra: dict[str, Any]) -> bool:
    """Whether the daemon under test accepts these sink keys (`check-config` exits 0 on a config with them)."""
    config = {
        "embedded": {"enabled": False},
        "sources": [{"type": "file", "paths": [str(work / "none.jsonl")]}],
        "sink": {"type": "kinesis", "stream": STREAM, "region": REGION, "endpoint_url": "http://127.0.0.1:9", **sink_extra},
    }
    (work / "none.jsonl").touch()
    path = work / "probe.config.yaml"
    path.write_text(json.dumps(config), encoding="utf-8")
    probe = subprocess.run(
        [DAEMON.python, "-m", "cli.main", "check-config", "--config", str(path)],
        cwd=work,
        env=case_env(work, DAEMON),
        capture_output=True,
        timeout=CONTROL_TIMEOUT_S,
        check=False,
    )
    return probe.returncode == 0


def case_argv(work: Path, case: str, endpoint_url: str, tweets: Path, records: int) -> list[str]:
    if case in DAEMON_SINK_EXTRA:
        config = daemon_config(work, case, endpoint_url, tweets)
        return [DAEMON.python, "-m", "cli.main", "run", "--config", str(config)]
    return [sys.executable, "-m", "bench.kinesis_cases", case, endpoint_url, str(tweets), str(records)]


def _env_for(work: Path, case: str) -> dict[str, str]:
    """The daemon cases import the daemon under test; the reference producers this checkout's bench code."""
    return case_env(work, DAEMON if case in DAEMON_SINK_EXTRA else DaemonUnderTest())


def _measure(child: Child, result: CaseResult | ThrottledResult) -> None:
    result.exit_code = child.status
    result.peak_rss_mib = child.peak_rss_kib / KIB
    if child.rusage is not None:
        result.cpu_s = child.rusage.ru_utime + child.rusage.ru_stime
        result.maxrss_mib = child.rusage.ru_maxrss / KIB  # KiB on Linux; inflated by the driver's, see sample_rss


def run_case(
    endpoint: Endpoint, work: Path, case: str, tweets: Path, records: int, timeout_s: float, profile_to: Path | None = None
) -> CaseResult:
    """Spawn the case, wait until the endpoint counted `records` user records, stop it, measure it.
    With `profile_to`, py-spy samples the case from its first accepted record on, into that file."""
    result = CaseResult(case, records)
    dead_letters = work / f"{case}.dead-letter.jsonl"
    dead_letters.unlink(missing_ok=True)  # a repeat's or the profile run's count starts from nothing
    endpoint.reset(limits=False, expect=records)
    started = time.monotonic()  # CLOCK_MONOTONIC is system-wide: comparable with the endpoint's timestamps
    child = Child(case_argv(work, case, endpoint.url, tweets, records), _env_for(work, case), work, work / case)
    sampler: Sampler | None = None
    executable = pyspy() if profile_to is not None else None
    try:
        while True:
            stats = endpoint.wait(WAIT_SLICE_S)
            child.sample_rss()
            if executable and profile_to and sampler is None and stats["first_accepted_at"] is not None:
                sampler = Sampler(executable, child.process.pid, profile_to)
            if stats["reached_at"] is not None:
                result.ok, result.seconds = True, stats["reached_at"] - started
                break
            if child.exited():
                stats = endpoint.stats()
                if stats["reached_at"] is not None:
                    result.ok, result.seconds = True, stats["reached_at"] - started
                else:
                    result.error = f"exit {child.status} with {stats['user_records']:,} of {records:,}: {child.first_error()}"
                break
            if time.monotonic() - started > timeout_s:
                result.error = f"timed out after {timeout_s:g}s with {stats['user_records']:,} of {records:,} delivered"
                break
    finally:
        if sampler is not None:
            problem = sampler.stop()
            if problem:
                print(f"{case}: py-spy failed: {problem}", flush=True)
        child.stop()
    result.stats = endpoint.stats()
    if result.stats["first_accepted_at"] is not None:
        result.first_record_s = result.stats["first_accepted_at"] - started
    _measure(child, result)
    if result.ok and child.status not in (0, -signal.SIGTERM):
        result.ok, result.error = False, f"delivered everything but exited {child.status}: {child.first_error()}"
    result.error = result.error.replace(f"{work}/", "")  # the temp dir's name says nothing
    if dead_letters.exists():
        with dead_letters.open("rb") as lines:
            result.dead_lettered = sum(1 for _ in lines)
    return result


@dataclass
class ThrottledResult:
    case: str
    ok: bool = False
    error: str = ""
    window_s: int = THROTTLED_WINDOW_S
    records_pct: float = 0.0  # Kinesis records accepted in the window, % of 4 x 1,000/s
    bytes_pct: float = 0.0  # bytes accepted in the window, % of 4 x 1 MiB/s
    user_records_per_s: float = 0.0
    requests_per_s: float = 0.0  # PutRecords calls a second, whole run: a producer's own pace shows here
    throttled_per_record: float = 0.0  # throttled entries per accepted Kinesis record, whole run
    throttled_user_per_user: float = 0.0  # user records inside throttled entries per accepted user record
    cpu_s: float = 0.0
    peak_rss_mib: float = 0.0
    maxrss_mib: float = 0.0
    exit_code: int | None = None
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def capacity_pct(self) -> float:
        """Of the capacity that binds: the larger share, since the other limit cannot be reached first."""
        return max(self.records_pct, self.bytes_pct)


def run_throttled(endpoint: Endpoint, work: Path, case: str, tweets: Path, records: int) -> ThrottledResult:
    """Run the case against the per-shard limits for the warm-up plus the window, then stop it."""
    result = ThrottledResult(case)
    (work / f"{case}.dead-letter.jsonl").unlink(missing_ok=True)
    endpoint.reset(limits=True, expect=1)  # the first accepted record starts the clock
    child = Child(case_argv(work, case, endpoint.url, tweets, records), _env_for(work, case), work, work / f"throttled-{case}")
    try:
        started = time.monotonic()
        while True:
            stats = endpoint.wait(WAIT_SLICE_S)
            if stats["reached_at"] is not None:
                break
            if child.exited() or time.monotonic() - started > DEFAULT_CASE_TIMEOUT_S:
                result.error = f"no record accepted (exit {child.status}): {child.first_error()}".replace(f"{work}/", "")
                return result
        end_at = stats["reached_at"] + THROTTLED_WARMUP_S + THROTTLED_WINDOW_S + 0.5
        while time.monotonic() < end_at and not child.exited():
            child.sample_rss()
            time.sleep(min(WAIT_SLICE_S, max(0.0, end_at - time.monotonic())))
        stats = endpoint.stats()
    finally:
        child.stop()
    result.stats = stats
    _measure(child, result)
    result.error = result.error.replace(f"{work}/", "")
    seconds = stats["seconds"][THROTTLED_WARMUP_S : THROTTLED_WARMUP_S + THROTTLED_WINDOW_S]
    if len(seconds) < THROTTLED_WINDOW_S:
        result.error = f"ran out after {len(stats['seconds'])}s (exit {child.status}): {child.first_error()}"
        return result
    result.ok = True
    window = THROTTLED_WINDOW_S
    result.records_pct = 100 * sum(s[0] for s in seconds) / (window * SHARDS * SHARD_RECORDS_PER_S)
    result.bytes_pct = 100 * sum(s[2] for s in seconds) / (window * SHARDS * SHARD_BYTES_PER_S)
    result.user_records_per_s = sum(s[1] for s in seconds) / window
    elapsed = max(1e-9, stats["now"] - stats["first_accepted_at"])
    result.requests_per_s = sum(stats["requests"].get(op, 0) for op in ("PutRecords", "PutRecord")) / elapsed
    result.throttled_per_record = stats["throttled_entries"] / max(1, stats["kinesis_records"])
    result.throttled_user_per_user = stats["throttled_user_records"] / max(1, stats["user_records"])
    return result


def median_run(runs: list[CaseResult]) -> CaseResult:
    """The run with the median records/s, carrying every run's rate; a case with a failed run is failed."""
    failed = [r for r in runs if not r.ok]
    if failed:
        first = failed[0]
        if len(runs) > 1:
            first.error = f"{len(failed)} of {len(runs)} runs failed; first: {first.error}"
        return first
    ordered = sorted(runs, key=lambda r: r.rate)
    median = ordered[(len(ordered) - 1) // 2]
    median.rates = [r.rate for r in runs]
    return median


def _print_throughput(results: list[CaseResult]) -> None:
    for r in results:
        if r.ok:
            print(
                f"{r.case:18} {r.records:>8,} rec {r.rate:>10,.0f} rec/s {r.cpu_per_100k:6.2f} CPU s/100k "
                f"{r.peak_rss_mib:6.0f} MiB {r.stats['put_payload_units']:>9,} PUT units; first record after "
                f"{r.first_record_s:.2f} s; endpoint CPU {r.stats['endpoint_cpu_s']:.1f} s; requests {r.stats['requests']}",
                flush=True,
            )
        else:
            print(f"{r.case:18} FAILED: {r.error}", flush=True)


def _profiles(
    endpoint: Endpoint, work: Path, tweets: Path, records: int, timeout_s: float, results: list[CaseResult]
) -> dict[str, Any]:
    """Each daemon case that ran, once more with py-spy attached: where its CPU goes."""
    if pyspy() is None:
        print("--profile: py-spy is not installed (pip install py-spy); no profiles", flush=True)
        return {}
    profiles: dict[str, Any] = {}
    for result in results:
        if result.ok and result.case in DAEMON_SINK_EXTRA:
            raw = work / f"{result.case}.pyspy.txt"
            run_case(endpoint, work, result.case, tweets, records, timeout_s, profile_to=raw)
            if raw.exists():
                profiles[result.case] = summarise(raw)
                top = ", ".join(f"{name} {100 * share:.0f} %" for name, share in profiles[result.case]["areas"][:6])
                print(f"profile {result.case}: {top}", flush=True)
    return profiles


def _render(path: Path) -> int:
    """Write the section of a finished run again from its results.json (after a change of wording)."""
    report = json.loads(path.read_text(encoding="utf-8"))
    doc = REPO / "docs" / "benchmarks.md"
    if "throttled" in report:
        write_throttled(doc, report["command"], report, [ThrottledResult(**t) for t in report["throttled"]])
    else:
        write_throughput(doc, report["command"], report, [CaseResult(**r) for r in report["throughput"]])
    print(f"{doc}: section written from {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=DEFAULT_RECORDS, help="tweets per case (default 100,000)")
    parser.add_argument("--sample-records", type=int, default=AWS_SAMPLE_RECORDS, help="tweets for the aws-sample case")
    parser.add_argument("--cases", nargs="+", default=None, help="run only these cases")
    parser.add_argument("--timeout", type=float, default=DEFAULT_CASE_TIMEOUT_S, help="seconds a case may take")
    parser.add_argument("--repeat", type=int, default=1, help="run every case N times, round by round; report the median")
    parser.add_argument("--throttled", action="store_true", help="run against the per-shard limits instead")
    parser.add_argument("--write", action="store_true", help="write the table into docs/benchmarks.md")
    parser.add_argument(
        "--render", type=Path, default=None, metavar="RESULTS", help="only rewrite the section from a saved results.json"
    )
    parser.add_argument(
        "--daemon-repo", type=Path, default=None, help="run the daemon of this checkout (its .venv if it has one)"
    )
    parser.add_argument(
        "--profile", action="store_true", help="then run each daemon case again under py-spy (untimed) and summarise it"
    )
    args = parser.parse_args(argv)
    cases = args.cases or (THROTTLED_CASES if args.throttled else THROUGHPUT_CASES)
    unknown = set(cases) - set(THROTTLED_CASES if args.throttled else THROUGHPUT_CASES)
    if unknown:
        parser.error(f"unknown case(s) for this mode: {', '.join(sorted(unknown))}")

    if args.render is not None:
        return _render(args.render)
    global DAEMON
    if args.daemon_repo is not None:
        DAEMON = DaemonUnderTest.at(args.daemon_repo)
    WORK.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="kinesis-", dir=WORK))
    records = args.records
    if args.throttled:
        # Enough for the whole run at the record limit (the byte limit lets fewer ~1 KB tweets through).
        records = max(records, SHARDS * SHARD_RECORDS_PER_S * (THROTTLED_WARMUP_S + THROTTLED_WINDOW_S + THROTTLED_SLACK_S))
    if not args.throttled and any(case in DAEMON_SINK_EXTRA for case in cases):
        if daemon_knows(work, LIFTED_SHARD_LIMITS):
            DAEMON_SINK_COMMON.update(LIFTED_SHARD_LIMITS)
        else:
            print("the daemon under test has no sink.shard_limits: its cases run without that key", flush=True)
    tweets, average = tweets_file(work / "tweets.jsonl", records, spread_keys=args.throttled)
    shares = shard_shares(tweets, SHARDS)
    endpoint = Endpoint(SHARDS)
    print(f"endpoint {endpoint.url} (orjson: {endpoint.orjson}); {records:,} tweets of {average:,.0f} bytes on average; "
          f"work dir {work}", flush=True)  # fmt: skip
    command = "python -m bench.kinesis " + " ".join(a for a in (argv if argv is not None else sys.argv[1:]))
    report: dict[str, Any] = {
        "command": command,
        "records": records,
        "average_bytes": average,
        "orjson": endpoint.orjson,
        "shard_shares": shares,
        "spread_keys": args.throttled,
        "daemon": DAEMON.describe(),
        "daemon_sink_common": dict(DAEMON_SINK_COMMON),
        "cpus": os.cpu_count(),
        "load_before": os.getloadavg()[0],
    }
    print(f"records per shard: {', '.join(f'{100 * s:.1f} %' for s in shares)}", flush=True)
    throttled: list[ThrottledResult] = []
    results: list[CaseResult] = []
    try:
        if args.throttled:
            throttled = [run_throttled(endpoint, work, case, tweets, records) for case in cases]
            for t in throttled:
                print(json.dumps({k: v for k, v in asdict(t).items() if k != "stats"}), flush=True)
            report["throttled"] = [asdict(t) for t in throttled]
        else:
            runs: dict[str, list[CaseResult]] = {case: [] for case in cases}
            # Round by round, so a change in the machine's load falls on every case alike.
            for _ in range(args.repeat):
                for case in cases:
                    count = min(records, args.sample_records) if case == "aws-sample" else records
                    runs[case].append(run_case(endpoint, work, case, tweets, count, args.timeout))
                    _print_throughput(runs[case][-1:])
            results = [median_run(runs[case]) for case in cases]
            report["repeat"] = args.repeat
            report["throughput"] = [asdict(r) for r in results]
            if args.profile:
                report["profiles"] = _profiles(endpoint, work, tweets, records, args.timeout, results)
    finally:
        endpoint.stop()
    report["load_after"] = os.getloadavg()[0]
    if args.write and args.throttled:
        write_throttled(REPO / "docs" / "benchmarks.md", command, report, throttled)
    elif args.write:
        write_throughput(REPO / "docs" / "benchmarks.md", command, report, results)
    (work / "results.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    print(f"results: {work / 'results.json'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
