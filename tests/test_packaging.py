"""Packaging: a production install carries no embedded stack, and the daemon never needs one unless enabled."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# What only the local stand-in for AWS needs; none of it may reach a production install or process.
EMBEDDED_ONLY = ("moto", "werkzeug", "flask", "aws_lambda_powertools", "aws_kinesis_agg")
_BLOCK_EMBEDDED = f"import sys; sys.modules.update(dict.fromkeys({EMBEDDED_ONLY!r}))\n"


def _project() -> dict:  # type: ignore[type-arg]
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _BLOCK_EMBEDDED + code], cwd=cwd, capture_output=True, text=True, timeout=60, check=False,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )


def test_base_dependencies_leave_the_embedded_stack_to_its_extra() -> None:
    """`pip install .` pulls none of moto, Flask, Werkzeug or Powertools; the `embedded` extra does."""
    base = " ".join(_project()["dependencies"]).lower().replace("-", "_")
    assert not [name for name in EMBEDDED_ONLY if name in base]
    extra = " ".join(_project()["optional-dependencies"]["embedded"]).lower().replace("-", "_")
    assert "moto" in extra and "aws_lambda_powertools" in extra


def test_daemon_and_plugins_import_without_the_embedded_extra(tmp_path: Path) -> None:
    """The CLI, the daemon runtime, every source and sink load with moto and Powertools unavailable."""
    result = _python(
        "import cli.main, daemon.app, daemon.pipeline, sources, sinks\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('embedded', 'processor')))\n",
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_enabled_embedded_stack_without_its_extra_names_the_extra(tmp_path: Path) -> None:
    """With embedded.enabled and the extra missing, `run` fails start-up naming the extra to install, exit 1."""
    (tmp_path / "tweets.jsonl").write_text('{"id": "1"}\n', encoding="utf-8")
    (tmp_path / "config.yaml").write_text(
        "sources:\n  - type: file\n    paths: [tweets.jsonl]\nsink:\n  type: kinesis\nmetrics:\n  enabled: false\n"
        "log:\n  format: json\n",
        encoding="utf-8",
    )
    result = _python("from cli.main import main\nsys.exit(main(['run', '-c', 'config.yaml']))\n", tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "startup_failed" in result.stdout and "tweet-producer[embedded]" in result.stdout
    assert "Traceback" not in result.stderr
