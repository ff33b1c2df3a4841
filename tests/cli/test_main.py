"""`check-config` and `run` as real processes: a broken config file is exit 2 and FILE: lines, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from cli import main as cli_main
from cli.main import EXIT_INVALID_CONFIG, MAX_DETAIL_CHARS
from daemon.yamlsource import MAX_CONFIG_BYTES

# Generous: a refused config exits as soon as it is read, but the machine is shared.
PROCESS_TIMEOUT_SECONDS = 60.0

LAUGHS = b'l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n' + b"".join(
    f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n".encode() for i in range(1, 9)
)


def _missing(path: Path) -> None:
    """Leave the path absent."""


def _directory(path: Path) -> None:
    path.mkdir()


def _bytes(data: bytes) -> Callable[[Path], object]:
    return lambda path: path.write_bytes(data)


# (id, how to make the file, the first line expected on stderr after "FILE")
CASES = [
    ("missing", _missing, ": cannot read the config file: No such file or directory"),
    ("directory", _directory, ": cannot read the config file: Is a directory"),
    ("empty", _bytes(b""), ": the config file is empty; it needs at least `sources:` and `sink:`"),
    ("list", _bytes(b"- file\n- kinesis\n"), ": the config is a list; it must be a mapping of sections (sources:, sink:, ...)"),
    ("utf16", _bytes("\ufeffstack: x\n".encode("utf-16-le")), ": the config file is UTF-16 text; save it as UTF-8"),
    (
        "oversized",
        _bytes(b"#" * (MAX_CONFIG_BYTES + 1)),
        f": the config file is larger than {MAX_CONFIG_BYTES} bytes; is it the right file?",
    ),
    (
        "nul_byte",
        _bytes(b"stack: a\x00b\n"),
        ":1: character U+0000 at column 9 is not allowed in a config file (is it a binary file?)",
    ),
    ("billion_laughs", _bytes(LAUGHS), ":5: l4: aliases expand the config to more than 10000 values"),
]


def run_cli(command: str, config: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return subprocess.run(
        [sys.executable, "-m", "cli.main", command, "-c", str(config)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        errors="backslashreplace",
        timeout=PROCESS_TIMEOUT_SECONDS,
        check=False,
    )


@pytest.mark.parametrize("command", ["check-config", "run"])
@pytest.mark.parametrize(("make", "first_line"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_broken_file_exits_2_with_a_located_line(
    tmp_path: Path, command: str, make: Callable[[Path], object], first_line: str
) -> None:
    """The process exits 2, prints FILE: (or FILE:LINE:) problem lines and a summary, and no traceback."""
    config = tmp_path / "config.yaml"
    make(config)
    result = run_cli(command, config, tmp_path)
    assert result.returncode == EXIT_INVALID_CONFIG, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert lines == [f"{config}{first_line}", f"{config}: 1 problem(s); nothing was started"]
    assert sorted(p.name for p in tmp_path.iterdir()) == (["config.yaml"] if config.exists() else [])


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads a file whatever its mode")
def test_unreadable_permissions_exit_2(tmp_path: Path) -> None:
    """A config without read permission is `FILE: cannot read the config file: Permission denied`, exit 2."""
    config = tmp_path / "config.yaml"
    config.write_text("stack: x\n")
    config.chmod(0)
    result = run_cli("check-config", config, tmp_path)
    assert result.returncode == EXIT_INVALID_CONFIG
    assert result.stderr.splitlines()[0] == f"{config}: cannot read the config file: Permission denied"


def test_unexpected_loader_failure_is_exit_2_naming_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Should the loader ever raise something other than ConfigError, the CLI still names the file and exits 2."""

    def broken(path: Path) -> None:
        raise RuntimeError("boom\n  second line " + "x" * 1000)

    monkeypatch.setattr(cli_main, "load_config", broken)
    config = tmp_path / "config.yaml"
    assert cli_main.main(["check-config", "-c", str(config)]) == EXIT_INVALID_CONFIG
    detail = ("boom second line " + "x" * 1000)[:MAX_DETAIL_CHARS]
    assert capsys.readouterr().err == f"{config}: cannot load the config (RuntimeError: {detail}); please report this bug\n"
