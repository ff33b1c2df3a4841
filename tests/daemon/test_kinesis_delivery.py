"""Issue 14's "Done when" through the real daemon process: a file source replaying a generated JSON-lines file
into the kinesis sink pointed at tests/fake_kinesis.py (a real multi-shard HTTP Kinesis), embedded stack off.

Outcomes are checked where they land: the fake's storage (aggregates opened), the dead-letter file and the
daemon's `shutdown_complete` totals. Waits are on the fake's put calls (wait_until) and the daemon's log events.
Here: the helpers and the fault tests; test_kinesis_delivery_records.py has bad records, resharding,
aggregation and ordering.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, DaemonProcess
from tests.fake_kinesis import INTERNAL_FAILURE, THROTTLED, FakeKinesis

SHARDS = 4
AUTHORS = 200
# Bounds for outcomes on a loaded 2-core machine; no test asserts that anything is fast.
START_TIMEOUT_S = 60.0
LAND_TIMEOUT_S = 90.0
FLUSH_DEADLINE_S = 1.0
# SIGTERM to exit: the flush deadline, plus the sources' stop, the main loop's tick and process teardown
# (measured: 1.4 s in all with a 1 s deadline, old sink and engine alike; the rest is for a loaded machine).
EXIT_MARGIN_S = 4.0
# The shutdown's own seconds (sources stopped, flush, unsent dead-lettered) beyond the flush deadline.
FLUSH_OVERRUN_S = 2.0
STOP_TIMEOUT_S = FLUSH_DEADLINE_S + EXIT_MARGIN_S + 20
# Short backoffs: the tests inject failures on purpose and must not spend their time sleeping.
FAST_RETRY = "  retry:\n    initial_backoff: 0.01\n    max_backoff: 0.1\n"
DUMMY_AWS = {"AWS_ACCESS_KEY_ID": "AKIAFAKEKINESIS00001", "AWS_SECRET_ACCESS_KEY": "fake-secret"}
REASON_UNSENT = "unsent_at_shutdown"
# A key only the delivery engine's config knows, and its possible-duplicates metric (a prefix of its samples).
ENGINE_KEY = "  in_flight: 4\n"
POSSIBLE_DUPLICATES = "tweet_producer_sink_possible_duplicates_total{"
UNLIMITED_SHARDS = "  shard_limits:\n    records_per_second: 1000000\n    bytes_per_second: 1073741824\n    adaptive: false\n"


@pytest.fixture
def fake() -> Iterator[FakeKinesis]:
    """A seeded 4-shard fake stream; its own defects must stay absent."""
    with FakeKinesis(SHARDS, seed=14) as kinesis:
        yield kinesis
        assert kinesis.stats().internal_errors == ()


def tweet_lines(count: int, authors: int = AUTHORS, pad: int = 120) -> list[bytes]:
    """`count` distinct X v2-shaped lines over `authors` partition keys (data.author_id), in file order."""
    text = "t" * pad
    return [
        json.dumps({"data": {"id": str(10**15 + i), "author_id": f"a{i % authors}", "text": f"{i} {text}"}}).encode()
        for i in range(count)
    ]


def write_lines(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def config_body(
    replay: Path,
    fake: FakeKinesis,
    *,
    rate: float = 0,
    sink_extra: str = "",
    flush_deadline: float = 10.0,
    checkpoint: bool = True,
) -> str:
    """A file source on `replay` and the kinesis sink on the fake; `sink_extra` adds lines to the sink section."""
    return f"""
sources:
  - name: replay
    type: file
    paths: ["{replay}"]
    rate: {rate}
    checkpoint: {str(checkpoint).lower()}
sink:
  type: kinesis
  stream: {fake.stream}
  endpoint_url: {fake.url}
  region: us-east-1
  linger: 0.01
{FAST_RETRY}{sink_extra}dead_letter:
  path: dead.jsonl
shutdown:
  flush_deadline: {flush_deadline}s
