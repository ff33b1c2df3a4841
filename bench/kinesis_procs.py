"""The Kinesis benchmark's processes: the null endpoint's, each case's (reaped for its CPU and peak RSS), and
the checkout whose daemon runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.kinesis_cases import REGION

REPO = Path(__file__).resolve().parents[1]
# After SIGTERM: time to shut down before SIGKILL (the daemon's own flush deadline is shorter).
STOP_TIMEOUT_S = 20.0
STOP_POLL_S = 0.02
ENDPOINT_START_TIMEOUT_S = 20.0
CONTROL_TIMEOUT_S = 30.0
# What makes a checkout's daemon differ from its commit (a bench run rewrites docs/, the bench may be edited).
DAEMON_CODE = ("cli", "daemon", "sinks", "sources", "embedded", "infra", "processor", "pyproject.toml")


class Endpoint:
    """The null Kinesis endpoint's process and its control API."""

    def __init__(self, shards: int) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.null_kinesis", "--shards", str(shards)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        assert self.process.stdout is not None
        started = time.monotonic()
        line = self.process.stdout.readline()
        if not line or time.monotonic() - started > ENDPOINT_START_TIMEOUT_S:
            self.stop()
            raise RuntimeError("the null Kinesis endpoint did not start (no URL on its first line)")
        hello = json.loads(line)
        self.url: str = hello["url"]
        self.orjson: bool = hello["orjson"]

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None, timeout: float = CONTROL_TIMEOUT_S) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method)  # noqa: S310 - our own 127.0.0.1 URL
        try:
            with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310
                return json.loads(answer.read())
        except OSError as exc:  # URLError, refused, reset, timed out
            state = f"exited {self.process.poll()}" if self.process.poll() is not None else "still running"
            raise RuntimeError(f"the null Kinesis endpoint did not answer {method} {path} ({state}): {exc}") from exc

    def reset(self, *, limits: bool, expect: int | None) -> None:
        self._call("POST", "/reset", {"limits": limits, "expect": expect})

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/stats")
        return result

    def wait(self, seconds: float) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", f"/wait?timeout={seconds}", timeout=seconds + CONTROL_TIMEOUT_S)
        return result

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class Child:
    """One case's process, reaped with os.wait4 for its CPU time and peak RSS."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path, log_stem: Path) -> None:
        self.stdout_path = log_stem.with_suffix(".stdout")
        self.stderr_path = log_stem.with_suffix(".stderr")
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=err)
        self.status: int | None = None
        self.rusage: Any = None
        self.peak_rss_kib = 0

    def sample_rss(self) -> None:
        """Keep the child's VmHWM: its own peak RSS since exec. wait4's ru_maxrss is no use for that: exec
        records the parent's high-water mark into the child's (a 300 MiB driver shows as a 300 MiB child)."""
        if self.status is not None:
            return
        try:
            status = Path(f"/proc/{self.process.pid}/status").read_text()
        except OSError:
            return
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                self.peak_rss_kib = max(self.peak_rss_kib, int(line.split()[1]))

    def exited(self) -> bool:
        """Reap the child if it ended (without blocking)."""
        if self.status is None:
            pid, status, rusage = os.wait4(self.process.pid, os.WNOHANG)
            if pid:
                self._reaped(status, rusage)
        return self.status is not None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not end within STOP_TIMEOUT_S; reaped either way."""
        self.sample_rss()
        if self.exited():
            return
        self.process.send_signal(signal.SIGTERM)
        give_up = time.monotonic() + STOP_TIMEOUT_S
        while not self.exited():
            if time.monotonic() > give_up:
                self.process.kill()
                _, status, rusage = os.wait4(self.process.pid, 0)
                self._reaped(status, rusage)
                break
            time.sleep(STOP_POLL_S)

    def _reaped(self, status: int, rusage: Any) -> None:
        self.status = os.waitstatus_to_exitcode(status)
        self.rusage = rusage
        self.process.returncode = self.status  # reaped here: Popen must not wait for it again

    def first_error(self) -> str:
        """The first line that says what went wrong: stderr's, else the first error in the JSON logs."""
        for line in self.stderr_path.read_text(errors="replace").splitlines():
            if line.strip():
                return line.strip()
        for line in self.stdout_path.read_text(errors="replace").splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and event.get("level") in ("error", "critical"):
                return line.strip()
        return "(no output)"


@dataclass(frozen=True)
class DaemonUnderTest:
    """The checkout whose daemon the daemon cases run (default: this one), and the interpreter to run it."""

    repo: Path = REPO
    python: str = sys.executable

    @classmethod
    def at(cls, repo: Path) -> DaemonUnderTest:
        venv = repo / ".venv" / "bin" / "python"
        return cls(repo.resolve(), str(venv) if venv.exists() else sys.executable)

    def describe(self) -> str:
        """`<repo> at <commit>` (with `+changes` when the daemon's code in the work tree differs from it)."""
        try:
            # The last commit that changed the daemon's code: the same daemon gives the same name.
            commit = self._git("log", "-1", "--format=%h", "--", *DAEMON_CODE)
            # Only the daemon's own code counts: a bench run rewrites docs/ and the bench may be edited.
            dirty = self._git("status", "--porcelain", "--untracked-files=no", "--", *DAEMON_CODE)
        except (OSError, subprocess.CalledProcessError):
            return str(self.repo)
        where = "this checkout" if self.repo == REPO else str(self.repo)
        return f"{where}, daemon code as of {commit}{' +changes' if dirty else ''}"

    def _git(self, *args: str) -> str:
        command = ["git", "-C", str(self.repo), *args]
        return subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()


def case_env(work: Path, daemon: DaemonUnderTest) -> dict[str, str]:
    """The environment of every case: dummy static keys, no profile, no instance metadata, repo on the path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ACCESS_KEY_ID="bench-access-key",
        AWS_SECRET_ACCESS_KEY="bench-secret-key",  # noqa: S106 - a dummy for the local endpoint
        AWS_DEFAULT_REGION=REGION,
        AWS_CONFIG_FILE=str(work / "no-aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(work / "no-aws-credentials"),
        AWS_EC2_METADATA_DISABLED="true",
        PYTHONPATH=str(daemon.repo),
        # Another checkout's daemon must not leave bytecode in it.
        PYTHONDONTWRITEBYTECODE="1",
    )
    return env
