"""The Kinesis benchmark's sections of docs/benchmarks.md: the table, the command, and each target's verdict."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.kinesis_profile import profile_lines

if TYPE_CHECKING:
    from bench.kinesis import CaseResult, ThrottledResult

THROUGHPUT_HEADING = "## Kinesis sink: throughput against a null endpoint"
THROTTLED_HEADING = "## Kinesis sink: 4 throttled shards"
BASELINE = "boto3-loop"
# Issue 14's targets (same-run ratios).
TARGET_RATE_X = 3.0
TARGET_CPU_X = 0.5
TARGET_AGGREGATED_RATE_X = 5.0
TARGET_UNITS_FEWER_X = 20.0
TARGET_RSS_BYTES = 150 * 1000**2  # "150 MB", read as decimal megabytes: the stricter reading
TARGET_CAPACITY_PCT = 95.0
TARGET_THROTTLED_PER_RECORD = 0.05
MIB = 1024**2
MAX_ERROR_CHARS = 200
PER = 100_000
WRAP_WIDTH = 110


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")[:MAX_ERROR_CHARS]


def _lifted(report: dict[str, Any]) -> str:
    common = report.get("daemon_sink_common") or {}
    limits = common.get("shard_limits")
    if not limits:
        return ""
    return (
        f"The daemon cases run with `sink.shard_limits` lifted to {limits['records_per_second']:,} records/s and "
        f"{limits['bytes_per_second']:,} bytes/s a shard: the null endpoint enforces no limits, and with the "
        "defaults (Kinesis's 1,000 records/s and 1 MiB/s) the sink paces 4 shards to at most 4,000 records/s, "
        "so the figures would show the pacing instead of the producer's cost. "
    )


def _repeats(report: dict[str, Any]) -> str:
    repeat = int(report.get("repeat", 1))
    if repeat <= 1:
        return ""
    return (
        f"Every case ran {repeat} times, round by round; each row is its median run by records/s (all runs' "
        "range in brackets), the ratios are of the medians. "
    )


def _machine(report: dict[str, Any]) -> str:
    return (
        f"Machine: {report.get('cpus')} CPUs, load average {report.get('load_before', 0):.1f} when the run started and "
        f"{report.get('load_after', 0):.1f} when it ended (other work ran beside it): absolute figures move with "
        "that; compare the ratios of one run."
    )


def _wrap(lines: list[str]) -> list[str]:
    """Paragraphs wrapped for a readable diff; table rows, headings and list items kept whole."""
    out: list[str] = []
    for line in lines:
        if line.startswith(("|", "#", "- ")) or len(line) <= WRAP_WIDTH:
            out.append(line)
        else:
            out.extend(textwrap.wrap(line, WRAP_WIDTH, break_long_words=False, break_on_hyphens=False))
    return out


def _per_request(stats: dict[str, Any]) -> float:
    """User records per PutRecords (or PutRecord) call: how full the requests were."""
    requests = sum(stats.get("requests", {}).get(op, 0) for op in ("PutRecords", "PutRecord"))
    return float(stats.get("user_records", 0)) / max(1, requests)


def _shares(shares: list[float]) -> str:
    return " / ".join(f"{100 * share:.1f} %" for share in shares)


def _verdict(met: bool) -> str:
    return "met" if met else "**missed**"


def throughput_lines(command: str, report: dict[str, Any], results: list[CaseResult]) -> list[str]:
    by_case = {r.case: r for r in results if r.ok}
    base = by_case.get(BASELINE)
    lines = [
        THROUGHPUT_HEADING,
        "",
        f"`{command.strip()}` — daemon: {report.get('daemon', 'this checkout')}. "
        "One run; one null Kinesis endpoint (`bench/null_kinesis.py`, 4 shards, its own "
        f"process, orjson {'on' if report['orjson'] else 'off'}); the same {report['records']:,} sample X v2 tweets "
        f"(`cli/sample.py`, {report['average_bytes']:,.0f} bytes on average). Each case runs in its own process, "
        "timed from spawn (start-up included) until the endpoint counted all its user records; CPU is user + "
        "system time of the process and its threads (`os.wait4`), peak RSS its VmHWM (`ru_maxrss` would include "
        "the driver's). PUT payload units: "
        "each Kinesis record costs ceil((data + partition key) / 25,600 bytes) (25 KB, KB = 1,024 bytes as on "
        "the pricing page). Records per shard (MD5 of `data.author_id`): "
        f'{_shares(report["shard_shares"])}. "first record after": from spawn to the first record the endpoint '
        "took (start-up). \"Endpoint CPU\": the endpoint's own, near the case's time would mean it bounds the case. "
        f"{_lifted(report)}{_repeats(report)}{_machine(report)}",
        "",
        "| case | records | records/s | × boto3 loop | CPU s per 100k | × boto3 loop | peak RSS (MiB) "
        "| Kinesis records per 100k | PUT payload units per 100k | user records per request | first record after (s) "
        "| endpoint CPU (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        if not r.ok:
            lines.append(f"| {r.case} | failed: {_cell(r.error)} | | | | | | | | | | |")
            continue
        rate_x = f"{r.rate / base.rate:.2f}×" if base else "–"
        cpu_x = f"{r.cpu_per_100k / base.cpu_per_100k:.2f}×" if base and base.cpu_per_100k else "–"
        kinesis = r.stats["kinesis_records"] * PER / r.records
        units = r.stats["put_payload_units"] * PER / r.records
        spread = f" ({min(r.rates):,.0f}–{max(r.rates):,.0f})" if len(r.rates) > 1 else ""
        lines.append(
            f"| {r.case} | {r.records:,} | {r.rate:,.0f}{spread} | {rate_x} | {r.cpu_per_100k:.2f} | {cpu_x} "
            f"| {r.peak_rss_mib:.0f} | {kinesis:,.0f} | {units:,.0f} | {_per_request(r.stats):,.1f} | {r.first_record_s:.2f} "
            f"| {r.stats.get('endpoint_cpu_s', 0.0):.1f} |"
        )
    lines += ["", *_throughput_verdicts(by_case), *_anomalies(results), ""]
    for case, summary in report.get("profiles", {}).items():
        lines += profile_lines(case, summary)
    return lines


def _throughput_verdicts(by_case: dict[str, CaseResult]) -> list[str]:
    base = by_case.get(BASELINE)
    if base is None:
        return ["Targets: not judged (the boto3 loop failed)."]
    verdicts = []
    plain = by_case.get("daemon")
    if plain:
        rate_x, cpu_x = plain.rate / base.rate, plain.cpu_per_100k / base.cpu_per_100k
        verdicts.append(
            f"- Unaggregated: {rate_x:.2f}× the boto3 loop's records/s (target ≥ {TARGET_RATE_X:g}×: "
            f"{_verdict(rate_x >= TARGET_RATE_X)}) at {cpu_x:.2f}× its CPU per record (target ≤ {TARGET_CPU_X:g}×: "
            f"{_verdict(cpu_x <= TARGET_CPU_X)})."
        )
    else:
        verdicts.append("- Unaggregated: not judged (the daemon case failed).")
    aggregated = by_case.get("daemon-aggregated")
    if aggregated:
        rate_x = aggregated.rate / base.rate
        # PUT units against the unaggregated daemon; the boto3 loop sends the same one record per tweet.
        reference = plain or base
        fewer = (reference.stats["put_payload_units"] / reference.records) / max(
            1e-9, aggregated.stats["put_payload_units"] / aggregated.records
        )
        verdicts.append(
            f"- Aggregated: {rate_x:.2f}× the boto3 loop (target ≥ {TARGET_AGGREGATED_RATE_X:g}×: "
            f"{_verdict(rate_x >= TARGET_AGGREGATED_RATE_X)}); {fewer:.1f}× fewer PUT payload units than "
            f"{'the unaggregated daemon' if plain else 'the boto3 loop'} (target ≥ {TARGET_UNITS_FEWER_X:g}×: "
            f"{_verdict(fewer >= TARGET_UNITS_FEWER_X)})."
        )
    else:
        verdicts.append("- Aggregated: not judged (the daemon-aggregated case failed).")
    daemons = [r for name, r in by_case.items() if name.startswith("daemon")]
    if daemons:
        peak = max(r.peak_rss_mib for r in daemons)
        verdicts.append(
            f"- Peak RSS of the daemon cases: at most {peak:.0f} MiB = {peak * MIB / 1000**2:.0f} MB (target ≤ 150 MB: "
            f"{_verdict(peak * MIB <= TARGET_RSS_BYTES)})."
        )
    ordered = by_case.get("daemon-ordered")
    if ordered and plain:
        verdicts.append(f"- `ordered: true` costs {100 * (1 - ordered.rate / plain.rate):.0f} % of the unaggregated records/s.")
    return ["Targets (issue 14), from this run:", "", *verdicts]


def _anomalies(results: list[CaseResult]) -> list[str]:
    """What a reader must know to trust a row: duplicates, dead letters, options the daemon did not know."""
    notes = []
    for r in results:
        if r.ok and r.stats.get("user_records", r.records) != r.records:
            notes.append(f"- {r.case}: the endpoint counted {r.stats['user_records']:,} user records for {r.records:,} sent.")
        if r.dead_lettered:
            notes.append(f"- {r.case}: {r.dead_lettered:,} records were dead-lettered.")
        if not r.ok and "unknown key" in r.error:
            notes.append(f"- {r.case}: the daemon under test does not know this case's option yet (exit 2), so no figures.")
    return ["", "Notes:", "", *notes] if notes else []


def throttled_lines(command: str, report: dict[str, Any], results: list[ThrottledResult]) -> list[str]:
    window = results[0].window_s if results else 0
    lines = [
        THROTTLED_HEADING,
        "",
        f"`{command.strip()}` — daemon: {report.get('daemon', 'this checkout')}. "
        "One run; the null endpoint enforces Kinesis's write limits on each of its 4 shards "
        "(1,000 records/s and 1 MiB/s over any rolling second; entries beyond are refused with "
        "ProvisionedThroughputExceededException in a 200 answer). Each case runs in its own process on the same "
        f"{report['records']:,} tweets ({report['average_bytes']:,.0f} bytes on average), each with an author of "
        f"its own so that the keys spread evenly (records per shard: {_shares(report['shard_shares'])}; the "
        "sample's 240 authors would put about 31 % on one shard and cap any in-order producer near 80 % of the "
        f"capacity), and is measured over "
        f"{window} s, from 2 s after its first accepted record. Goodput: accepted in the window as % of the "
        "4 shards' capacity (Kinesis records against 4 × 1,000/s or bytes against 4 × 1 MiB/s, whichever binds: "
        "the larger share). Throttled attempts per record: throttled entries per accepted Kinesis record over the "
        "whole run (for aggregates: aggregates refused per aggregate accepted; the user records they carried per "
        "user record delivered in the last column). The boto3 loop re-sends failed entries at once, without backoff. "
        f"{_machine(report)}",
        "",
        "| case | goodput (% of capacity) | binds | user records/s | throttled attempts per record "
        "| throttled user records per user record | requests/s | CPU s | peak RSS (MiB) |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        if not r.ok:
            lines.append(f"| {r.case} | failed: {_cell(r.error)} | | | | | | | |")
            continue
        binds = "bytes" if r.bytes_pct >= r.records_pct else "records"
        lines.append(
            f"| {r.case} | {r.capacity_pct:.1f} % | {binds} | {r.user_records_per_s:,.0f} | {r.throttled_per_record:.3f} "
            f"| {r.throttled_user_per_user:.3f} | {r.requests_per_s:.1f} | {r.cpu_s:.1f} | {r.peak_rss_mib:.0f} |"
        )
    verdicts = []
    for r in results:
        if r.ok and r.case.startswith("daemon"):
            verdicts.append(
                f"- {r.case}: {r.capacity_pct:.1f} % of capacity (target ≥ {TARGET_CAPACITY_PCT:g} %: "
                f"{_verdict(r.capacity_pct >= TARGET_CAPACITY_PCT)}), {r.throttled_per_record:.3f} throttled attempts "
                f"per record (target ≤ {TARGET_THROTTLED_PER_RECORD:g}: "
                f"{_verdict(r.throttled_per_record <= TARGET_THROTTLED_PER_RECORD)})."
            )
    lines += ["", "Targets (issue 14), from this run:", "", *(verdicts or ["- not judged (no daemon case ran)."]), ""]
    return lines


def write_throughput(path: Path, command: str, report: dict[str, Any], results: list[CaseResult]) -> None:
    replace_section(path, THROUGHPUT_HEADING, "\n".join(_wrap(throughput_lines(command, report, results))))


def write_throttled(path: Path, command: str, report: dict[str, Any], results: list[ThrottledResult]) -> None:
    replace_section(path, THROTTLED_HEADING, "\n".join(_wrap(throttled_lines(command, report, results))))


def replace_section(path: Path, heading: str, text: str) -> None:
    """Put `text` in place of the section that starts with `heading` (up to the next `## `), else append it."""
    current = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n\n"
    start = current.find(heading)
    if start == -1:
        current = current.rstrip("\n") + "\n\n" + text.rstrip("\n") + "\n"
    else:
        end = current.find("\n## ", start + 1)
        current = current[:start] + text.rstrip("\n") + "\n" + (current[end:] if end != -1 else "")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(current, encoding="utf-8")
