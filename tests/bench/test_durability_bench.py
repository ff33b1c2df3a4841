"""The durability benchmark: a quick run of every case delivers every record, and its ratios and verdict
come from the figures it measured."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.durability import CASES, DurabilityResult, main, ratios
from bench.durability_report import READING_HEADING, SECTION_HEADING, section_lines, write_section

OTHER_SECTIONS = "# Benchmarks\n\n## Before\n\nkept\n"
AFTER_SECTION = "\n## After\n\nalso kept\n"


def _result(case: str, baseline: str | None, seconds: float, delivery_s: float, cpu_s: float) -> DurabilityResult:
    stats = {"user_records": 100_000, "first_accepted_at": 1.0, "reached_at": 1.0 + delivery_s}
    return DurabilityResult(
        case, 100_000, ok=True, seconds=seconds, cpu_s=cpu_s, peak_rss_mib=100.0, stats=stats, baseline=baseline,
        delivery_s=delivery_s, delivery_cpu_s=cpu_s / 2, fsyncs={"spool": 50.0},
    )  # fmt: skip


@pytest.mark.slow
def test_quick_run_delivers_every_record_in_every_case_and_reports_ratios_of_its_own_figures(tmp_path: Path) -> None:
    """`--quick`: each case's daemon delivers exactly N records to the null endpoint (none dead-lettered, its
    own counters agree), the spool with batched fsync fsyncs, and every ratio is the quotient of the measured
    values; the section written says so and leaves the rest of the document alone."""
    doc = tmp_path / "benchmarks.md"
    doc.write_text(OTHER_SECTIONS, encoding="utf-8")
    work = tmp_path / "work"
    assert main(["--quick", "--work", str(work), "--write", "--doc", str(doc)]) == 0
    (run,) = work.iterdir()
    report = json.loads((run / "results.json").read_text(encoding="utf-8"))
    records = report["records"]
    assert records > 0 and report["repeat"] == 1
    by_case = {r["case"]: r for r in report["results"]}
    assert set(by_case) == {case.name for case in CASES}
    for name, r in by_case.items():
        assert r["ok"], f"{name}: {r['error']}"
        assert r["stats"]["user_records"] == records == r["stats"]["kinesis_records"], name
        assert r["dead_lettered"] == 0, name
        assert r["metrics"]["records_received"] == records == r["metrics"]["records_sent"], name
        assert r["metrics"]["records_kept"] == 0 and r["metrics"]["spool_dropped_records"] == 0, name
        assert r["cpu_s"] > 0 and r["peak_rss_mib"] > 0 and r["delivery_rate"] > 0, name
        assert r["fsyncs_per_1000"] == pytest.approx(sum(r["fsyncs"].values()) * 1000 / records), name
    assert by_case["synthetic-spool-batch"]["fsyncs"].get("spool", 0) > 0
    # No spool, no spool fsyncs: the baselines really are without it.
    assert by_case["synthetic"]["fsyncs"].get("spool", 0) == 0 and by_case["file"]["fsyncs"].get("spool", 0) == 0
    for case in CASES:
        if case.baseline is None:
            assert case.name not in report["ratios"]
            continue
        r, base, x = by_case[case.name], by_case[case.baseline], report["ratios"][case.name]
        assert x["delivery_rate_x"] == pytest.approx(r["delivery_rate"] / base["delivery_rate"])
        assert x["rate_x"] == pytest.approx((r["records"] / r["seconds"]) / (base["records"] / base["seconds"]))
        assert x["cpu_x"] == pytest.approx(r["cpu_s"] / base["cpu_s"])
        if base["delivery_cpu_s"]:  # a window of a few ticks may have none
            assert x["delivery_cpu_x"] == pytest.approx(r["delivery_cpu_s"] / base["delivery_cpu_s"])
    text = doc.read_text(encoding="utf-8")
    assert text.startswith(OTHER_SECTIONS) and SECTION_HEADING in text
    for case in CASES:
        assert f"\n| {case.name} | " in text
    cost = 100 * (1 - report["ratios"]["synthetic-spool-batch"]["delivery_rate_x"])
    assert f"Spool with batched fsync: costs {cost:.0f} % of the unspooled delivering records/s" in text


def test_ratios_and_verdict_follow_the_figures() -> None:
    """A spooled case at 0.8 of its baseline's delivering rate meets the 25 % target, at 0.7 misses it; a case
    whose baseline failed gets no ratio and the target is then not judged."""
    base = _result("synthetic", None, seconds=5.0, delivery_s=4.0, cpu_s=8.0)
    spooled = _result("synthetic-spool-batch", "synthetic", seconds=6.0, delivery_s=5.0, cpu_s=10.0)
    x = ratios([base, spooled])
    assert x == {
        "synthetic-spool-batch": pytest.approx(
            {"rate_x": 5 / 6, "delivery_rate_x": 0.8, "cpu_x": 1.25, "delivery_cpu_x": 1.25, "peak_rss_x": 1.0}
        )
    }
    report = {"command": "python -m bench.durability", "records": 100_000, "average_bytes": 524.0, "ratios": x}
    text = "\n".join(section_lines(report, [base, spooled]))
    assert "costs 20 % of the unspooled delivering records/s (17 % from spawn) (target ≤ 25 %: met)" in text
    slower = _result("synthetic-spool-batch", "synthetic", seconds=6.0, delivery_s=4.0 / 0.7, cpu_s=10.0)
    report["ratios"] = ratios([base, slower])
    assert "costs 30 % of the unspooled" in "\n".join(section_lines(report, [base, slower]))
    assert "(target ≤ 25 %: **missed**)" in "\n".join(section_lines(report, [base, slower]))
    failed = DurabilityResult("synthetic", 100_000, error="exit 2: state.fsync: unknown key")
    report["ratios"] = ratios([failed, spooled])
    assert report["ratios"] == {}
    text = "\n".join(section_lines(report, [failed, spooled]))
    assert "| synthetic | failed: exit 2: state.fsync: unknown key | | |" in text and "not judged" in text


def test_writing_the_section_again_keeps_the_hand_written_reading(tmp_path: Path) -> None:
    """The generated table is replaced; the reading under its heading and the other sections stay byte for byte."""
    doc = tmp_path / "benchmarks.md"
    reading = f"{READING_HEADING}\n\nThe spool costs what its fsyncs cost.\n"
    doc.write_text(f"{OTHER_SECTIONS}\n{SECTION_HEADING}\n\nold table\n\n{reading}{AFTER_SECTION}", encoding="utf-8")
    base = _result("synthetic", None, seconds=5.0, delivery_s=4.0, cpu_s=8.0)
    report = {"command": "python -m bench.durability", "records": 100_000, "average_bytes": 524.0, "ratios": {}}
    write_section(doc, report, [base])
    text = doc.read_text(encoding="utf-8")
    assert "old table" not in text and "| synthetic | 20,000 |" in text
    assert text.startswith(OTHER_SECTIONS) and text.endswith(f"\n{reading}{AFTER_SECTION}")
