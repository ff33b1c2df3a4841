"""The state directory failing under a real daemon (issue 16): read-only at start, and a full disk mid-run.

The tests run as root, so a chmod would not stop a write: the daemon runs in a user + mount namespace of its
own (`unshare -rm`) where a tmpfs is mounted over its state directory - remounted read-only, or so small that
a spool fills it during an endpoint outage.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon.crash_rig import (
    LAND_TIMEOUT_S,
    RestartableKinesis,
    Rig,
    kinesis,
    synthetic_records,
    synthetic_source,
    wait_stored,
)

# A failed start is over once the interpreter has imported the daemon and checked the sink (a few seconds on
# a loaded machine); far longer means it hangs or retries.
STARTUP_EXIT_S = 30.0
STARTS = 3
EXIT_STARTUP_FAILED = 1
RATE = 2000
# Records ~700 bytes: a 1 MiB tmpfs holds ~1,400 - far fewer than the outage makes (RATE x a few seconds).
TMPFS_BYTES = 1024**2
SEGMENT_BYTES = 128 * 1024
COUNT = 20_000
SEED = 1640
SOURCE = "live"
# Past the first write failure, the daemon must still be running this much later.
KEEPS_RUNNING_S = 3.0
# Once the endpoint is back, COUNT records at RATE are in the stream well within this (about 15 s here).
DRAIN_TIMEOUT_S = 30.0

needs_unshare = pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1) for a mount namespace")


@pytest.fixture
def fake() -> Iterator[RestartableKinesis]:
    with kinesis(seed=46) as stream:
        yield stream


@needs_unshare
@pytest.mark.slow
def test_a_read_only_state_directory_stops_the_start_at_once_naming_it_every_time(
    tmp_path: Path, fake: RestartableKinesis
) -> None:
    """Read-only state directory: each of 3 starts exits 1 within seconds, with startup_failed naming the directory."""
    with Rig(tmp_path, fake, synthetic_source(SOURCE, RATE, 100, SEED)) as rig:
        rig.state_dir.mkdir()
        read_only = f"mount -t tmpfs tmpfs {rig.state_dir} && mount -o remount,ro {rig.state_dir}"
        for _ in range(STARTS):
            daemon = rig.daemon(namespace=read_only).start()
            started = time.monotonic()
            assert daemon.process is not None
            try:
                code = daemon.process.wait(STARTUP_EXIT_S)
            except subprocess.TimeoutExpired:
                log = daemon.stdout_path.read_text()[-3000:]
                raise AssertionError(f"still running after {STARTUP_EXIT_S} s:\n{log}") from None
            took = time.monotonic() - started
            failures = daemon.events("startup_failed")
            assert code == EXIT_STARTUP_FAILED, daemon.stdout_path.read_text()[-3000:]
            assert len(failures) == 1 and not daemon.events("daemon_started")
            text = f"{failures[0].get('component')} {failures[0].get('error')}"
            # The state directory's own check (daemon/statedir.py: "<path>/: read-only file system (...)"), not
            # a later write into it such as the dead-letter file's.
            assert re.search(re.escape(str(rig.state_dir)) + "/?: read-only file system", text, re.IGNORECASE), failures[0]
            print(f"\nexit {code} after {took:.1f} s: {text}")
    assert fake.records() == [], "a daemon without a usable state directory sent records"


@needs_unshare
@pytest.mark.slow
def test_a_full_disk_mid_run_keeps_the_daemon_running_and_every_counted_record_reaches_the_stream(
    tmp_path: Path, fake: RestartableKinesis
) -> None:
    """Spool fills a 1 MiB state tmpfs in an outage: the daemon runs on, reports it, and delivers all records after."""
    # Before 6525c76 a commit that could not write its file (ENOSPC) freed nothing: the source blocked for good
    # (here 18,146 of 20,000 records never sent).
    spool = f"{{enabled: true, max_bytes: {64 * TMPFS_BYTES}, segment_bytes: {SEGMENT_BYTES}}}"
    with Rig(tmp_path, fake, synthetic_source(SOURCE, RATE, COUNT, SEED, spool)) as rig:
        rig.state_dir.mkdir()
        daemon = rig.daemon(namespace=f"mount -t tmpfs -o size={TMPFS_BYTES} tmpfs {rig.state_dir}").start()
        daemon.wait_for_event("daemon_started", timeout=LAND_TIMEOUT_S)
        assert fake.wait_for_user_records(RATE // 2, LAND_TIMEOUT_S), "records did not start flowing"
        fake.down()
        failure = daemon.wait_for_event("spool_write_failed", timeout=LAND_TIMEOUT_S)
        daemon.alive_for(KEEPS_RUNNING_S)
        received_in_outage = daemon.metrics()
        fake.up()
        expected = synthetic_records(RATE, COUNT, SEED)
        missing = wait_stored(fake, expected, timeout=DRAIN_TIMEOUT_S)
        assert not missing, f"{len(missing)} of {COUNT} records missing after the disk had room again"
        daemon.wait_for_event("all_sources_finished", timeout=LAND_TIMEOUT_S)
        summary = daemon.terminate()
    counts = fake.data_counts()
    print(f"\nreported: {failure}\n{summary}; {len(counts)} distinct in the stream")
    assert "space" in str(failure).lower() or "ENOSPC" in str(failure), failure
    assert received_in_outage  # the metrics endpoint answered during the failure: the daemon was serving
    assert set(counts) == expected, "something foreign in the stream"
    assert summary["received"] == COUNT and summary["sent"] == COUNT
    assert summary["lost"] == 0 and summary["dead_lettered"] == 0 and summary.get("dropped", 0) == 0

