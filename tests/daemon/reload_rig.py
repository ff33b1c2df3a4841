"""Helpers of the hot-reload tests (issue 17): daemon configs of several paced file sources, rewriting the
config file a running daemon was started with, and reading outcomes where they land (the fake stream, the
checkpoint files, the reload metrics, the final totals)."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conftest import DaemonProcess, poll_until
from tests.daemon.test_kinesis_delivery import AUTHORS, FAST_RETRY, LAND_TIMEOUT_S
from tests.fake_kinesis import FakeKinesis

RELOAD_RESULTS = ("success", "invalid", "restart_required", "failed")
RELOADS = "tweet_producer_config_reloads_total"
LAST_RELOAD_AT = "tweet_producer_config_last_reload_timestamp_seconds"
LAST_RELOAD_OK = "tweet_producer_config_last_reload_successful"
# Padding of each line's text: records of realistic size without making the files large.
LINE_PAD = 100


@dataclass(frozen=True)
class FileSpec:
    """One paced file source of a test config: its name, its file and its records/s (0: unpaced)."""

    name: str
    path: Path
    rate: float


def source_lines(tag: str, count: int) -> list[bytes]:
    """`count` distinct X v2-shaped lines whose ids and text carry `tag`, so no two sources share a line."""
    text = "t" * LINE_PAD
    return [
        json.dumps({"data": {"id": f"{tag}-{i}", "author_id": f"a{i % AUTHORS}", "text": f"{tag} {i} {text}"}}).encode()
        for i in range(count)
    ]


def write_source(directory: Path, name: str, count: int, rate: float) -> tuple[FileSpec, list[bytes]]:
    """Writes `count` lines for source `name` into `directory/<name>.jsonl`; its spec and the lines."""
    lines = source_lines(name, count)
    path = directory / f"{name}.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return FileSpec(name, path, rate), lines


def reload_body(
    sources: Sequence[FileSpec], fake: FakeKinesis, *, stream: str | None = None, endpoint_url: str | None = None,
    flush_deadline: float = 10.0,
) -> str:  # fmt: skip
    """File sources with checkpoints and the kinesis sink on `fake` (or on `stream` at `endpoint_url`)."""
    listed = "".join(
        f"""  - name: {spec.name}
    type: file
    paths: ["{spec.path}"]
    rate: {spec.rate:g}
"""
        for spec in sources
    )
    return f"""
sources:
{listed}sink:
  type: kinesis
  stream: {stream or fake.stream}
  endpoint_url: {endpoint_url or fake.url}
  region: us-east-1
  linger: 0.01
{FAST_RETRY}dead_letter:
  path: dead.jsonl
shutdown:
  flush_deadline: {flush_deadline:g}s
"""


def rewrite(daemon: DaemonProcess, old: str, new: str) -> None:
    """Replaces the one occurrence of `old` in the daemon's config file by `new`, atomically (a reload never
    reads half a file); `old` may be the whole body the daemon was built from (the file starts with it)."""
    text = daemon.config_path.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"{old!r} is not once in the config"
    staged = daemon.config_path.with_name(daemon.config_path.name + ".new")
    staged.write_text(text.replace(old, new), encoding="utf-8")
    os.replace(staged, daemon.config_path)


def line_number(daemon: DaemonProcess, line: str) -> int:
    """The 1-based number of the one line of the daemon's config file that is exactly `line`."""
    lines = daemon.config_path.read_text(encoding="utf-8").splitlines()
    assert lines.count(line) == 1, f"{line!r} is not once in the config"
    return lines.index(line) + 1


def positions(fake: FakeKinesis, lines: list[bytes]) -> Counter[int]:
    """How often each of `lines` (by index) is in the fake's stream."""
    index = {line: i for i, line in enumerate(lines)}
    return Counter({index[data]: n for data, n in fake.data_counts().items() if data in index})


def stored(fake: FakeKinesis, lines: list[bytes]) -> int:
    """How many of `lines` the fake's stream holds (copies included)."""
    counts = fake.data_counts()
    return sum(counts[line] for line in lines)


def wait_stored(fake: FakeKinesis, lines: list[bytes], count: int, what: str, timeout: float = LAND_TIMEOUT_S) -> int:
    """Waits until the stream holds at least `count` of `lines`; how many it holds then."""
    return poll_until(lambda: (n := stored(fake, lines)) >= count and n, timeout, f"{count} records of {what} in the stream")


def assert_balanced(summary: dict[str, Any]) -> None:
    """`shutdown_complete`'s totals: every record received ended in exactly one of the outcomes."""
    ends = ("sent", "dead_lettered", "unsent", "kept", "dropped", "lost")
    assert summary["received"] == sum(summary[key] for key in ends), summary


def reload_metrics(daemon: DaemonProcess) -> dict[str, float]:
    """The reload counters by result, the last attempt's time and whether it succeeded (missing: absent)."""
    samples = daemon.metrics()
    figures = {result: samples.get(f'{RELOADS}{{result="{result}"}}', float("nan")) for result in RELOAD_RESULTS}
    figures["at"] = samples.get(LAST_RELOAD_AT, float("nan"))
    figures["successful"] = samples.get(LAST_RELOAD_OK, float("nan"))
    return figures


def checkpoint_offset(workdir: Path, source: str) -> int:
    """The byte offset saved in a one-file source's checkpoint (state/checkpoints/<source>.json)."""
    envelope = json.loads((workdir / "state" / "checkpoints" / f"{source}.json").read_text(encoding="utf-8"))
    files = list(envelope["state"]["files"].values())
    assert len(files) == 1, files
    offset: int = files[0]["offset"]
    return offset


def started_count(daemon: DaemonProcess, source: str) -> int:
    """How many `source_started` events the daemon logged for `source`."""
    return sum(entry.get("source") == source for entry in daemon.events("source_started"))
