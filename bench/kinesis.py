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
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.kinesis_cases import REGION, STREAM, shard_shares, tweets_file
from bench.kinesis_profile import Sampler, pyspy, summarise
from bench.kinesis_report import write_throttled, write_throughput

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "bench" / ".work"
SHARDS = 4
DEFAULT_RECORDS = 100_000
# The AWS sample makes one HTTP request per record: a subset keeps its case under a minute.
AWS_SAMPLE_RECORDS = 10_000
# A case that has not delivered everything by then failed (a stuck producer must not hang the run).
DEFAULT_CASE_TIMEOUT_S = 300.0
# How long the driver blocks in one /wait call before it checks whether the child is still alive.
WAIT_SLICE_S = 0.25
# After SIGTERM: time to shut down before SIGKILL (the daemon's own flush deadline is shorter).
STOP_TIMEOUT_S = 20.0
STOP_POLL_S = 0.02
ENDPOINT_START_TIMEOUT_S = 20.0
CONTROL_TIMEOUT_S = 30.0
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


class Endpoint:
    """The null Kinesis endpoint's process and its control API."""

    def __init__(self, shards: int) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.null_kinesis", "--shards", str(shards)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        assert self.process.stdout is not None
        started = time.monotonic()
        line = self.process.stdout.readline()
        if not line or time.monotonic() - started > ENDPOINT_START_TIMEOUT_S:
            self.stop()
            raise RuntimeError("the null Kinesis endpoint did not start (no URL on its first line)")
        hello = json.loads(line)
        self.url: str = hello["url"]
        self.orjson: bool = hello["orjson"]

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None, timeout: float = CONTROL_TIMEOUT_S) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method)  # noqa: S310 - our own 127.0.0.1 URL
        try:
            with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310
                return json.loads(answer.read())
        except OSError as exc:  # URLError, refused, reset, timed out
            state = f"exited {self.process.poll()}" if self.process.poll() is not None else "still running"
            raise RuntimeError(f"the null Kinesis endpoint did not answer {method} {path} ({state}): {exc}") from exc

    def reset(self, *, limits: bool, expect: int | None) -> None:
        self._call("POST", "/reset", {"limits": limits, "expect": expect})

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/stats")
        return result

    def wait(self, seconds: float) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", f"/wait?timeout={seconds}", timeout=seconds + CONTROL_TIMEOUT_S)
        return result

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class Child:
    """One case's process, reaped with os.wait4 for its CPU time and peak RSS."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path, log_stem: Path) -> None:
        self.stdout_path = log_stem.with_suffix(".stdout")
        self.stderr_path = log_stem.with_suffix(".stderr")
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=err)
        self.status: int | None = None
        self.rusage: Any = None
        self.peak_rss_kib = 0

    def sample_rss(self) -> None:
        """Keep the child's VmHWM: its own peak RSS since exec. wait4's ru_maxrss is no use for that: exec
        records the parent's high-water mark into the child's (a 300 MiB driver shows as a 300 MiB child)."""
        if self.status is not None:
            return
        try:
            status = Path(f"/proc/{self.process.pid}/status").read_text()
        except OSError:
            return
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                self.peak_rss_kib = max(self.peak_rss_kib, int(line.split()[1]))

    def exited(self) -> bool:
        """Reap the child if it ended (without blocking)."""
        if self.status is None:
            pid, status, rusage = os.wait4(self.process.pid, os.WNOHANG)
            if pid:
                self._reaped(status, rusage)
        return self.status is not None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not end within STOP_TIMEOUT_S; reaped either way."""
        self.sample_rss()
        if self.exited():
            return
        self.process.send_signal(signal.SIGTERM)
        give_up = time.monotonic() + STOP_TIMEOUT_S
        while not self.exited():
            if time.monotonic() > give_up:
                self.process.kill()
                _, status, rusage = os.wait4(self.process.pid, 0)
                self._reaped(status, rusage)
                break
            time.sleep(STOP_POLL_S)

    def _reaped(self, status: int, rusage: Any) -> None:
        self.status = os.waitstatus_to_exitcode(status)
        self.rusage = rusage
        self.process.returncode = self.status  # reaped here: Popen must not wait for it again

    def first_error(self) -> str:
        """The first line that says what went wrong: stderr's, else the first error in the JSON logs."""
        for line in self.stderr_path.read_text(errors="replace").splitlines():
            if line.strip():
                return line.strip()
        for line in self.stdout_path.read_text(errors="replace").splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and event.get("level") in ("error", "critical"):
                return line.strip()
        return "(no output)"


@dataclass(frozen=True)
class DaemonUnderTest:
    """The checkout whose daemon the daemon cases run (default: this one), and the interpreter to run it."""

    repo: Path = REPO
    python: str = sys.executable

    @classmethod
    def at(cls, repo: Path) -> DaemonUnderTest:
        venv = repo / ".venv" / "bin" / "python"
        return cls(repo.resolve(), str(venv) if venv.exists() else sys.executable)

    def describe(self) -> str:
        """`<repo> at <commit>` (with `+changes` when the daemon's code in the work tree differs from it)."""
        try:
            # The last commit that changed the daemon's code: the same daemon gives the same name.
            commit = self._git("log", "-1", "--format=%h", "--", *DAEMON_CODE)
            # Only the daemon's own code counts: a bench run rewrites docs/ and the bench may be edited.
            dirty = self._git("status", "--porcelain", "--untracked-files=no", "--", *DAEMON_CODE)
        except (OSError, subprocess.CalledProcessError):
            return str(self.repo)
        where = "this checkout" if self.repo == REPO else str(self.repo)
        return f"{where}, daemon code as of {commit}{' +changes' if dirty else ''}"

    def _git(self, *args: str) -> str:
        command = ["git", "-C", str(self.repo), *args]
        return subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()


DAEMON_CODE = ("cli", "daemon", "sinks", "sources", "embedded", "infra", "processor", "pyproject.toml")
# The daemon cases' checkout: one per run, chosen on the command line (--daemon-repo).
DAEMON = DaemonUnderTest()
# Added to every daemon case's sink config in this run (throughput mode: the lifted per-shard limits, when the
# daemon under test has them).
DAEMON_SINK_COMMON: dict[str, Any] = {}


def case_env(work: Path, daemon: DaemonUnderTest = DAEMON) -> dict[str, str]:
    """The environment of every case: dummy static keys, no profile, no instance metadata, repo on the path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ACCESS_KEY_ID="bench-access-key",
        AWS_SECRET_ACCESS_KEY="bench-secret-key",  # noqa: S106 - a dummy for the local endpoint
        AWS_DEFAULT_REGION=REGION,
        AWS_CONFIG_FILE=str(work / "no-aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(work / "no-aws-credentials"),
        AWS_EC2_METADATA_DISABLED="true",
        PYTHONPATH=str(daemon.repo),
        # Another checkout's daemon must not leave bytecode in it.
        PYTHONDONTWRITEBYTECODE="1",
    )
    return env


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
    dead_letters = work / f"{case}.dead-letter.jsonl"
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
