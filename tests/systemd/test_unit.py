"""The systemd unit: valid for systemd, hardened, and stops the daemon the way the daemon expects."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from daemon.config import ShutdownConfig

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "tweet-producer.service"
# systemd-analyze's exposure score: 0 is fully locked down, 10 is no sandbox at all.
MAX_EXPOSURE = 2.0


def installed_copy(tmp_path: Path) -> Path:
    """The unit with its /opt paths pointed at this checkout's interpreter, as an installation would have."""
    executable = Path(sys.executable).parent / "tweet-producer"
    text = UNIT.read_text().replace("/opt/tweet-producer/.venv/bin/tweet-producer", str(executable))
    unit = tmp_path / UNIT.name
    unit.write_text(text)
    return unit


def test_unit_verifies_cleanly(tmp_path: Path) -> None:
    """`systemd-analyze verify` reports nothing about the unit."""
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(installed_copy(tmp_path))], capture_output=True, text=True
    )
    problems = [line for line in (result.stdout + result.stderr).splitlines() if UNIT.name in line]
    assert result.returncode == 0 and not problems, problems


def test_unit_is_sandboxed(tmp_path: Path) -> None:
    """The offline security analysis rates the unit's exposure low."""
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(installed_copy(tmp_path))],
        capture_output=True,
        text=True,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE


def test_stop_timeout_leaves_room_for_the_flush_deadline() -> None:
    """systemd waits longer than the default flush deadline before it kills the daemon, and sends SIGTERM."""
    text = UNIT.read_text()
    timeout = int(re.search(r"^TimeoutStopSec=(\d+)$", text, re.M).group(1))  # type: ignore[union-attr]
    assert timeout > ShutdownConfig().flush_deadline
    assert re.search(r"^KillSignal=SIGTERM$", text, re.M)


def test_reload_sends_sighup_to_the_daemon() -> None:
    """`systemctl reload` signals the main process with SIGHUP (tests/daemon/test_reload.py: the daemon reloads on it)."""
    text = UNIT.read_text()
    assert re.search(r"^ExecReload=/bin/kill -HUP \$MAINPID$", text, re.M)
