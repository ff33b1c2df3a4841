"""The CDK CLI's view: cdk.json's `app` command synthesizes the stack named by `-c stack=NAME`."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from infra.settings import StackSettings

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]
# One synthesis in a child process, with Node start-up: a few seconds, bounded so a hang fails the test.
SYNTH_TIMEOUT_SECONDS = 120


def test_cdk_json_app_command_synthesizes_the_named_stack(tmp_path: Path) -> None:
    """Run as the CDK CLI does (CDK_OUTDIR, CDK_CONTEXT_JSON): the assembly holds stack `demo` and its names."""
    cdk_json = json.loads((REPO_ROOT / "cdk.json").read_text())
    context = {**cdk_json.get("context", {}), "stack": "demo", "skipPip": "true"}
    env = {
        **os.environ,
        "CDK_OUTDIR": str(tmp_path),
        "CDK_CONTEXT_JSON": json.dumps(context),
        "JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION": "1",
        "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
    }
    completed = subprocess.run(  # noqa: S602 (cdk runs the app command through a shell; it is our cdk.json)
        cdk_json["app"], shell=True, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
        timeout=SYNTH_TIMEOUT_SECONDS, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert "demo" in manifest["artifacts"]
    template = json.loads((tmp_path / "demo.template.json").read_text())
    settings = StackSettings(name="demo")
    names = {r["Properties"].get("TableName") or r["Properties"].get("Name") for r in template["Resources"].values()}
    assert {settings.table_name, settings.stream_name} <= names
    assert "BootstrapVersion" in template["Parameters"]  # the real-AWS synth keeps the bootstrap check
