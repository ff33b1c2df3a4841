"""The durability benchmark's probes of a running daemon: its /metrics, its CPU from /proc, where its state lives."""

from __future__ import annotations

import os
import socket
import time
import urllib.request
from pathlib import Path

METRICS_POLL_S = 0.05
METRICS_TIMEOUT_S = 5.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def scrape(port: int) -> dict[str, float]:
    """The daemon's Prometheus samples by `name{labels}`."""
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=METRICS_TIMEOUT_S) as answer:
        body = answer.read().decode()
    samples: dict[str, float] = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            samples[key] = float(value)
    return samples


def total(samples: dict[str, float], name: str) -> float:
    return sum(value for key, value in samples.items() if key == name or key.startswith(name + "{"))


def by_label(samples: dict[str, float], name: str, label: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for key, value in samples.items():
        if key.startswith(name + "{") and f'{label}="' in key:
            found[key.split(f'{label}="', 1)[1].split('"', 1)[0]] = value
    return found


def settled_metrics(port: int, records: int, deadline_s: float) -> dict[str, float]:
    """Scrape until the daemon counts every record sent (its counters trail the endpoint by the answers in
    flight), or the deadline passes: then the last scrape, which the consistency check will flag."""
    give_up = time.monotonic() + deadline_s
    while True:
        samples = scrape(port)
        if total(samples, "tweet_producer_records_sent_total") >= records or time.monotonic() > give_up:
            return samples
        time.sleep(METRICS_POLL_S)


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a running process and its threads so far (None once it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Fields after the command name (which may hold spaces, inside parentheses): utime and stime are 14 and 15.
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def cpu_at(samples: list[tuple[float, float]], moment: float) -> float:
    """The CPU seconds at `moment`, linearly between the (time, cpu) samples around it."""
    before = [s for s in samples if s[0] <= moment]
    after = [s for s in samples if s[0] >= moment]
    if not before:
        return samples[0][1] if samples else 0.0
    if not after:
        return before[-1][1]
    (t0, c0), (t1, c1) = before[-1], after[0]
    return c0 if t1 == t0 else c0 + (c1 - c0) * (moment - t0) / (t1 - t0)


def file_system_of(path: Path) -> str:
    """The type of the file system holding `path` (the longest mount point above it in /proc/self/mounts)."""
    best, kind = "", "unknown"
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return kind
    resolved = str(path.resolve())
    for line in mounts:
        parts = line.split()
        inside = len(parts) >= 3 and (resolved == parts[1] or resolved.startswith(parts[1].rstrip("/") + "/"))
        if inside and len(parts[1]) >= len(best):
            best, kind = parts[1], parts[2]
    return kind
