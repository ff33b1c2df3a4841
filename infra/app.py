"""The CDK app: `cdk synth|deploy|destroy [-c stack=NAME]` from the repository root (see cdk.json).

Context keys (strings on the command line, booleans in cdk.json):
- `stack`: the stack name (default infra.settings.DEFAULT_STACK_NAME); every resource name derives from it.
- `retainData`: keep the table and the stream's KMS key when the stack is deleted (default false).
- `skipPip`: bundle processor/ without pip-installing its requirements (tests, offline synths).
- `localEndpoint`: synthesize for a local CloudFormation endpoint such as moto's server: no bootstrap
  version rule (it reads an SSM parameter that only a bootstrapped AWS account has); implies `skipPip`.
"""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks

from infra.settings import DEFAULT_STACK_NAME, StackSettings
from infra.stack import PipelineStack

CONTEXT_STACK = "stack"
CONTEXT_RETAIN_DATA = "retainData"
CONTEXT_SKIP_PIP = "skipPip"
CONTEXT_LOCAL_ENDPOINT = "localEndpoint"

_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no", ""}


def context_flag(scope: cdk.App | cdk.Stack, key: str) -> bool:
    """A boolean context value; anything but true/false/1/0/yes/no is an error naming the key."""
    value: Any = scope.node.try_get_context(key)
    if value is None or isinstance(value, bool):
        return bool(value)
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"context {key}={value!r} must be true or false")


def register_checks(app: cdk.App) -> None:
    """cdk-nag's AwsSolutions pack, once per app (CDK accepts validation plugins on the App only)."""
    # cdk-nag 3 is a policy-validation plugin: synth fails, and writes policy-validation-report.json into
    # the cloud assembly, when a finding is not acknowledged (infra/nag.py holds the acknowledged ones,
    # also written into each resource's Metadata as cdk_nag.rules_to_suppress).
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app, verbose=True, write_suppressions_to_cloud_formation=True))


def add_pipeline_stack(app: cdk.App, construct_id: str | None = None, *, local: bool | None = None) -> PipelineStack:
    """Add the stack the app's context describes; `local` overrides the `localEndpoint` context flag."""
    name = app.node.try_get_context(CONTEXT_STACK) or DEFAULT_STACK_NAME
    settings = StackSettings(name=str(name))
    if local is None:
        local = context_flag(app, CONTEXT_LOCAL_ENDPOINT)
    synthesizer = cdk.DefaultStackSynthesizer(generate_bootstrap_version_rule=False) if local else None
    stack = PipelineStack(
        app,
        construct_id or settings.name,
        settings=settings,
        install_requirements=not (local or context_flag(app, CONTEXT_SKIP_PIP)),
        retain_data=context_flag(app, CONTEXT_RETAIN_DATA),
        synthesizer=synthesizer,
    )
    return stack


def main() -> None:
    app = cdk.App()
    register_checks(app)
    add_pipeline_stack(app)
    app.synth()


if __name__ == "__main__":
    main()
