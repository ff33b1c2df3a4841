"""Producer throughput and memory: tweet-producer's pipeline against the AWS sample's one-put_record-per-tweet.

Both run in one invocation, against the same endpoints, on the same generated tweets:
- `moto`: the embedded stack's endpoint (moto's server), what a new user runs against;
- `fast`: a minimal local Kinesis endpoint that accepts every request at once, so the figures show the
  producer's own cost rather than the endpoint's.
Each case runs in its own process (clean peak RSS). Results go to stdout as JSON and, with --write, into
docs/benchmarks.md.

    .venv/bin/python -m bench.producer --records 20000 --write
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
STREAM = "bench-Stream"


def _client(endpoint: str) -> Any:
    from embedded.endpoint import embedded_client

    return embedded_client("kinesis", endpoint, "us-east-1")


def run_baseline(endpoint: str, path: Path) -> dict[str, float]:
    """The AWS sample producer's loop: one put_record per tweet, partition key = screen name, no batching."""
    client = _client(endpoint)
    lines = path.read_bytes().splitlines()
    started = time.perf_counter()
    for line in lines:
        tweet = json.loads(line)
        client.put_record(StreamName=STREAM, Data=line, PartitionKey=tweet["includes"]["users"][0]["username"])
    return {"records": len(lines), "seconds": time.perf_counter() - started}


def run_pipeline(endpoint: str, path: Path, buffer_records: int) -> dict[str, float]:
    """tweet-producer's path: file source -> bounded buffer -> batching worker -> kinesis sink."""
    from daemon.buffer import RecordBuffer
    from daemon.deadletter import DeadLetterFile
    from daemon.logs import configure_logging
    from daemon.pipeline import SinkWorker, SourceContext
    from daemon.telemetry import Telemetry
    from embedded.endpoint import EMBEDDED_ACCESS_KEY_ID, EMBEDDED_SECRET_ACCESS_KEY
    from sinks import SINK_TYPES, load_builtin_sinks
    from sinks.kinesis.config import KinesisSinkConfig
    from sources.file import FileSource, FileSourceConfig

    configure_logging("warning", "json")
    load_builtin_sinks()
    sink_cls = SINK_TYPES["kinesis"]
    sink_config = KinesisSinkConfig.model_validate(
        {"type": "kinesis", "stream": STREAM, "endpoint_url": endpoint, "region": "us-east-1"}
    ).with_static_credentials(EMBEDDED_ACCESS_KEY_ID, EMBEDDED_SECRET_ACCESS_KEY)  # as the daemon gives it the embedded stack
    telemetry = Telemetry("kinesis")
    buffer = RecordBuffer(buffer_records, 64 * 1024**2)
    dead = DeadLetterFile(path.with_suffix(".dead.jsonl"), "kinesis")
    sink = sink_cls(sink_config, telemetry)
    worker = SinkWorker(sink, buffer, telemetry, dead)
    stopping = threading.Event()
    expected = sum(1 for _ in path.open("rb"))
    started = time.perf_counter()
    worker.start()
    FileSource(FileSourceConfig(paths=[str(path)])).run(SourceContext("bench", buffer, telemetry, dead, stopping, sink))
    while telemetry.ledger.totals()["sent"] + telemetry.ledger.totals()["dead_lettered"] < expected:
        time.sleep(0.005)
    seconds = time.perf_counter() - started
    worker.finish(5.0)
    totals = telemetry.ledger.totals()
    assert totals["sent"] == expected, totals
    return {"records": expected, "seconds": seconds}


def _case_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("case", choices=["baseline", "pipeline"])
    parser.add_argument("endpoint")
    parser.add_argument("path", type=Path)
    parser.add_argument("--buffer-records", type=int, default=10_000)
    args = parser.parse_args(argv)
    if args.case == "baseline":
        result = run_baseline(args.endpoint, args.path)
    else:
        result = run_pipeline(args.endpoint, args.path, args.buffer_records)
    result["peak_rss_mib"] = _peak_rss_mib()
    print(json.dumps(result))


