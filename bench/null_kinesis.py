"""A fast multi-shard Kinesis endpoint for the benchmark, meant to run in a process of its own.

It answers DescribeStreamSummary, ListShards, PutRecords and PutRecord the way Kinesis does (JSON 1.1 over
HTTP keep-alive), routes every entry by its ExplicitHashKey or MD5(partition key) to one of N shards of equal
hash-key ranges and answers that shard's id with a 56-digit sequence number. It stores nothing: it counts
what it accepted (Kinesis records, user records, bytes, PUT payload units) and what it throttled. For a record
in the KPL aggregated format it counts the user records (field 3 of the protobuf) without deaggregating.

With limits on, each shard takes at most `records_per_second` records and `bytes_per_second` bytes (data +
partition key) over any rolling second; entries beyond are refused with ProvisionedThroughputExceededException
inside a 200 answer, as Kinesis does.

Control API for the bench driver (same port; Kinesis calls are POSTs to `/` with X-Amz-Target):
- `GET /stats`: the counters as JSON;
- `POST /reset` with an optional JSON body `{"limits": bool, "expect": N}`: zero the counters, switch the
  limits, and mark the moment `expect` user records have been accepted;
- `GET /wait?timeout=S`: block up to S seconds until that moment; answers the stats.

    python -m bench.null_kinesis --shards 4 --port 0     # prints {"url": ...} on its first line
"""

from __future__ import annotations

import argparse
import base64
import binascii
import bisect
import hashlib
import json
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from bench.kpl_count import KPL_MAGIC_B64, count_kpl_records, put_payload_units

try:  # orjson parses a 500-entry body several times faster; the endpoint must stay faster than the producers
    import orjson

    _loads: Callable[[bytes], Any] = orjson.loads
    _dumps: Callable[[Any], bytes] = orjson.dumps
except ImportError:  # pragma: no cover - depends on the environment
    _loads = json.loads

    def _dumps(value: Any) -> bytes:
        return json.dumps(value, separators=(",", ":")).encode()


DEFAULT_SHARDS = 4
STREAM = "bench-Stream"
REGION = "us-east-1"
ACCOUNT = "123456789012"
MAX_HASH_KEY = 2**128 - 1
# Kinesis's write limits per shard (API reference), enforced only with limits on.
SHARD_RECORDS_PER_S = 1000
SHARD_BYTES_PER_S = 1024 * 1024
LIMIT_WINDOW_S = 1.0
_MAX_CACHED_ROUTES = 500_000
THROTTLE_CODE = "ProvisionedThroughputExceededException"
CONTENT_TYPE = "application/x-amz-json-1.1"


class Shards:
    """N open shards splitting the hash-key space evenly, with rolling-second write windows."""

    def __init__(self, count: int) -> None:
        step = (MAX_HASH_KEY + 1) // count
        self.starts = [i * step for i in range(count)]
        self.ids = [f"shardId-{i:012d}" for i in range(count)]
        self.ends = [*(s - 1 for s in self.starts[1:]), MAX_HASH_KEY]
        self.sequence = [0] * count
        # 35 digits naming the shard, then a 21-digit counter: formatting a small int is cheap, a 56-digit one not.
        self.sequence_prefix = [f"49{i:033d}" for i in range(count)]
        # Partition key -> shard: the same authors come back all the time; bounded for keys that never repeat.
        self.routes: dict[str, int] = {}
        # Per shard: (time, records, bytes) of what each request put there, and their running sums.
        self.window: list[deque[tuple[float, int, int]]] = [deque() for _ in range(count)]
        self.window_records = [0] * count
        self.window_bytes = [0] * count

    def route(self, partition_key: str, explicit_hash_key: str | None) -> int:
        if explicit_hash_key is not None:
            return bisect.bisect_right(self.starts, int(explicit_hash_key)) - 1
        shard = self.routes.get(partition_key)
        if shard is None:
            hash_key = int.from_bytes(hashlib.md5(partition_key.encode(), usedforsecurity=False).digest(), "big")
            shard = bisect.bisect_right(self.starts, hash_key) - 1
            if len(self.routes) >= _MAX_CACHED_ROUTES:
                self.routes.clear()
            self.routes[partition_key] = shard
        return shard

    def expire(self, now: float) -> None:
        for index, window in enumerate(self.window):
            while window and window[0][0] <= now - LIMIT_WINDOW_S:
                _, records, size = window.popleft()
                self.window_records[index] -= records
                self.window_bytes[index] -= size

    def next_sequence(self, shard: int) -> str:
        self.sequence[shard] += 1
        return f"{self.sequence_prefix[shard]}{self.sequence[shard]:021d}"


