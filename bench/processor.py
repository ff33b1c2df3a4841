"""Processor throughput and end-to-end latency on the embedded stack.

1. Items/s: a 10,000-record stream drained by the event-source runner into the table, with the processor
   (batched, parallel BatchWriteItem) against a baseline function writing one put_item per record — same
   endpoint, same runner settings, same tweets, one run.
2. Latency: the daemon's pipeline (bounded buffer, kinesis sink) fed at 500 records/s by a source that
   stamps each record when it reads it; the time until the processor has written its item, p50/p99.

    .venv/bin/python -m bench.processor --write
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import threading
import time
from dataclasses import replace
from typing import Any

from bench.producer import REPO, _replace_section

RECORDS = 10_000
LATENCY_RATE = 500
LATENCY_SECONDS = 20


def _put_all(kinesis: Any, stream: str, lines: list[bytes]) -> None:
    for start in range(0, len(lines), 500):
        chunk = lines[start : start + 500]
        kinesis.put_records(
            StreamName=stream,
            Records=[{"Data": line, "PartitionKey": json.loads(line)["data"]["author_id"]} for line in chunk],
        )


def _baseline_function(table: str, dynamodb: Any) -> Any:
    """One put_item per record, the same decoding and mapping as the processor."""
    from datetime import UTC, datetime

    from processor.items import build_item
    from processor.mappings import GenericPaths, map_event

    generic = GenericPaths.from_environ(os.environ)

    def handler(event: dict[str, Any], _context: Any) -> None:
        for record in event["Records"]:
            kinesis = record["kinesis"]
            payload = json.loads(base64.b64decode(kinesis["data"]).decode("utf-8"))
            arrival = datetime.fromtimestamp(kinesis["approximateArrivalTimestamp"], UTC)
            dynamodb.put_item(TableName=table, Item=build_item(map_event(payload, generic), arrival, None, 0))

    return handler


def _processor(stack: Any, resources: Any, endpoint_url: str) -> Any:
    """The processor with the settings and clients the embedded stack gives it."""
    from embedded.endpoint import embedded_client
    from processor.clients import DYNAMODB_CONFIG, SQS_CONFIG
    from processor.config import ProcessorSettings
    from processor.handler import make_handler

    settings = ProcessorSettings.from_environ(stack.processor_environment(resources.dead_letter_queue_url))
    return make_handler(
        settings,
        dynamodb=embedded_client("dynamodb", endpoint_url, "us-east-1", DYNAMODB_CONFIG),
        sqs=embedded_client("sqs", endpoint_url, "us-east-1", SQS_CONFIG),
    )


def _drain(stack: Any, kinesis: Any, resources: Any, function: Any, count: int) -> float:
    from embedded.event_source_mapping.poller import EventSourcePoller

    runner = EventSourcePoller(
        kinesis=kinesis,
        stream_name=resources.stream_name,
        region="us-east-1",
        function=function,
        settings=stack.event_source_mapping,
        on_failure=lambda failure: print("on_failure", failure),
        function_arn=resources.function_arn,
    )
    started = time.perf_counter()
    runner.start()
    while runner.stats.records_succeeded < count:
        time.sleep(0.01)
    seconds = time.perf_counter() - started
    runner.stop(5)
    return seconds


def _count_items(dynamodb: Any, table: str) -> int:
    count, kwargs = 0, {"TableName": table, "Select": "COUNT"}
    while True:
        page = dynamodb.scan(**kwargs)  # a scan page stops at 1 MB: follow LastEvaluatedKey
        count += page["Count"]
        if "LastEvaluatedKey" not in page:
            return count
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def throughput(endpoint: Any) -> dict[str, float]:
    from cli.sample import sample_lines
    from embedded.endpoint import embedded_client
    from embedded.resources import create_resources
    from infra.settings import StackSettings

    lines = sample_lines(RECORDS, seed=5)
    kinesis, dynamodb = (
        embedded_client("kinesis", endpoint.url, "us-east-1"),
        embedded_client("dynamodb", endpoint.url, "us-east-1"),
    )
    results: dict[str, float] = {}
    for name in ("bench-baseline", "bench-processor"):
        stack = StackSettings(name=name)
        resources = create_resources(
            stack, kinesis=kinesis, dynamodb=dynamodb, sqs=embedded_client("sqs", endpoint.url, "us-east-1"), region="us-east-1"
        )
        _put_all(kinesis, resources.stream_name, lines)
        if name == "bench-processor":
            function = _processor(stack, resources, endpoint.url)
        else:
            function = _baseline_function(resources.table_name, dynamodb)
        results[name] = _drain(stack, kinesis, resources, function, RECORDS)
        items = _count_items(dynamodb, resources.table_name)
        assert items == RECORDS, (name, items)
    return {"records": RECORDS, "baseline_s": results["bench-baseline"], "processor_s": results["bench-processor"]}


def latency(endpoint: Any) -> dict[str, float]:
    from cli.sample import sample_lines
    from daemon.buffer import RecordBuffer
    from daemon.deadletter import DeadLetterFile
    from daemon.pipeline import SinkWorker, SourceContext
    from daemon.telemetry import Telemetry
    from embedded.endpoint import EMBEDDED_ACCESS_KEY_ID, EMBEDDED_SECRET_ACCESS_KEY, embedded_client
    from embedded.event_source_mapping.poller import EventSourcePoller
    from embedded.resources import create_resources
    from infra.settings import StackSettings
    from sinks.kinesis import KinesisSink, KinesisSinkConfig

    stack = StackSettings(name="bench-latency")
    kinesis = embedded_client("kinesis", endpoint.url, "us-east-1")
    resources = create_resources(
        stack,
        kinesis=kinesis,
        dynamodb=embedded_client("dynamodb", endpoint.url, "us-east-1"),
        sqs=embedded_client("sqs", endpoint.url, "us-east-1"),
        region="us-east-1",
    )
    handler = _processor(stack, resources, endpoint.url)
    latencies: list[float] = []
    lock = threading.Lock()

    def timed_handler(event: dict[str, Any], context: Any) -> Any:
        response = handler(event, context)
        done = time.time()
        failed = {f["itemIdentifier"] for f in (response or {}).get("batchItemFailures", [])}
        stamps = [
            json.loads(base64.b64decode(r["kinesis"]["data"]))["bench_read_at"]
            for r in event["Records"]
            if r["kinesis"]["sequenceNumber"] not in failed
        ]
        with lock:
            latencies.extend(done - stamp for stamp in stamps)
        return response

    runner = EventSourcePoller(
        kinesis=kinesis,
        stream_name=resources.stream_name,
        region="us-east-1",
        function=timed_handler,
        settings=replace(stack.event_source_mapping, starting_position="LATEST"),
        on_failure=print,
        function_arn=resources.function_arn,
    )
    runner.start()
    telemetry = Telemetry("kinesis")
    buffer = RecordBuffer(10_000, 64 * 1024**2)
    dead = DeadLetterFile(REPO / "bench" / ".work" / "latency.dead.jsonl", "kinesis")
    sink_config = KinesisSinkConfig(stream=resources.stream_name, endpoint_url=endpoint.url, region="us-east-1")
    sink = KinesisSink(sink_config.with_static_credentials(EMBEDDED_ACCESS_KEY_ID, EMBEDDED_SECRET_ACCESS_KEY), telemetry)
    worker = SinkWorker(sink, buffer, telemetry, dead)
    worker.start()
    stopping = threading.Event()
    ctx = SourceContext("bench", buffer, telemetry, dead, stopping, sink)
    total = LATENCY_RATE * LATENCY_SECONDS
    tweets = [json.loads(line) for line in sample_lines(total, seed=9)]
    started = time.monotonic()
    for index, tweet in enumerate(tweets):
        wait = started + index / LATENCY_RATE - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        tweet["bench_read_at"] = time.time()  # read time, as a source would see it
        ctx.emit(json.dumps(tweet, ensure_ascii=False).encode(), tweet, f"bench:{index}")
    give_up = time.monotonic() + 60
    while len(latencies) < total and time.monotonic() < give_up:
        time.sleep(0.05)
    worker.finish(5)
    runner.stop(5)
    assert len(latencies) == total, (len(latencies), total)
    ordered = sorted(latencies)
    return {
        "records": total,
        "rate": LATENCY_RATE,
        "p50_s": statistics.median(ordered),
        "p99_s": ordered[int(len(ordered) * 0.99) - 1],
        "max_s": ordered[-1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    from daemon.logs import configure_logging
    from embedded.endpoint import EmbeddedEndpoint

    configure_logging("warning", "json")
    (REPO / "bench" / ".work").mkdir(exist_ok=True)
    endpoint = EmbeddedEndpoint("127.0.0.1", 0)
    endpoint.start()
    try:
        report = {"throughput": throughput(endpoint), "latency": latency(endpoint)}
    finally:
        endpoint.stop()
    print(json.dumps(report, indent=1))
    if args.write:
        t, lat = report["throughput"], report["latency"]
        base_rate, ours_rate = t["records"] / t["baseline_s"], t["records"] / t["processor_s"]
        text = "\n".join(
            [
                "## Processor: batched writes vs one put_item per record; end-to-end latency",
                "",
                "`python -m bench.processor --write` — one run, embedded stack (moto), 2-core machine.",
                "",
                f"Draining a {t['records']:,}-record stream through the event-source runner (batch size 100):",
                "",
                "| function | seconds | items/s | ratio |",
                "|---|---:|---:|---:|",
                f"| baseline: one put_item per record | {t['baseline_s']:.1f} | {base_rate:,.0f} | 1.0× |",
                f"| processor: BatchWriteItem ×25, chunks in parallel | {t['processor_s']:.1f} | {ours_rate:,.0f} "
                f"| {ours_rate / base_rate:.1f}× |",
                "",
                f"End-to-end latency at {lat['rate']} records/s for {lat['records']:,} records (source read → item written):"
                f" p50 {lat['p50_s'] * 1000:.0f} ms, p99 {lat['p99_s'] * 1000:.0f} ms, max {lat['max_s'] * 1000:.0f} ms.",
                "",
            ]
        )
        _replace_section(REPO / "docs" / "benchmarks.md", "## Processor:", text)


if __name__ == "__main__":
    main()