def _peak_rss_mib() -> float:
    """VmHWM: this process's own peak RSS (getrusage's maxrss survives exec, so it would show the parent's)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _run_case(*args: str) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-m", "bench.producer", "--case", *args], cwd=REPO, capture_output=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"case {args[0]} failed:\n{out.stderr.decode()[-3000:]}")
    result: dict[str, float] = json.loads(out.stdout.decode().strip().splitlines()[-1])
    return result


def _fresh_stream(endpoint: str) -> None:
    client = _client(endpoint)
    try:
        client.delete_stream(StreamName=STREAM, EnforceConsumerDeletion=True)
        time.sleep(0.2)
    except client.exceptions.ResourceNotFoundException:
        pass
    client.create_stream(StreamName=STREAM, ShardCount=4)
    client.get_waiter("stream_exists").wait(StreamName=STREAM, WaiterConfig={"Delay": 0.2, "MaxAttempts": 50})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--write", action="store_true", help="rewrite the producer section of docs/benchmarks.md")
    args = parser.parse_args()

    from bench.fast_kinesis import FastKinesis
    from cli.sample import write_sample
    from embedded.endpoint import EmbeddedEndpoint

    work = REPO / "bench" / ".work"
    work.mkdir(exist_ok=True)
    tweets = work / "tweets.jsonl"
    write_sample(tweets, args.records, seed=11)
    large = work / "tweets-large.jsonl"
    write_sample(large, args.records * 4, seed=11)

    moto = EmbeddedEndpoint("127.0.0.1", 0)
    moto.start()
    fast = FastKinesis().start()
    rows: list[dict[str, Any]] = []
    try:
        for name, url in (("moto", moto.url), ("fast", fast.url)):
            if name == "moto":
                _fresh_stream(url)
            base = _run_case("baseline", url, str(tweets))
            if name == "moto":
                _fresh_stream(url)
            ours = _run_case("pipeline", url, str(tweets))
            rows.append({"endpoint": name, "baseline": base, "pipeline": ours})
        # Memory stays bounded by the buffer, not by the input: 4x the records, about the same peak RSS.
        small_run = _run_case("pipeline", fast.url, str(tweets), "--buffer-records", "1000")
        large_run = _run_case("pipeline", fast.url, str(large), "--buffer-records", "1000")
    finally:
        fast.stop()
        moto.stop()
    report = {"records": args.records, "throughput": rows, "memory": {"small": small_run, "large": large_run}}
    print(json.dumps(report, indent=1))
    if args.write:
        _write_markdown(report)


def _rate(result: dict[str, float]) -> float:
    return result["records"] / result["seconds"]


def _write_markdown(report: dict[str, Any]) -> None:
    lines = [
        "## Producer: pipeline vs the AWS sample's put_record loop",
        "",
        f"`python -m bench.producer --records {report['records']} --write` — both in one run, same tweets, same endpoint,",
        "each case in its own process. 2-core machine.",
        "",
        "| endpoint | AWS sample (records/s) | tweet-producer (records/s) | ratio | peak RSS sample / ours (MiB) |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in report["throughput"]:
        base, ours = row["baseline"], row["pipeline"]
        lines.append(
            f"| {row['endpoint']} | {_rate(base):,.0f} | {_rate(ours):,.0f} | {_rate(ours) / _rate(base):.1f}× "
            f"| {base['peak_rss_mib']:.0f} / {ours['peak_rss_mib']:.0f} |"
        )
    mem = report["memory"]
    lines += [
        "",
        f"Bounded memory (buffer 1,000 records, fast endpoint): {mem['small']['records']:,} records → "
        f"{mem['small']['peak_rss_mib']:.0f} MiB peak RSS; {mem['large']['records']:,} records → "
        f"{mem['large']['peak_rss_mib']:.0f} MiB (ratio {mem['large']['peak_rss_mib'] / mem['small']['peak_rss_mib']:.2f} "
        "for 4× the input: memory follows the buffer, not the input).",
        "",
    ]
    _replace_section(REPO / "docs" / "benchmarks.md", "## Producer:", "\n".join(lines))


def _replace_section(path: Path, heading: str, text: str) -> None:
    current = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n\n"
    start = current.find(heading)
    if start == -1:
        current = current.rstrip("\n") + "\n\n" + text
    else:
        end = current.find("\n## ", start + 1)
        current = current[:start] + text.rstrip("\n") + "\n" + (current[end:] if end != -1 else "")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(current, encoding="utf-8")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--case":
        _case_main(sys.argv[2:])
    else:
        main()
