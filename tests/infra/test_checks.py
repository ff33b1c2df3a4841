"""Static checks of the synthesized templates: cdk-nag AwsSolutions and cfn-lint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_sqs as sqs
from cfnlint.api import lint_file

from infra.app import register_checks
from tests.infra.conftest import Synthesized

NAG_PLUGIN = "AwsSolutions"


@pytest.fixture(scope="module")
def nag_report(synthesized: Synthesized) -> dict[str, Any]:
    report: dict[str, Any] = json.loads((synthesized.outdir / "validation-report.json").read_text())
    return report


def _plugin(report: dict[str, Any]) -> dict[str, Any]:
    reports = [r for r in report["pluginReports"] if r["pluginName"] == NAG_PLUGIN]
    assert len(reports) == 1, "the AwsSolutions pack did not run"
    return reports[0]


def test_cdk_nag_reports_no_unacknowledged_finding(nag_report: dict[str, Any]) -> None:
    """cdk-nag's AwsSolutions pack ran over the app and every finding is acknowledged."""
    plugin = _plugin(nag_report)
    assert plugin["violations"] == []
    assert plugin["conclusion"] == "success"


def test_every_acknowledged_finding_has_a_reason(nag_report: dict[str, Any]) -> None:
    """Each suppression carries a written reason of substance, and only the reviewed rules are suppressed."""
    suppressed = _plugin(nag_report)["suppressedViolations"]
    assert suppressed, "expected the reviewed acknowledgments to show up in the report"
    for finding in suppressed:
        assert len(finding.get("reason", "")) > 40, finding["ruleName"]
    assert {f["ruleName"] for f in suppressed} == {"AwsSolutions-KDS3", "AwsSolutions-SQS3", "AwsSolutions-SMG4"}


def test_acknowledgments_are_written_into_the_template(template_json: dict[str, Any]) -> None:
    """The audit trail reaches the template: the suppressed resources carry cdk_nag metadata."""
    tagged = [
        rule["id"]
        for res in template_json["Resources"].values()
        for rule in res.get("Metadata", {}).get("cdk_nag", {}).get("rules_to_suppress", [])
    ]
    assert {"AwsSolutions-KDS3", "AwsSolutions-SQS3", "AwsSolutions-SMG4"} <= {t.split("::")[-1] for t in tagged}


@pytest.mark.parametrize("which", ["stack", "local_stack", "variant_stack"])
def test_cfn_lint_finds_no_error(synthesized: Synthesized, which: str) -> None:
    """cfn-lint reports no error (E-rules) on each synthesized template."""
    stack = getattr(synthesized, which)
    matches = lint_file(Path(synthesized.outdir / stack.template_file))
    errors = [f"{m.rule.id} {m.message} ({m.path})" for m in matches if m.rule.id.startswith("E")]
    assert errors == []


def test_cfn_lint_does_flag_a_broken_template(tmp_path: Path, template_json: dict[str, Any]) -> None:
    """The lint check can fail: a dangling reference in a copy of our template is reported as an error."""
    broken = json.loads(json.dumps(template_json))
    broken["Outputs"]["StreamName"]["Value"] = {"Ref": "NoSuchResource"}
    path = tmp_path / "broken.template.json"
    path.write_text(json.dumps(broken))
    assert any(m.rule.id.startswith("E") for m in lint_file(path))


def test_cdk_nag_fails_synthesis_on_an_unacknowledged_finding(tmp_path: Path) -> None:
    """The same checks stop a synth that has a finding nobody acknowledged (here: a DLQ-less queue)."""
    app = cdk.App(outdir=str(tmp_path))
    register_checks(app)
    stack = cdk.Stack(app, "nag-canary")
    sqs.Queue(stack, "Queue", enforce_ssl=True)
    with pytest.raises(RuntimeError, match=r"(?s)ValidationFailed.*AwsSolutions-SQS3"):
        app.synth()
    report = json.loads((tmp_path / "validation-report.json").read_text())
    assert "AwsSolutions-SQS3" in {v["ruleName"] for v in _plugin(report)["violations"]}
