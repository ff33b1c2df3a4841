"""The durability benchmark's section of docs/benchmarks.md: the table, the command, the target's verdict.

A hand-written reading of the figures may follow the generated part under READING_HEADING; writing the
section again keeps it (the figures change with a run, what they mean is written by a person)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.kinesis_profile import SAMPLE_RATE_HZ
from bench.kinesis_profile import TOP_AREAS as PROFILE_TOP_AREAS
from bench.kinesis_report import _cell, _verdict, _wrap, replace_section

if TYPE_CHECKING:
    from bench.durability import DurabilityResult

SECTION_HEADING = "## Durability: checkpoints and the spool"
READING_HEADING = "### What the durability figures say"
# Issue 16: the spool with batched fsync costs at most 25 % of unspooled throughput.
TARGET_COST_PCT = 25.0
TARGET_CASE = "synthetic-spool-batch"
FILES = ("checkpoint", "spool", "dead_letter")
TOP_AREAS = 8


def _fsyncs(r: DurabilityResult) -> str:
    per = {f: r.fsyncs.get(f, 0.0) * 1000 / r.records for f in FILES if r.fsyncs.get(f)}
    if not per:
        return "0"
    total = f"{r.fsyncs_per_1000:.2f}"
    return total + (" (" + ", ".join(f"{f} {v:.2f}" for f, v in per.items()) + ")" if len(per) > 1 else f" ({next(iter(per))})")


def section_lines(report: dict[str, Any], results: list[DurabilityResult]) -> list[str]:
    ratios: dict[str, dict[str, float]] = report.get("ratios", {})
    lines = [
        SECTION_HEADING,
        "",
        f"`{report['command']}` — daemon: {report.get('daemon', 'this checkout')}. "
        f"One run; one null Kinesis endpoint (`bench/null_kinesis.py`, 4 shards, its own process); every case is "
        f"the daemon in its own process with a fresh state directory ({report.get('state_fs', 'unknown')} file "
        f"system), delivering {report['records']:,} tweets of {report['average_bytes']:,.0f} bytes on average. "
        "File cases replay `data/sample_tweets.jsonl` repeated; synthetic cases generate the same kind of tweet "
        "(`synthetic`, kind tweets, count N, rate 0) - the live-like source, whose records the spool holds; "
        f"`synthetic-rate*` at {report.get('live_rate', 0):,.0f} records/s, a live stream's pace, "
        "where the records/s are the rate's and the "
        "spool's cost shows as CPU per record. "
        'records/s: from spawn (start-up included) until the endpoint counted every record; "delivering": from '
        "the first record the endpoint took to the last (start-up excluded: the steady cost, which the target is "
        "judged on). CPU: user + system of the daemon's process and its threads per 100k records, whole run "
        "(`os.wait4`, start-up and shutdown included) and over the delivering window (`/proc/<pid>/stat` sampled "
        "every 50 ms, interpolated); peak RSS: its VmHWM; fsyncs: `tweet_producer_fsyncs_total` (by file) scraped when the "
        "endpoint had every record, per 1,000 records. Ratios: to the no-durability case of the same source "
        "in this run."
        + (
            f" Every case ran {report['repeat']} times, round by round; each row is its median run by records/s "
            "(the range in brackets)."
            if report.get("repeat", 1) > 1
            else ""
        )
        + f" Machine: {report.get('cpus')} CPUs, load average {report.get('load_before', 0):.1f} at the start and "
        f"{report.get('load_after', 0):.1f} at the end (other work ran beside it): compare the ratios of one run.",
        "",
        "| case | records/s | × | delivering records/s | × | CPU s per 100k | × | of which system "
        "| delivering CPU s per 100k | × "
        "| fsyncs per 1,000 records | peak RSS (MiB) | × | delivered | dead-lettered |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for r in results:
        if not r.ok:
            lines.append(f"| {r.case} | failed: {_cell(r.error)} | | | | | | | | | | | | | |")
            continue
        x = ratios.get(r.case)
        spread = f" ({min(r.rates):,.0f}–{max(r.rates):,.0f})" if len(r.rates) > 1 else ""

        def ratio(key: str, x: dict[str, float] | None = x) -> str:
            return f"{x[key]:.2f}×" if x else "–"

        lines.append(
            f"| {r.case} | {r.rate:,.0f}{spread} | {ratio('rate_x')} | {r.delivery_rate:,.0f} | {ratio('delivery_rate_x')} "
            f"| {r.cpu_per_100k:.2f} | {ratio('cpu_x')} | {r.sys_cpu_per_100k:.2f} "
            f"| {r.delivery_cpu_per_100k:.2f} | {ratio('delivery_cpu_x')} "
            f"| {_fsyncs(r)} | {r.peak_rss_mib:.0f} | {ratio('peak_rss_x')} "
            f"| {r.stats.get('user_records', 0):,} | {r.dead_lettered:,} |"
        )
    lines += ["", *verdict_lines(ratios, results), ""]
    lines += profile_lines(report.get("profiles", {}))
    return lines


def _share(share: float | None) -> str:
    return "–" if share is None else f"{100 * share:.1f} %"


def profile_lines(profiles: dict[str, Any]) -> list[str]:
    """The profiled cases side by side: each area's share of the GIL-holding samples."""
    if not profiles:
        return []
    areas: list[str] = []
    for summary in profiles.values():
        areas += [name for name, _ in summary["areas"][:TOP_AREAS] if name not in areas]
    shares = {case: dict(summary["areas"]) for case, summary in profiles.items()}
    samples = ", ".join(f"{case} {summary['samples']:,}" for case, summary in profiles.items())
    return [
        f"Where the time holding the GIL went (`--profile`: py-spy `--gil` at {SAMPLE_RATE_HZ} Hz from the first "
        f"accepted record, a separate untimed run of each case; samples: {samples}): each sample charged to the "
        "first library or stdlib module the project called, else to the project's file at the leaf; the top "
        f"{TOP_AREAS} areas of each case (–: not among that case's top {PROFILE_TOP_AREAS}).",
        "",
        "| area | " + " | ".join(profiles) + " |",
        "|---|" + "---:|" * len(profiles),
        *(f"| {area} | " + " | ".join(_share(shares[c].get(area)) for c in profiles) + " |" for area in areas),
        "",
    ]


