"""The spool on a real, tiny file system (a 256 KiB tmpfs in a private mount namespace): a genuinely full disk."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TMPFS_BYTES = 256 * 1024
RUN_TIMEOUT_S = 120.0

# Runs inside the namespace: fills the tmpfs through the spool and reports what happened as JSON.
CHILD = r"""
import json, sys, threading, time
from pathlib import Path
import daemon.spool_reading
daemon.spool_reading.SPOOL_RETRY_S = 0.05
from tests.daemon.test_spool_support import make_spool

directory, policy, total = Path(sys.argv[1]) / "spool", sys.argv[2], int(sys.argv[3])
spool, events = make_spool(directory, fsync="batch", max_bytes=1 << 30, segment_bytes=32 * 1024, when_full=policy)
spool.open()
payload = lambda n: b"%08d" % n + b"x" * 500
stop = threading.Event()
appended = []
def appender():
    for n in range(total):
        if spool.append(payload(n), None, str(n), stop):
            appended.append(n)
thread = threading.Thread(target=appender)
seen, first = [], None
if policy == "drop_oldest":
    spool.append(payload(-1), None, "-1", stop)
    first = spool.read(1, 1.0)  # in flight: its segment must never be dropped
thread.start()
deadline = time.monotonic() + 60
while not events.write_failed and time.monotonic() < deadline:
    time.sleep(0.01)
full_at, blocked = len(appended), thread.is_alive()
if policy == "block":
    time.sleep(0.3)
    still_blocked = len(appended) == full_at and thread.is_alive()
    while thread.is_alive() or spool.stats().records:
        got = spool.read(500, 0.2)
        seen.extend(int(r.origin) for r in got)
        if got:
            spool.commit(got[-1].position)
else:
    still_blocked = None
    thread.join(60)
    seen = [int(r.origin) for r in first]
    while got := spool.read(500, 0.0):
        seen.extend(int(r.origin) for r in got)
thread.join(60)
spool.close()
print(json.dumps({"errnos": sorted({e.errno for e in events.write_failed}), "full_at": full_at, "blocked": blocked,
                  "still_blocked": still_blocked, "appended": len(appended), "seen": seen,
                  "dropped": [list(d) for d in events.dropped], "blocked_s": sum(events.blocked)}))
"""


def run_on_tmpfs(tmp_path: Path, policy: str, total: int) -> dict:  # type: ignore[type-arg]
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-rm", "true"], check=False).returncode != 0:
        pytest.skip("unshare -rm (user and mount namespaces) is not available here")
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    script = f'mount -t tmpfs -o size={TMPFS_BYTES} none "$1" && exec "$2" -c "$3" "$1" "$4" "$5"'
    done = subprocess.run(
        ["unshare", "-rm", "sh", "-c", script, "sh", str(mount), sys.executable, CHILD, policy, str(total)],
        cwd=REPO, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.mark.slow
def test_a_really_full_disk_blocks_the_source_and_resumes_once_commits_free_space(tmp_path: Path) -> None:
    """ENOSPC from a real tmpfs: reported, the append blocks (no record lost or torn), and resumes as commits free space."""
    errno_enospc = 28
    total = 2000  # ~1 MiB of records through a 256 KiB disk
    result = run_on_tmpfs(tmp_path, "block", total)
    assert result["errnos"] == [errno_enospc]
    assert result["blocked"] and result["still_blocked"]
    assert result["full_at"] * 508 < TMPFS_BYTES
    assert result["appended"] == total
    assert result["seen"] == list(range(total))
    assert result["blocked_s"] > 0.2


@pytest.mark.slow
def test_a_really_full_disk_under_drop_oldest_drops_the_oldest_unread(tmp_path: Path) -> None:
    """ENOSPC from a real tmpfs under drop_oldest: appends go on, unread segments are dropped oldest first and counted."""
    total = 3000
    result = run_on_tmpfs(tmp_path, "drop_oldest", total)
    assert result["appended"] == total
    seen, dropped = result["seen"], result["dropped"]
    assert seen[0] == -1 and seen == sorted(set(seen)) and seen[-1] == total - 1
    assert dropped
    assert len(seen) - 1 + sum(count for count, _, _ in dropped) == total
    missing = sorted(set(range(total)) - set(seen))
    assert [n for _, lo, hi in dropped for n in range(int(lo), int(hi) + 1)] == missing