"""


def check_config_refusal(tmp_path: Path, body: str) -> str | None:
    """What `tweet-producer check-config` (a real CLI process) says against this config; None if it accepts it."""
    config = tmp_path / "check.yaml"
    config.write_text(body + "\nembedded:\n  enabled: false\n", encoding="utf-8")
    out = subprocess.run(
        [sys.executable, "-m", "cli.main", "check-config", "-c", str(config)],
        cwd=tmp_path,
        capture_output=True,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        timeout=START_TIMEOUT_S,
    )
    return None if out.returncode == 0 else (out.stdout + out.stderr).decode(errors="replace").strip()


def unpaced(tmp_path: Path, fake: FakeKinesis) -> str:
    """Sink lines lifting the engine's per-shard pacing where the daemon knows the key, else nothing: Kinesis's
    1,000 records/s per shard, cut further at each injected throttle, would make these fault tests (whose fake
    enforces no limit) take several times longer without changing what they prove."""
    refusal = check_config_refusal(tmp_path, config_body(tmp_path / "tweets.jsonl", fake, sink_extra=UNLIMITED_SHARDS))
    return UNLIMITED_SHARDS if refusal is None else ""


def start(daemon_factory: Any, body: str) -> DaemonProcess:
    daemon: DaemonProcess = daemon_factory(body, embedded=False).start(DUMMY_AWS)
    daemon.wait_for_event("daemon_started", timeout=START_TIMEOUT_S)
    return daemon


def stop(daemon: DaemonProcess) -> dict[str, Any]:
    """SIGTERM, exit 0, and the daemon's final totals."""
    assert daemon.stop(signal.SIGTERM, timeout=STOP_TIMEOUT_S) == 0
    return daemon.wait_for_event("shutdown_complete", timeout=1)


def totals(summary: dict[str, Any]) -> tuple[int, int, int, int, int]:
    return summary["received"], summary["sent"], summary["dead_lettered"], summary["unsent"], summary["lost"]


def dead_letters(workdir: Path) -> list[dict[str, Any]]:
    path = workdir / "dead.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def line_number(origin: str) -> int:
    """The line number of a file source's `path:line` origin."""
    return int(origin.rsplit(":", 1)[1])


@dataclass
class Run:
    """A finished daemon run: the process (its logs), its metrics just before SIGTERM, its final summary."""

    daemon: DaemonProcess
    metrics: dict[str, float]
    summary: dict[str, Any]
    stored_before_scrape: Counter[bytes]  # the fake's data counts taken just before `metrics`


def deliver_all(
    daemon_factory: Any, tmp_path: Path, fake: FakeKinesis, lines: list[bytes], sink_extra: str = "", deliverable: int = 0
) -> Run:
    """Runs the daemon over `lines` until the fake holds `deliverable` user records (default: one per line),
    then stops it."""
    deliverable = deliverable or len(lines)
    replay = write_lines(tmp_path / "tweets.jsonl", lines)
    daemon = start(daemon_factory, config_body(replay, fake, sink_extra=sink_extra))
    daemon.wait_for_event("all_sources_finished", timeout=LAND_TIMEOUT_S)
    stored = fake.wait_for_user_records(deliverable, timeout_s=LAND_TIMEOUT_S)
    assert stored, f"{len(fake.user_records())} of {deliverable} stored"
    # The stream's contents first, then the metrics: a copy is counted (duplicates_possible) before it is sent
    # again, so every copy in this snapshot is already in the scrape; copies landing later may not be.
    stored_before_scrape = fake.data_counts()
    metrics = daemon.metrics()
    return Run(daemon, metrics, stop(daemon), stored_before_scrape)