def verdict_lines(ratios: dict[str, dict[str, float]], results: list[DurabilityResult]) -> list[str]:
    lines = ["Target (issue 16), from this run:", ""]
    target = ratios.get(TARGET_CASE)
    if target is None:
        lines.append(f"- Spool with batched fsync: not judged ({TARGET_CASE} or its baseline failed).")
    else:
        cost = 100 * (1 - target["delivery_rate_x"])
        spawn_cost = 100 * (1 - target["rate_x"])
        lines.append(
            f"- Spool with batched fsync: costs {cost:.0f} % of the unspooled delivering records/s "
            f"({spawn_cost:.0f} % from spawn) (target ≤ {TARGET_COST_PCT:g} %: {_verdict(cost <= TARGET_COST_PCT)}), "
            f"at {target['delivery_cpu_x']:.2f}× its delivering CPU per record."
        )
    for name, x in ratios.items():
        if name != TARGET_CASE:
            cost = 100 * (1 - x["delivery_rate_x"])
            lines.append(
                (
                    f"- {name}: costs {max(cost, 0.0):.0f} % of its baseline's delivering records/s"
                    if round(cost) >= 0
                    else f"- {name}: {-cost:.0f} % faster than its baseline (no cost measurable at this run's noise)"
                )
                + f", at {x['delivery_cpu_x']:.2f}× its delivering CPU per record."
            )
    notes = [
        f"- {r.case}: the endpoint counted {r.stats['user_records']:,} records for {r.records:,}."
        for r in results
        if r.ok and r.stats.get("user_records") != r.records
    ]
    return lines + (["", "Notes:", "", *notes] if notes else [])


def write_section(path: Path, report: dict[str, Any], results: list[DurabilityResult]) -> None:
    """Replace the section's generated part; a reading under READING_HEADING stays as it was."""
    current = path.read_text(encoding="utf-8") if path.exists() else ""
    reading = ""
    start = current.find(SECTION_HEADING)
    if start != -1:
        end = current.find("\n## ", start + 1)
        section = current[start : end if end != -1 else len(current)]
        at = section.find(READING_HEADING)
        if at != -1:
            reading = "\n" + section[at:].rstrip("\n") + "\n"
    replace_section(path, SECTION_HEADING, "\n".join(_wrap(section_lines(report, results))) + reading)
