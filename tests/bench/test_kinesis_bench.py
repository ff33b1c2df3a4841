"""The Kinesis benchmark's driver: a failing case is reported and the run goes on; the verdicts it writes."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench import kinesis
from bench.kinesis import CaseResult, median_run, run_case
from bench.kinesis_cases import tweets_file
from bench.kinesis_procs import Endpoint
from bench.kinesis_profile import summarise
from bench.kinesis_report import replace_section, throughput_lines

RECORDS = 20
CASE_TIMEOUT_S = 60.0


def test_a_failing_case_is_reported_with_its_first_error_and_the_next_case_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A daemon whose config it refuses (exit 2) is a failed case naming the problem; the next case on the
    same endpoint process delivers every record and is measured."""
    monkeypatch.setitem(kinesis.DAEMON_SINK_EXTRA, "daemon-bogus", {"bogus_key": True})
    tweets, _ = tweets_file(tmp_path / "tweets.jsonl", RECORDS)
    endpoint = Endpoint(4)
    try:
        failed = run_case(endpoint, tmp_path, "daemon-bogus", tweets, RECORDS, CASE_TIMEOUT_S)
        loop = run_case(endpoint, tmp_path, "boto3-loop", tweets, RECORDS, CASE_TIMEOUT_S)
    finally:
        endpoint.stop()
    assert not failed.ok
    assert "exit 2" in failed.error and "sink.bogus_key: unknown key" in failed.error
    assert loop.ok, loop.error
    assert loop.stats["user_records"] == RECORDS == loop.stats["kinesis_records"]
    assert loop.stats["requests"] == {"PutRecords": 1}
    # It may still be closing when the endpoint has counted everything: then SIGTERM ends it.
    assert loop.exit_code in (0, -signal.SIGTERM) and loop.cpu_s > 0 and loop.peak_rss_mib > 0


def _result(case: str, seconds: float, cpu_s: float, units: int, records: int = 100_000) -> CaseResult:
    stats: dict[str, Any] = {"kinesis_records": units, "put_payload_units": units, "endpoint_cpu_s": 1.0}
    return CaseResult(case, records, ok=True, seconds=seconds, cpu_s=cpu_s, peak_rss_mib=100.0, stats=stats)


def test_verdicts_compare_each_daemon_case_with_the_boto3_loop_of_the_same_run() -> None:
    """3 times the loop's rate at half its CPU meets the unaggregated targets; 4 times and 10 times fewer units miss both
    aggregated ones; a failed case is a row saying so."""
    report = {"records": 100_000, "average_bytes": 1024.0, "orjson": True, "shard_shares": [0.25] * 4}
    results = [
        _result("daemon", seconds=1.0, cpu_s=2.0, units=100_000),
        _result("daemon-aggregated", seconds=0.75, cpu_s=1.0, units=10_000),
        CaseResult("daemon-ordered", 100_000, error="exit 2 | sink.ordered: unknown key"),
        _result("boto3-loop", seconds=3.0, cpu_s=4.0, units=100_000),
    ]
    text = "\n".join(throughput_lines("python -m bench.kinesis", report, results))
    assert "3.00× the boto3 loop's records/s (target ≥ 3×: met) at 0.50× its CPU per record (target ≤ 0.5×: met)" in text
    assert "Aggregated: 4.00× the boto3 loop (target ≥ 5×: **missed**)" in text
    assert "10.0× fewer PUT payload units than the unaggregated daemon (target ≥ 20×: **missed**)" in text
    assert "| daemon-ordered | failed: exit 2 \\| sink.ordered: unknown key |" in text


def test_replace_section_rewrites_only_its_own_section(tmp_path: Path) -> None:
    """The section is replaced in place up to the next `## `; the others stay byte for byte."""
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n## A\n\nold a\n\n## Kinesis sink: x\n\nold\n\n## B\n\nb\n", encoding="utf-8")
    replace_section(doc, "## Kinesis sink: x", "## Kinesis sink: x\n\nnew\n")
    assert doc.read_text(encoding="utf-8") == "# Benchmarks\n\n## A\n\nold a\n\n## Kinesis sink: x\n\nnew\n\n## B\n\nb\n"
    replace_section(doc, "## Kinesis sink: y", "## Kinesis sink: y\n\nadded\n")
    assert doc.read_text(encoding="utf-8").endswith("## B\n\nb\n\n## Kinesis sink: y\n\nadded\n")


def test_profile_charges_each_sample_to_the_first_library_the_project_called(tmp_path: Path) -> None:
    """Thread carriers are skipped; a stack through botocore is botocore's; an all-project stack is its leaf file's."""
    raw = tmp_path / "raw.txt"
    raw.write_text(
        "Thread._bootstrap (threading.py:1);SinkWorker._run (daemon/pipeline.py:3);_api_call (botocore/client.py:5);"
        "send (http/client.py:9) 6\n"
        "Thread._bootstrap (threading.py:1);FileSource.run (sources/file.py:2);LineReader.read (sources/file_read.py:7) 3\n"
        "<module> (<frozen runpy>:1);raw_decode (json/decoder.py:4) 1\n"
        "not a stack line\n",
        encoding="utf-8",
    )
    summary = summarise(raw)
    assert summary["samples"] == 10
    assert summary["areas"] == [("botocore", 0.6), ("sources/file_read.py", 0.3), ("json", 0.1)]
    assert summary["functions"][0] == ("send (http)", 0.6)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=300))
def test_profile_summary_never_raises_on_any_text(tmp_path_factory: pytest.TempPathFactory, text: str) -> None:
    """Whatever py-spy wrote, the summary is a count and shares, never an exception."""
    raw = tmp_path_factory.mktemp("raw") / "raw.txt"
    raw.write_text(text, encoding="utf-8", errors="replace")
    summary = summarise(raw)
    assert isinstance(summary["samples"], int)


def test_repeats_report_the_median_run_and_a_failed_repeat_fails_the_case() -> None:
    """Of three runs the one with the median records/s is reported with all three rates; one failed run fails it."""
    runs = [_result("daemon", seconds=s, cpu_s=1.0, units=100_000) for s in (2.0, 1.0, 4.0)]
    median = median_run(runs)
    assert median is runs[0] and median.rates == [50_000.0, 100_000.0, 25_000.0]
    broken = CaseResult("daemon", 100_000, error="exit 1: boom")
    failed = median_run([runs[1], broken, runs[2]])
    assert not failed.ok and failed.error == "1 of 3 runs failed; first: exit 1: boom"
