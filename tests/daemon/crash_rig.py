"""The harness of the crash and fault tests (tests/daemon/test_crash_*.py, test_outage.py, test_state_faults.py):
real daemon processes (`python -m cli.main run -c FILE`) restarted over one state directory, killed with
SIGKILL, against a fake Kinesis endpoint that can go down and come back on the same port.

Each run of the daemon gets a config file and a folder of its own (`run-NN/daemon.log`: its JSON log), so the
logs of every killed run stay readable; the state directory and the dead-letter file are shared by all runs.
What the tests read after a kill: the checkpoint file (`checkpoints/<source>.json`, the envelope of
daemon/checkpoints.py) and the spool (daemon/spool_segments.py's reader); outcomes are checked in the fake.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daemon import spool_segments as fmt
from tests.conftest import POLL_INTERVAL_S, REPO, DaemonProcess, free_port
from tests.fake_kinesis import FakeKinesis
from tests.fake_kinesis_http import FakeServer
from tests.fake_kinesis_types import SHUTDOWN_POLL_S

# Bounds for outcomes on a loaded 2-core machine shared with other suites; nothing here asserts speed.
START_TIMEOUT_S = 60.0
LAND_TIMEOUT_S = 120.0
# SIGTERM to exit: the flush deadline below, the sources' stop (5 s join at most) and teardown, with room.
FLUSH_DEADLINE_S = 5.0
STOP_TIMEOUT_S = FLUSH_DEADLINE_S + 30.0
# How often the RSS sampler reads /proc/PID/status.
RSS_SAMPLE_S = 0.1
DUMMY_AWS = {"AWS_ACCESS_KEY_ID": "AKIAFAKEKINESIS00001", "AWS_SECRET_ACCESS_KEY": "fake-secret"}
SHARDS = 4
# The engine paces each shard at Kinesis's 1,000 records/s; the fake enforces no limit, and these tests run
# sources at several thousand records/s, which 4 paced shards could not take.
UNPACED = "  shard_limits:\n    records_per_second: 1000000\n    bytes_per_second: 1073741824\n    adaptive: false\n"
# Short backoffs, capped at a second: after an outage the sink must find the endpoint back quickly.
QUICK_RETRY = "  retry:\n    initial_backoff: 0.05\n    max_backoff: 1.0\n"
METRIC_SPOOL_RECORDS = "tweet_producer_spool_records"


class RestartableKinesis(FakeKinesis):
    """The fake Kinesis, able to go down (listener closed, every connection reset: connecting is refused)
    and come back on the same port with everything it stored, as an endpoint outage looks to a client."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The handler class keeps the first server as the registry of open connections (a closure in
        # tests/fake_kinesis_http.serve): servers started later register theirs there too.
        self._first: FakeServer = self._server
        self._port = int(self._server.server_address[1])
        self._down = False

    def down(self) -> None:
        """Stop listening and reset every open connection."""
        assert not self._down, "already down"
        self._server.shutdown()
        self._server.server_close()
        self._first.close_connections()
        self._down = True

    def up(self) -> None:
        """Listen again on the same port (SO_REUSEADDR: ThreadingHTTPServer's default)."""
        assert self._down, "not down"
        handler: Any = self._first.RequestHandlerClass
        server = FakeServer(("127.0.0.1", self._port), handler)
        threading.Thread(target=server.serve_forever, args=(SHUTDOWN_POLL_S,), name="fake-kinesis", daemon=True).start()
        self._server = server
        self._down = False

    def close(self) -> None:
        if not self._down:
            super().close()


@dataclass
class RigDaemon(DaemonProcess):
    """A daemon process of the rig. With `namespace` (shell commands, e.g. mounting a tmpfs over the state
    directory) it runs in a user + mount namespace of its own (`unshare -rm`), set up by those commands; the
    shell then execs the daemon, so the process's pid is the daemon's."""

    namespace: str | None = None
    env: dict[str, str] = field(default_factory=dict)

    def start(self, extra_env: dict[str, str] | None = None) -> RigDaemon:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.stdout_path = self.workdir / "daemon.log"
        self._stdout = self.stdout_path.open("wb")
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | DUMMY_AWS | self.env
        command = [sys.executable, "-m", "cli.main", "run", "-c", str(self.config_path)]
        if self.namespace is not None:
            command = ["unshare", "-rm", "sh", "-c", f"{self.namespace} && exec {shlex.join(command)}"]
        self.process = subprocess.Popen(
            command, cwd=self.workdir, stdout=self._stdout, stderr=subprocess.STDOUT,
            env=env | {"PYTHONPATH": str(REPO)} | (extra_env or {}),
        )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def kill9(self) -> None:
        """SIGKILL and reap: the process dies wherever it is, with no shutdown code run."""
        assert self.process is not None
        assert self.process.poll() is None, f"the daemon had exited ({self.process.returncode}) before the kill"
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(STOP_TIMEOUT_S)
        self._stdout.close()

    def alive_for(self, seconds: float) -> None:
        """Wait `seconds` while asserting the daemon keeps running (its exit ends the wait as a failure)."""
        assert self.process is not None
        try:
            code = self.process.wait(seconds)
        except subprocess.TimeoutExpired:
            return
        raise AssertionError(f"the daemon exited ({code}) while it should run:\n{self.stdout_path.read_text()[-5000:]}")

    def events(self, name: str) -> list[dict[str, Any]]:
        return [entry for entry in self.logs() if entry.get("event") == name]

    def metric(self, prefix: str) -> float:
        """The sum of every sample whose `name{labels}` starts with `prefix`."""
        return sum(value for key, value in self.metrics().items() if key.startswith(prefix))

    def terminate(self) -> dict[str, Any]:
        """SIGTERM, exit 0, and the final totals (`shutdown_complete`)."""
        code = self.stop(signal.SIGTERM, timeout=STOP_TIMEOUT_S)
        assert code == 0, f"exit {code}:\n{self.stdout_path.read_text()[-5000:]}"
        return self.wait_for_event("shutdown_complete", timeout=1)


