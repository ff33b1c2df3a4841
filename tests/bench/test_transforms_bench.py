"""The transforms benchmark (bench/transforms.py): a small run ends every record, filters what its cases say,
and the section it writes carries ratios of its own figures and a verdict for each judged case."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.transforms import CASES, SECTION_HEADING, TYPICAL, WORST, main

RECORDS = 1500


def test_a_small_run_ends_every_record_and_writes_its_section(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every case ends all records (sent + filtered), keep-all filters nothing, the lang filter most; the section
    written holds each case, its ratio against none, and the verdicts, and leaves the rest of the document alone."""
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n## Before\n\nkept\n", encoding="utf-8")
    assert main(["--records", str(RECORDS), "--rounds", "1", "--work", str(tmp_path), "--write", "--doc", str(doc)]) == 0
    report = json.loads(capsys.readouterr().out)
    by_case = {r["case"]: r for r in report["results"]}
    assert set(by_case) == {case.name for case in CASES}
    assert all(r["sent"] + r["filtered"] == RECORDS for r in by_case.values())
    assert by_case["none"]["filtered"] == 0 and by_case[WORST]["filtered"] == 0
    assert by_case[TYPICAL]["filtered"] > RECORDS // 2
    base = by_case["none"]["records_per_s"]
    assert all(r["ratio"] == pytest.approx(r["records_per_s"] / base) for r in by_case.values())
    text = doc.read_text(encoding="utf-8")
    assert text.startswith("# Benchmarks\n\n## Before\n\nkept\n") and SECTION_HEADING in text
    assert f"| {WORST} |" in text and text.count("**met**") + text.count("**missed**") == 2
