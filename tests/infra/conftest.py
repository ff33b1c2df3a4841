"""One synthesis per test session: the production stack and its local-endpoint variant, in one app."""

from __future__ import annotations

import os

# jsii starts Node when aws_cdk is imported: silence Node 20's end-of-life banner before that.
os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import boto3
import pytest
from aws_cdk.assertions import Template
from moto.server import ThreadedMotoServer

from infra.app import CONTEXT_SKIP_PIP, add_pipeline_stack, register_checks
from infra.settings import StackSettings, StreamSettings
from infra.stack import PipelineStack
from tests.infra import moto_cfn
from tests.infra.localdeploy import create_stack, publish_assets

LOCAL_STACK_ID = "local"
# moto's state is shared by every server in the process: deploy in a region no other test folder uses.
LOCAL_REGION = "ap-southeast-2"
DUMMY_KEY_ID = "AKIDTESTINFRA0000000"
DUMMY_SECRET = "dummy-secret-for-moto"  # noqa: S105 (moto accepts any credentials)
VARIANT_STACK_ID = "variant"
VARIANT_SETTINGS = StackSettings(name="variant-stack", stream=StreamSettings(shard_count=None, retention_hours=48))


@dataclass(frozen=True)
class Synthesized:
    """The cloud assembly directory and the two stacks synthesized into it."""

    outdir: Path
    stack: PipelineStack
    local_stack: PipelineStack
    variant_stack: PipelineStack  # on-demand stream, data retained on deletion

    def template_dict(self, stack: PipelineStack) -> dict[str, Any]:
        return json.loads((self.outdir / stack.template_file).read_text())

    def assets_manifest(self, stack: PipelineStack) -> dict[str, Any]:
        return json.loads((self.outdir / f"{stack.artifact_id}.assets.json").read_text())


@pytest.fixture(scope="session")
def synthesized(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    """Synthesize the app once: tests only read the result (a synth costs several seconds)."""
    outdir = tmp_path_factory.mktemp("cdk.out")
    app = cdk.App(outdir=str(outdir), context={CONTEXT_SKIP_PIP: "true"})
    register_checks(app)
    stack = add_pipeline_stack(app)
    local_stack = add_pipeline_stack(app, LOCAL_STACK_ID, local=True)
    variant_stack = PipelineStack(
        app,
        VARIANT_STACK_ID,
        settings=VARIANT_SETTINGS,
        install_requirements=False,
        retain_data=True,
    )
    app.synth()
    return Synthesized(outdir=outdir, stack=stack, local_stack=local_stack, variant_stack=variant_stack)


@dataclass(frozen=True)
class LocalAws:
    """moto's server on 127.0.0.1 and a boto3 session with dummy credentials pointed at it."""

    url: str
    region: str
    account: str
    session: boto3.Session

    def client(self, service: str) -> Any:
        return self.session.client(service, endpoint_url=self.url)


@pytest.fixture(scope="session")
def local_aws() -> Iterator[LocalAws]:
    """A ThreadedMotoServer on a free port; the server's state is process-wide, so a region of our own."""
    moto_cfn.install()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    session = boto3.Session(aws_access_key_id=DUMMY_KEY_ID, aws_secret_access_key=DUMMY_SECRET, region_name=LOCAL_REGION)
    try:
        url = f"http://{host}:{port}"
        account = session.client("sts", endpoint_url=url).get_caller_identity()["Account"]
        yield LocalAws(url=url, region=LOCAL_REGION, account=account, session=session)
    finally:
        server.stop()


@pytest.fixture(scope="session")
def deployed(synthesized: Synthesized, local_aws: LocalAws) -> dict[str, Any]:
    """The local-endpoint template deployed into moto (assets published first); its description."""
    stack = synthesized.local_stack
    publish_assets(
        synthesized.outdir,
        synthesized.assets_manifest(stack),
        local_aws.client("s3"),
        account=local_aws.account,
        region=local_aws.region,
    )
    return create_stack(local_aws.client("cloudformation"), stack.settings.name, synthesized.template_dict(stack))


@pytest.fixture(scope="session")
def settings() -> StackSettings:
    return StackSettings()


@pytest.fixture(scope="session")
def template_json(synthesized: Synthesized) -> dict[str, Any]:
    return synthesized.template_dict(synthesized.stack)


@pytest.fixture(scope="session")
def template(template_json: dict[str, Any]) -> Template:
    return Template.from_json(template_json)


@pytest.fixture(scope="session")
def resources(template_json: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(template_json["Resources"])


def of_type(resources: dict[str, dict[str, Any]], cfn_type: str) -> dict[str, dict[str, Any]]:
    """The resources of one CloudFormation type, by logical id."""
    return {lid: res for lid, res in resources.items() if res["Type"] == cfn_type}


def only(resources: dict[str, dict[str, Any]], cfn_type: str) -> tuple[str, dict[str, Any]]:
    """The single resource of `cfn_type` (fails if there are none or several)."""
    found = of_type(resources, cfn_type)
    assert len(found) == 1, f"expected one {cfn_type}, found {sorted(found)}"
    return next(iter(found.items()))