@dataclass
class Rig:
    """One test's daemon runs over one state directory: `start()` writes run N's config and starts it."""

    workdir: Path
    fake: FakeKinesis
    sources: str  # the `sources:` section's body (indented items)
    state: str = ""  # extra lines of the `state:` section
    extra: str = ""  # more top-level sections
    sink_extra: str = ""
    runs: list[RigDaemon] = field(default_factory=list)

    @property
    def state_dir(self) -> Path:
        return self.workdir / "state"

    def config(self, metrics_port: int) -> str:
        return f"""
sources:
{self.sources}
sink:
  type: kinesis
  stream: {self.fake.stream}
  endpoint_url: {self.fake.url}
  region: us-east-1
  linger: 0.01
{QUICK_RETRY}{UNPACED}{self.sink_extra}state:
  directory: {self.state_dir}
{self.state}shutdown:
  flush_deadline: {FLUSH_DEADLINE_S}s
{self.extra}embedded:
  enabled: false
metrics:
  listen: 127.0.0.1:{metrics_port}
log:
  format: json
"""

    def daemon(self, namespace: str | None = None, env: dict[str, str] | None = None) -> RigDaemon:
        """Run N+1's process, not started yet (`namespace`: see RigDaemon)."""
        number = len(self.runs) + 1
        metrics_port = free_port()
        config_path = self.workdir / f"config-{number:02d}.yaml"
        config_path.write_text(self.config(metrics_port), encoding="utf-8")
        daemon = RigDaemon(config_path, 0, metrics_port, self.workdir / f"run-{number:02d}", namespace=namespace, env=env or {})
        self.runs.append(daemon)
        return daemon

    def start(self, env: dict[str, str] | None = None) -> RigDaemon:
        """Start the next run and wait for `daemon_started`."""
        daemon = self.daemon(env=env).start()
        daemon.wait_for_event("daemon_started", timeout=START_TIMEOUT_S)
        return daemon

    def __enter__(self) -> Rig:
        return self

    def __exit__(self, *_exc: object) -> None:
        for daemon in self.runs:  # a failed test leaves no daemon behind
            daemon.kill()


@contextlib.contextmanager
def kinesis(seed: int) -> Iterator[RestartableKinesis]:
    """A seeded 4-shard restartable fake; its own defects must stay absent."""
    fake = RestartableKinesis(SHARDS, seed=seed)
    with fake:
        yield fake
        assert fake.stats().internal_errors == ()


# --- a deterministic live source -------------------------------------------------------------------

SYNTHETIC_START_TIME = "2026-01-01T00:00:00Z"  # fixed timestamps: the same records every run


def synthetic_source(name: str, rate: float, count: int, seed: int, spool: str = "{enabled: true}") -> str:
    """A `sources:` item: the synthetic tweet generator, deterministic, spooled (a live source's data path)."""
    return (
        f"  - name: {name}\n    type: synthetic\n    rate: {rate}\n    count: {count}\n    seed: {seed}\n"
        f'    start_time: "{SYNTHETIC_START_TIME}"\n    spool: {spool}\n'
    )


def synthetic_records(rate: float, count: int, seed: int) -> set[bytes]:
    """The records that source generates, byte for byte (the same generator, seed and timestamps)."""
    from sources.synthetic import SyntheticSourceConfig, build_kind

    config = SyntheticSourceConfig.model_validate(
        {"type": "synthetic", "rate": rate, "count": count, "seed": seed, "start_time": SYNTHETIC_START_TIME}
    )
    kind = build_kind(config)
    events = kind.events(0)
    return {kind.encode(next(events)) for _ in range(count)}


# --- the state directory, read after a kill --------------------------------------------------------


def file_safe(name: str) -> str:
    """A source name as daemon/checkpoints.py names its file: [A-Za-z0-9._-] kept, other bytes as %XX."""
    keep = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
    return "".join(chr(b) if chr(b) in keep else f"%{b:02X}" for b in name.encode())