class Stats:
    """What the endpoint accepted and refused since the last reset (guarded by NullKinesis.lock)."""

    def __init__(self, shards: int) -> None:
        self.requests: dict[str, int] = {}
        self.kinesis_records = 0
        self.user_records = 0
        self.aggregates = 0
        self.bytes = 0
        self.put_payload_units = 0
        self.throttled_entries = 0
        self.throttled_user_records = 0
        self.per_shard = [0] * shards
        self.first_accepted_at: float | None = None
        self.last_accepted_at: float | None = None
        self.reached_at: float | None = None
        # Accepted per whole second since the first accepted entry: [kinesis records, user records, bytes].
        self.seconds: list[list[int]] = []

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": dict(self.requests),
            "kinesis_records": self.kinesis_records,
            "user_records": self.user_records,
            "aggregates": self.aggregates,
            "bytes": self.bytes,
            "put_payload_units": self.put_payload_units,
            "throttled_entries": self.throttled_entries,
            "throttled_user_records": self.throttled_user_records,
            "per_shard": list(self.per_shard),
            "first_accepted_at": self.first_accepted_at,
            "last_accepted_at": self.last_accepted_at,
            "reached_at": self.reached_at,
            "seconds": [list(s) for s in self.seconds],
        }


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A producer that exits drops its keep-alive connections: not worth a traceback on the bench's terminal.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class NullKinesis:
    """The endpoint's state; `serve()` runs the HTTP server on 127.0.0.1 (port 0 = ephemeral)."""

    def __init__(
        self, shards: int = DEFAULT_SHARDS, *, limits: bool = False, port: int = 0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.shard_count = shards
        # CLOCK_MONOTONIC is system-wide on Linux: the driver compares these times with its own.
        self.clock = clock
        self.limits = limits
        self.lock = threading.Lock()
        self.reached = threading.Event()
        self.expect: int | None = None
        self.shards = Shards(shards)
        self.stats = Stats(shards)
        self.cpu_at_reset = time.process_time()
        self.server = _Server(("127.0.0.1", port), _handler(self))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def reset(self, limits: bool | None, expect: int | None) -> None:
        with self.lock:
            if limits is not None:
                self.limits = limits
            self.expect = expect
            self.reached.clear()
            self.shards = Shards(self.shard_count)
            self.stats = Stats(self.shard_count)
            self.cpu_at_reset = time.process_time()

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            answer = self.stats.as_dict()
        # The endpoint's own CPU since the reset: close to the wall time would mean it, not the producer, bounds a case.
        answer.update(
            shards=self.shard_count,
            limits=self.limits,
            expect=self.expect,
            now=self.clock(),
            endpoint_cpu_s=time.process_time() - self.cpu_at_reset,
        )
        return answer

    def put(self, entries: list[dict[str, Any]]) -> list[dict[str, str]]:
        """Accept or throttle each entry; the answer's entries in request order."""
        results: list[dict[str, str]] = []
        with self.lock:
            now = self.clock()
            shards, stats, limits = self.shards, self.stats, self.limits
            if limits:
                shards.expire(now)
            taken_records = [0] * self.shard_count
            taken_bytes = [0] * self.shard_count
            accepted = users = size_total = units = aggregates = 0
            route, routes, ids = shards.route, shards.routes, shards.ids
            prefixes, sequence = shards.sequence_prefix, shards.sequence
            # The per-entry work is inlined (routing by cached key, base64 length, sequence number): at the
            # rates the bench measures, this loop is most of the endpoint's CPU.
            for entry in entries:
                key = entry["PartitionKey"]
                data = entry["Data"]
                explicit = entry.get("ExplicitHashKey")
                shard = routes.get(key) if explicit is None else None
                if shard is None:
                    shard = route(key, explicit)
                # Decoded length from the base64 text's, without decoding it.
                size = len(data) // 4 * 3 - (2 if data.endswith("==") else 1 if data.endswith("=") else 0) + len(key.encode())
                counted = None
                if data.startswith(KPL_MAGIC_B64):
                    try:
                        counted = count_kpl_records(base64.b64decode(data))
                    except (binascii.Error, ValueError):
                        counted = None
                members = 1 if counted is None else counted
                if limits and (
                    shards.window_records[shard] + taken_records[shard] + 1 > SHARD_RECORDS_PER_S
                    or shards.window_bytes[shard] + taken_bytes[shard] + size > SHARD_BYTES_PER_S
                ):
                    stats.throttled_entries += 1
                    stats.throttled_user_records += members
                    results.append(
                        {
                            "ErrorCode": THROTTLE_CODE,
                            "ErrorMessage": f"Rate exceeded for shard {ids[shard]} in stream {STREAM} under account {ACCOUNT}.",
                        }
                    )
                    continue
                taken_records[shard] += 1
                taken_bytes[shard] += size
                users += members
                size_total += size
                units += put_payload_units(size)
                aggregates += counted is not None
                sequence[shard] += 1
                results.append({"SequenceNumber": f"{prefixes[shard]}{sequence[shard]:021d}", "ShardId": ids[shard]})
            for shard in range(self.shard_count):
                if taken_records[shard]:
                    accepted += taken_records[shard]
                    stats.per_shard[shard] += taken_records[shard]
                    if limits:
                        shards.window[shard].append((now, taken_records[shard], taken_bytes[shard]))
                        shards.window_records[shard] += taken_records[shard]
                        shards.window_bytes[shard] += taken_bytes[shard]
            stats.aggregates += aggregates
            if accepted:
                self._count(now, accepted, users, size_total, units)
        return results

    def _count(self, now: float, accepted: int, users: int, size: int, units: int) -> None:
        stats = self.stats
        if stats.first_accepted_at is None:
            stats.first_accepted_at = now
        stats.last_accepted_at = now
        stats.kinesis_records += accepted
        stats.user_records += users
        stats.bytes += size
        stats.put_payload_units += units
        second = int(now - stats.first_accepted_at)
        while len(stats.seconds) <= second:
            stats.seconds.append([0, 0, 0])
        bucket = stats.seconds[second]
        bucket[0] += accepted
        bucket[1] += users
        bucket[2] += size
        if self.expect is not None and stats.reached_at is None and stats.user_records >= self.expect:
            stats.reached_at = now
            self.reached.set()

    def describe(self) -> dict[str, Any]:
        return {
            "StreamDescriptionSummary": {
                "StreamName": STREAM,
                "StreamARN": f"arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/{STREAM}",
                "StreamStatus": "ACTIVE",
                "StreamModeDetails": {"StreamMode": "PROVISIONED"},
                "RetentionPeriodHours": 24,
                "StreamCreationTimestamp": 1764590400.0,
                "EnhancedMonitoring": [{"ShardLevelMetrics": []}],
                "EncryptionType": "NONE",
                "OpenShardCount": self.shard_count,
                "ConsumerCount": 0,
            }
        }

    def list_shards(self) -> dict[str, Any]:
        shards = self.shards
        return {
            "Shards": [
                {
                    "ShardId": shards.ids[i],
                    "HashKeyRange": {"StartingHashKey": str(shards.starts[i]), "EndingHashKey": str(shards.ends[i])},
                    # 56 digits, as long as Kinesis's, so clients parse answers of a realistic size.
                    "SequenceNumberRange": {"StartingSequenceNumber": f"{shards.sequence_prefix[i]}{0:021d}"},
                }
                for i in range(self.shard_count)
            ]
        }

    def serve(self, poll_interval: float = 0.5) -> None:
        self.server.serve_forever(poll_interval)


def _handler(owner: NullKinesis) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in separate writes: without this, delayed ACKs add ~40 ms a request.
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
            return

        def _answer(self, status: int, value: Any) -> None:
            data = _dumps(value)
            self.send_response(status)
            self.send_header("Content-Type", CONTENT_TYPE)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> bytes:
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                # No producer here is known to stream a body, but a client that does must not hang the bench.
                parts = []
                while size := int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16):
                    parts.append(self.rfile.read(size))
                    self.rfile.readline()
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(parts)
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            if url.path == "/stats":
                self._answer(200, owner.snapshot())
            elif url.path == "/wait":
                timeout = float(parse_qs(url.query).get("timeout", ["1"])[0])
                owner.reached.wait(timeout)
                self._answer(200, owner.snapshot())
            else:
                self._answer(404, {"message": f"no such path {url.path}"})

        def do_POST(self) -> None:
            raw = self._body()
            target = self.headers.get("X-Amz-Target")
            if target is None:
                if self.path == "/reset":
                    options = json.loads(raw or b"{}")
                    owner.reset(options.get("limits"), options.get("expect"))
                    self._answer(200, {"reset": True})
                else:
                    self._answer(404, {"message": f"no such path {self.path}"})
                return
            operation = target.rsplit(".", 1)[-1]
            with owner.lock:
                requests = owner.stats.requests
                requests[operation] = requests.get(operation, 0) + 1
            try:
                body = _loads(raw)
            except ValueError:
                self._answer(400, {"__type": "SerializationException", "message": "the body is not JSON"})
                return
            if operation == "PutRecords":
                results = owner.put(body["Records"])
                failed = sum("ErrorCode" in r for r in results)
                self._answer(200, {"FailedRecordCount": failed, "Records": results})
            elif operation == "PutRecord":
                (result,) = owner.put([body])
                if "ErrorCode" in result:
                    self._answer(400, {"__type": result["ErrorCode"], "message": result["ErrorMessage"]})
                else:
                    self._answer(200, result)
            elif operation == "DescribeStreamSummary":
                self._answer(200, owner.describe())
            elif operation == "ListShards":
                self._answer(200, owner.list_shards())
            else:
                self._answer(400, {"__type": "UnknownOperationException", "message": f"{operation} is not served"})

    return Handler


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=DEFAULT_SHARDS)
    parser.add_argument("--port", type=int, default=0, help="0 = an ephemeral port")
    parser.add_argument("--limits", action="store_true", help="enforce the per-shard write limits from the start")
    args = parser.parse_args(argv)
    endpoint = NullKinesis(args.shards, limits=args.limits, port=args.port)
    # The driver reads the URL from the first line; flushed at once, since stdout is a pipe.
    print(json.dumps({"url": endpoint.url, "orjson": _loads is not json.loads}), flush=True)
    try:
        endpoint.serve()
    except KeyboardInterrupt:
        pass
    finally:
        endpoint.server.server_close()


if __name__ == "__main__":
    main()
