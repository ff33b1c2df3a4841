"""Where a daemon case's CPU goes: py-spy attached to the running daemon, its samples summed by area.

py-spy (PyPI, optional: `pip install py-spy`) samples the process from outside, without changing it. Only
the thread holding the GIL is kept (`--gil`): the GIL is what a Python producer's threads share, and without
the option a thread waiting to get it back after a read is sampled as busy (the file source's line reader
then showed 22 % of the samples, against 4 % with it). Each sample is charged to the first frame, walking from the
thread's root towards the leaf, that is not the project's own code (a library or stdlib module: what the
project called and paid for), or, when every frame is the project's, to the project file at the leaf.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import TypedDict

REPO = Path(__file__).resolve().parents[1]
PROJECT_DIRS = ("cli", "daemon", "sinks", "sources", "embedded", "bench")
SAMPLE_RATE_HZ = 200
# After SIGINT py-spy writes its file and exits; it should take well under this.
PYSPY_STOP_TIMEOUT_S = 20.0
TOP_AREAS = 12
TOP_FUNCTIONS = 12
# Modules that only carry a thread or the main module to the project's code: never charged.
_CARRIERS = frozenset({"threading", "runpy", "<frozen runpy>", "concurrent"})
# One frame of py-spy's raw (collapsed) output: "function (path:line)".
_FRAME = re.compile(r"^(?P<function>.*?) \((?P<path>.*?)(?::\d+)?\)$")


def pyspy() -> str | None:
    """py-spy's executable, beside this interpreter or on PATH; None when it is not installed."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


class Sampler:
    """py-spy recording one process until stopped."""

    def __init__(self, executable: str, pid: int, output: Path) -> None:
        self.output = output
        self.process = subprocess.Popen(
            [executable, "record", "--pid", str(pid), "--format", "raw", "--function", "--nonblocking", "--gil",
             "--rate", str(SAMPLE_RATE_HZ), "--output", str(output)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )  # fmt: skip

    def stop(self) -> str:
        """Stop sampling (py-spy writes its file on SIGINT); returns py-spy's complaint if it failed, else ''."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            _, err = self.process.communicate(timeout=PYSPY_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _, err = self.process.communicate()
        if self.output.exists():
            return ""
        return (err or b"").decode(errors="replace").strip().splitlines()[-1:][0] if err else "py-spy wrote nothing"


def _area(path: str) -> tuple[str, bool]:
    """(name of the code's area, whether it is the project's own). py-spy shows paths relative to their
    sys.path entry (`botocore/endpoint.py`, `json/decoder.py`, `daemon/buffer.py`); absolute ones are cut so."""
    if "site-packages/" in path:
        path = path.split("site-packages/", 1)[1]
    elif path.startswith(str(REPO) + "/"):
        path = path[len(str(REPO)) + 1 :]
    else:
        path = re.sub(r"^.*/lib/python3\.\d+/", "", path)
    first = path.split("/", 1)[0]
    if first in PROJECT_DIRS:
        return path, True
    return first.removesuffix(".py") or "(unknown)", False


class ProfileSummary(TypedDict):
    samples: int
    areas: list[tuple[str, float]]  # (area, share of all samples), largest first
    functions: list[tuple[str, float]]  # (leaf function (area), share)


def summarise(raw: Path) -> ProfileSummary:
    """Samples by area (see the module docstring) and by leaf function, as shares of all samples."""
    areas: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [m for m in (_FRAME.match(f) for f in stack.split(";")) if m]
        if not frames:
            continue
        total += count
        charged = None
        for frame in frames:
            name, own = _area(frame.group("path"))
            if not own and name not in _CARRIERS:
                charged = name
                break
        if charged is None:
            charged = _area(frames[-1].group("path"))[0]
        areas[charged] += count
        leaf = frames[-1]
        leaves[f"{leaf.group('function')} ({_area(leaf.group('path'))[0]})"] += count
    return {
        "samples": total,
        "areas": [(name, count / total) for name, count in areas.most_common(TOP_AREAS)] if total else [],
        "functions": [(name, count / total) for name, count in leaves.most_common(TOP_FUNCTIONS)] if total else [],
    }


def profile_lines(case: str, summary: ProfileSummary) -> list[str]:
    areas, functions = summary["areas"], summary["functions"]
    lines = [
        f"Where `{case}`'s time holding the GIL went (py-spy `--gil`, {summary['samples']:,} samples at "
        f"{SAMPLE_RATE_HZ} Hz from its first accepted record, in a separate untimed run; `python -m bench.kinesis "
        "--profile`): each sample charged to the first library or stdlib module the project's code called "
        "(botocore includes the JSON encoding and HTTP it does), else to the project's file at the leaf.",
        "",
        "| area | share |",
        "|---|---:|",
        *(f"| {name} | {100 * share:.1f} % |" for name, share in areas),
        "",
        "| leaf function | share |",
        "|---|---:|",
        *(f"| `{name}` | {100 * share:.1f} % |" for name, share in functions),
        "",
    ]
    return lines