@pytest.mark.slow  # 8-12 s with the one-request sink (4 s with the engine): 20,000 records, 30 % refused per attempt
def test_30_percent_entry_failures_every_record_in_the_stream_exactly_once(
    tmp_path: Path, daemon_factory: Any, fake: FakeKinesis
) -> None:
    """20,000 records, 30 % of entries refused (throttled, then InternalFailure): each stored exactly once, none dead-lettered."""
    lines = tweet_lines(20_000)
    fake.set_faults(entry_failure_rate=0.3, entry_failure_code=THROTTLED)
    replay = write_lines(tmp_path / "tweets.jsonl", lines)
    daemon = start(daemon_factory, config_body(replay, fake, sink_extra=unpaced(tmp_path, fake)))
    # Half-way the refusals change kind, so both codes meet the sink's retry path.
    assert fake.wait_until(lambda f: len(f.records()) >= len(lines) // 2, LAND_TIMEOUT_S)
    fake.set_faults(entry_failure_code=INTERNAL_FAILURE)
    assert fake.wait_for_user_records(len(lines), timeout_s=LAND_TIMEOUT_S), f"{len(fake.records())} of {len(lines)} stored"
    summary = stop(daemon)

    assert fake.data_counts() == Counter(lines)
    refused = fake.stats().refused_entries
    assert refused[THROTTLED] > 0 and refused[INTERNAL_FAILURE] > 0
    # 30 % of every attempt: about 0.43 refusals per record; far fewer would mean the faults did not apply.
    assert refused.total() > 0.3 * len(lines)
    assert dead_letters(tmp_path) == []
    assert totals(summary) == (len(lines), len(lines), 0, 0, 0)


class LostAnswerCountingFake(FakeKinesis):
    """The fake, also noting the data of every entry it stored in a call whose answer it then lost (a reset
    after storing, or an answer held back longer than the client's read timeout): only those may be resent."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stored_unanswered: Counter[bytes] = Counter()

    def _store(self, entries: Any, plan: Any) -> Any:  # called under the fake's lock, once per put call
        failed, results = super()._store(entries, plan)
        if plan.reset_after or plan.delay_s > 0:
            self.stored_unanswered.update(e.data for e, r in zip(entries, results, strict=True) if "ErrorCode" not in r)
        return failed, results


def test_500s_slow_answers_and_resets_lose_nothing_and_duplicate_only_records_whose_answer_was_lost(
    tmp_path: Path, daemon_factory: Any
) -> None:
    """500s, resets and answers slower than read_timeout: all stored; each extra copy only from a call whose answer was lost."""
    lines = tweet_lines(4000)
    fake = LostAnswerCountingFake(SHARDS, seed=15)
    with fake:
        # A read timeout far above any normal answer's time even on a loaded machine: at 0.3 s an ordinary answer
        # arrived late once in CI, the sink rightly resent, and the copy looked like one whose answer came.
        slow_s, read_timeout_s = 3.0, 1.0
        fake.set_faults(call_failure_rate=0.1, reset_before_rate=0.1, reset_after_rate=0.08, slow_rate=0.05, slow_delay_s=slow_s)
        extra = f"  max_batch_records: 100\n  read_timeout: {read_timeout_s}\n"
        run = deliver_all(daemon_factory, tmp_path, fake, lines, sink_extra=extra)
        counts = fake.data_counts()
        unanswered = Counter(fake.stored_unanswered)
        injected = fake.stats().injected
        assert fake.stats().internal_errors == ()

    assert set(counts) == set(lines), "a record is missing from the stream, or something foreign is in it"
    copies = {data: n - 1 for data, n in counts.items() if n > 1}
    assert all(copies[data] <= unanswered[data] for data in copies), "a record duplicated although its answer came"
    assert sum(copies.values()) <= unanswered.total()
    assert injected["call_failure"] > 0 and injected["reset_before"] > 0
    assert injected["reset_after"] > 0 and injected["slow"] > 0
    assert dead_letters(tmp_path) == []
    # The daemon counts records, not copies: each sent once in its books.
    assert totals(run.summary) == (len(lines), len(lines), 0, 0, 0)
    if check_config_refusal(tmp_path, config_body(tmp_path / "tweets.jsonl", fake, sink_extra=ENGINE_KEY)) is None:
        # The delivery engine counts each record it resends after a lost answer (the sink before it did not).
        counted = sum(v for k, v in run.metrics.items() if k.startswith(POSSIBLE_DUPLICATES))
        copied = sum(n - 1 for n in run.stored_before_scrape.values() if n > 1)
        assert counted >= copied, f"{copied} copies stored before the scrape, {counted} counted as possible duplicates"


def stream_down_then_sigterm(
    daemon_factory: Any, fake: FakeKinesis, replay: Path, status: int, code: str, checkpoint: bool
) -> dict[str, Any]:
    """Records flowing, then every call refused, then SIGTERM: exit in time, no record stored after the refusals
    began; the daemon's summary."""
    daemon = start(daemon_factory, config_body(replay, fake, rate=1500, flush_deadline=FLUSH_DEADLINE_S, checkpoint=checkpoint))
    assert fake.wait_until(lambda f: len(f.records()) >= 300, LAND_TIMEOUT_S), "records did not start flowing"
    fake.set_faults(call_failure_rate=1.0, call_failure_status=status, call_failure_code=code)
    assert fake.wait_until(lambda f: f.stats().injected["call_failure"] >= 3, LAND_TIMEOUT_S)
    stored_before_signal = len(fake.records())
    started = time.monotonic()
    summary = stop(daemon)
    assert time.monotonic() - started < FLUSH_DEADLINE_S + EXIT_MARGIN_S
    assert summary["seconds"] < FLUSH_DEADLINE_S + FLUSH_OVERRUN_S  # the daemon's own measure, signal to summary
    assert len(fake.records()) == summary["sent"] == stored_before_signal, "the stream took records while refusing every call"
    return summary


STREAM_DOWN = pytest.mark.parametrize(
    ("status", "code"), [(500, INTERNAL_FAILURE), (400, "ResourceNotFoundException")], ids=["500", "not_found"]
)


@STREAM_DOWN
def test_stream_down_at_sigterm_every_record_in_the_stream_or_dead_lettered_unsent_never_both(
    tmp_path: Path, daemon_factory: Any, fake: FakeKinesis, status: int, code: str
) -> None:
    """Without a checkpoint: stream refusing all, then SIGTERM: each line read is stored once or dead-lettered
    unsent, not both."""
    lines = tweet_lines(6000)
    replay = write_lines(tmp_path / "tweets.jsonl", lines)
    summary = stream_down_then_sigterm(daemon_factory, fake, replay, status, code, checkpoint=False)
    received, sent, dead_lettered, unsent, lost = totals(summary)
    assert 0 < received < len(lines) and lost == 0 and dead_lettered == 0 and summary["kept"] == 0
    assert received == sent + unsent and unsent > 0
    stored = fake.records()
    line_of = {line: number for number, line in enumerate(lines, start=1)}
    in_stream = Counter(line_of[r.data] for r in stored)  # KeyError: data that is no line of the file
    assert set(in_stream.values()) == {1}
    dead = dead_letters(tmp_path)
    assert {d["reason"] for d in dead} == {REASON_UNSENT} and len(dead) == unsent
    # The file is read in order: the daemon received its first `received` lines, each in exactly one place.
    assert sorted([*in_stream, *(line_number(d["origin"]) for d in dead)]) == list(range(1, received + 1))


@STREAM_DOWN
def test_stream_down_at_sigterm_with_a_checkpoint_keeps_the_rest_and_the_next_start_sends_it_once(
    tmp_path: Path, daemon_factory: Any, fake: FakeKinesis, status: int, code: str
) -> None:
    """With a checkpoint: the records not delivered at SIGTERM are kept (not dead-lettered); once the stream is
    back, the next start sends every remaining line, and each line is in the stream exactly once."""
    lines = tweet_lines(6000)
    replay = write_lines(tmp_path / "tweets.jsonl", lines)
    summary = stream_down_then_sigterm(daemon_factory, fake, replay, status, code, checkpoint=True)
    received, sent, dead_lettered, unsent, lost = totals(summary)
    assert 0 < received < len(lines) and lost == 0 and dead_lettered == 0 and unsent == 0
    assert received == sent + summary["kept"] and summary["kept"] > 0
    assert dead_letters(tmp_path) == []

    fake.set_faults(call_failure_rate=0.0)
    daemon = start(daemon_factory, config_body(replay, fake, flush_deadline=FLUSH_DEADLINE_S))
    daemon.wait_for_event("all_sources_finished", timeout=LAND_TIMEOUT_S)
    assert fake.wait_until(lambda f: len(f.records()) >= len(lines), LAND_TIMEOUT_S), f"{len(fake.records())} stored"
    again = stop(daemon)
    line_of = {line: number for number, line in enumerate(lines, start=1)}
    in_stream = Counter(line_of[r.data] for r in fake.records())
    assert sorted(in_stream) == list(range(1, len(lines) + 1)) and set(in_stream.values()) == {1}
    assert again["received"] == len(lines) - sent, "the restart read again what the first run delivered"