def read_checkpoint(state_dir: Path, source: str) -> dict[str, Any] | None:
    """The saved checkpoint envelope of `source`, or None when there is none yet."""
    path = state_dir / "checkpoints" / f"{file_safe(source)}.json"
    if not path.exists():
        return None
    envelope: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    assert {"version", "source", "type", "destination", "saved_at", "state"} <= set(envelope), envelope
    return envelope


@dataclass(frozen=True)
class ReplayFile:
    """A JSON-lines file of unique records and where each line starts, to map a byte offset to a line."""

    path: Path
    lines: list[bytes]
    starts: list[int]  # byte offset of line i+1; starts[-1] = the file's size

    @classmethod
    def write(cls, path: Path, lines: list[bytes]) -> ReplayFile:
        starts = [0]
        for line in lines:
            starts.append(starts[-1] + len(line) + 1)
        path.write_bytes(b"\n".join(lines) + b"\n")
        return cls(path, lines, starts)

    def line_at(self, offset: int) -> int:
        """The 1-based number of the line starting at byte `offset` (len+1 at the end of the file)."""
        index = bisect_left(self.starts, offset)
        assert index < len(self.starts) and self.starts[index] == offset, f"offset {offset} is not at a line start"
        return index + 1

    def resume_line(self, checkpoint: dict[str, Any] | None) -> int:
        """The line a restart resumes from, as the checkpoint says (1 without one)."""
        if checkpoint is None:
            return 1
        files = checkpoint["state"]["files"]
        entries = [entry for entry in files.values() if Path(entry["path"]) == self.path]
        assert len(entries) == 1, f"one entry for {self.path} in {files}"
        return self.line_at(int(entries[0]["offset"]))


def in_flight(stored: Counter[bytes], number_of: dict[bytes, int], resume_line: int) -> int:
    """Records in the stream whose line is at or after the line a restart resumes from: they are read and
    sent again (the most duplicates one kill can make)."""
    return sum(1 for data in stored if number_of[data] >= resume_line)


@dataclass(frozen=True)
class SpoolContents:
    """The records in a spool directory's segment files: `pending` after its commit position (a restart sends
    them), `committed` at or before it (done: already delivered or dead-lettered, segment not deleted yet)."""

    pending: list[bytes]
    committed: list[bytes]


def read_spool(spool_dir: Path) -> SpoolContents:
    """Read a (dead daemon's) spool directory with the spool's own format code (daemon/spool_segments.py)."""
    commit = spool_dir / fmt.COMMIT_NAME
    committed_to = fmt.decode_commit(commit.read_bytes()) if commit.exists() else (-1, 0)
    contents = SpoolContents([], [])
    for name in sorted(p.name for p in spool_dir.iterdir()) if spool_dir.exists() else []:
        segment_id = fmt.parse_segment_name(name)
        if segment_id is None:
            continue
        with (spool_dir / name).open("rb") as handle:
            fmt.decode_header(handle.read(fmt.HEADER_BYTES), segment_id)
            for frame in fmt.FrameReader(handle, fmt.HEADER_BYTES):
                done = (segment_id, frame.end) <= committed_to
                (contents.committed if done else contents.pending).append(frame.data)
    return contents


# --- process observations -----------------------------------------------------------------------------


class RssSampler:
    """Samples a process's VmRSS (/proc/PID/status) every RSS_SAMPLE_S in a thread until stopped."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = vm_rss_bytes(self.pid)
            if rss is None:
                return
            self.samples.append(rss)
            self._stop.wait(RSS_SAMPLE_S)

    @property
    def peak(self) -> int:
        assert self.samples, "no RSS sample taken"
        return max(self.samples)


def vm_rss_bytes(pid: int) -> int | None:
    """VmRSS of a live process in bytes; None once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return None


def wait_stored(fake: FakeKinesis, expected: set[bytes], timeout: float = LAND_TIMEOUT_S) -> set[bytes]:
    """Wait until every record of `expected` is in the stream; the records still missing (empty: all there).
    Waits on the fake's cheap user-record count first and compares sets only when enough have landed."""
    give_up = time.monotonic() + timeout
    target = len(expected)
    while True:
        fake.wait_for_user_records(target, max(0.0, give_up - time.monotonic()))
        counts = fake.data_counts()  # one snapshot: missing and the next target from the same records
        missing = expected - set(counts)
        if not missing or time.monotonic() > give_up:
            return missing
        target = counts.total() + len(missing)


def settle_after_kill(fake: FakeKinesis) -> Counter[bytes]:
    """The stream's contents once a killed daemon's last requests are done: the fake takes no call and stores
    no record for a poll interval (a request the kernel had already handed over may still be stored after the
    kill; a call is counted on arrival and stored right after)."""

    def activity(f: FakeKinesis) -> tuple[int, int]:
        return f.stats().calls.total(), len(f.records())

    before = activity(fake)
    give_up = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < give_up:
        fake.wait_until(lambda f: activity(f) != before, POLL_INTERVAL_S)  # noqa: B023 - used before `before` changes
        now = activity(fake)
        if now == before:
            return fake.data_counts()
        before = now
    raise AssertionError("the fake kept taking calls after the daemon died")
