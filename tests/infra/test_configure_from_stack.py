"""`configure_from_stack` (cli/configure.py) against moto's server: the deployed stack and look-alikes."""

from __future__ import annotations

import configparser
import json
import logging
import shutil
import stat
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from cli.configure import ConfigureError, _sink_section, configure_from_stack
from infra import outputs
from infra.settings import StackSettings
from tests.infra.conftest import DUMMY_KEY_ID, DUMMY_SECRET, LocalAws

pytestmark = pytest.mark.slow

REPO_CONFIG = Path(__file__).resolve().parents[2] / "config.yaml"
# A top-level comment of the repository's config.yaml that lies outside the rewritten sections.
KEPT_COMMENT = "# Secrets never go here"


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Dummy credentials for the reading identity; no real ~/.aws file is ever read."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", DUMMY_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", DUMMY_SECRET)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    """A copy of the repository's config.yaml (embedded stack on, comments included)."""
    path = tmp_path / "config.yaml"
    shutil.copy(REPO_CONFIG, path)
    return path


def _secret(local_aws: LocalAws, deployed: dict[str, Any]) -> str:
    arn = next(o["OutputValue"] for o in deployed["Outputs"] if o["OutputKey"] == outputs.OUTPUT_SECRET_ARN)
    value: str = json.loads(local_aws.client("secretsmanager").get_secret_value(SecretId=arn)["SecretString"])[
        outputs.SECRET_KEY_SECRET_ACCESS_KEY
    ]
    return value


def _lookalike_stack(local_aws: LocalAws, name: str, secret_value: dict[str, str], **overrides: str) -> None:
    """A stack with our outputs' shape whose secret holds `secret_value` (to exercise the error paths)."""
    values = {
        outputs.OUTPUT_STREAM_NAME: f"{name}-Stream",
        outputs.OUTPUT_STREAM_ARN: f"arn:aws:kinesis:{local_aws.region}:{local_aws.account}:stream/{name}-Stream",
        outputs.OUTPUT_REGION: local_aws.region,
        outputs.OUTPUT_ACCESS_KEY_ID: "AKIDLOOKALIKE0000001",
        outputs.OUTPUT_TABLE_NAME: f"{name}-EventData",
        outputs.OUTPUT_DEAD_LETTER_QUEUE_URL: f"https://sqs.example/{name}-DeadLetter",
        **overrides,
    }
    template = {
        "Resources": {"Secret": {"Type": "AWS::SecretsManager::Secret",
                                 "Properties": {"SecretString": json.dumps(secret_value)}}},
        "Outputs": {
            **{key: {"Value": value} for key, value in values.items()},
            outputs.OUTPUT_SECRET_ARN: {"Value": {"Ref": "Secret"}},
        },
    }  # fmt: skip
    local_aws.client("cloudformation").create_stack(StackName=name, TemplateBody=json.dumps(template))


def test_writes_0600_credentials_and_points_the_sink_at_the_stack(
    deployed: dict[str, Any],
    local_aws: LocalAws,
    config_path: Path,
    tmp_path: Path,
    settings: StackSettings,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Credentials file 0600 with a profile named after the stack; sink: kinesis/stream/region/profile."""
    credentials = tmp_path / "aws" / "credentials"
    # botocore itself logs response bodies (the secret included) at DEBUG: the daemon never enables that
    # for botocore; everything at INFO and our own loggers at DEBUG are checked.
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="daemon")
    result = configure_from_stack(
        settings.name, region=local_aws.region, config_path=config_path,
        credentials_path=credentials, endpoint_url=local_aws.url,
    )  # fmt: skip
    print("\n".join(result.summary()), repr(result))
    secret = _secret(local_aws, deployed)

    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    parser = configparser.RawConfigParser()
    parser.read(credentials)
    assert parser.sections() == [settings.name]
    assert parser.get(settings.name, "aws_access_key_id") == result.access_key_id
    assert parser.get(settings.name, "aws_secret_access_key") == secret

    config = yaml.safe_load(config_path.read_text())
    assert config["stack"] == settings.name
    assert config["embedded"] == {"enabled": False, "listen": "127.0.0.1:4566"}
    assert config["sink"] == {
        "type": "kinesis", "linger": 0.2,
        "stream": settings.stream_name, "region": local_aws.region, "profile": settings.name,
        "endpoint_url": local_aws.url,
    }  # fmt: skip
    assert config["sources"] == yaml.safe_load(REPO_CONFIG.read_text())["sources"]
    assert result.comments_preserved and KEPT_COMMENT in config_path.read_text()

    captured = capsys.readouterr()
    assert secret not in captured.out + captured.err + caplog.text
    assert settings.stream_name in captured.out


def test_written_profile_really_puts_records(
    deployed: dict[str, Any],
    local_aws: LocalAws,
    config_path: Path,
    tmp_path: Path,
    settings: StackSettings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """botocore reads the written profile, and the configured stream/region accept a PutRecords call."""
    credentials = tmp_path / "credentials"
    result = configure_from_stack(
        settings.name, region=local_aws.region, config_path=config_path,
        credentials_path=credentials, endpoint_url=local_aws.url,
    )  # fmt: skip
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    sink = yaml.safe_load(config_path.read_text())["sink"]
    session = boto3.Session(profile_name=sink["profile"], region_name=sink["region"])
    assert session.get_credentials().access_key == result.access_key_id
    response = session.client("kinesis", endpoint_url=sink["endpoint_url"]).put_records(
        StreamName=sink["stream"], Records=[{"Data": b'{"id": "1"}', "PartitionKey": "a"}]
    )
    assert response["FailedRecordCount"] == 0


def test_sink_for_aws_drops_a_stale_embedded_endpoint() -> None:
    """Configured for AWS (no endpoint), an embedded endpoint_url leaves the sink; tuning keys stay."""
    sink = _sink_section(
        {"type": "kinesis", "endpoint_url": "http://127.0.0.1:4566", "linger": 0.5},
        {outputs.OUTPUT_STREAM_NAME: "s", outputs.OUTPUT_REGION: "r"},
        "p",
        None,
    )
    assert sink == {"type": "kinesis", "linger": 0.5, "stream": "s", "region": "r", "profile": "p"}


def test_existing_profiles_and_top_comments_are_kept(
    deployed: dict[str, Any],
    local_aws: LocalAws,
    tmp_path: Path,
    settings: StackSettings,
) -> None:
    """Other profiles of the credentials file survive, and so does the config's leading comment."""
    credentials = tmp_path / "credentials"
    credentials.write_text("[default]\naws_access_key_id = AKIDOTHER\naws_secret_access_key = other\n")
    config_path = tmp_path / "config.yaml"
    config_path.write_text("# mine\nsources: [{name: s, type: file, paths: [x.jsonl]}]\nsink:\n  type: kinesis\n")
    configure_from_stack(
        settings.name, region=local_aws.region, config_path=config_path,
        credentials_path=credentials, endpoint_url=local_aws.url,
    )  # fmt: skip
    parser = configparser.RawConfigParser()
    parser.read(credentials)
    assert parser.sections() == ["default", settings.name]
    assert parser.get("default", "aws_secret_access_key") == "other"
    assert yaml.safe_load(config_path.read_text())["embedded"] == {"enabled": False}
    assert config_path.read_text().startswith("# mine\n")


def test_flow_style_config_is_rewritten_whole(
    deployed: dict[str, Any],
    local_aws: LocalAws,
    tmp_path: Path,
    settings: StackSettings,
) -> None:
    """A config whose sections are not top-level blocks is re-serialized, and the result says so."""
    config_path = tmp_path / "config.yaml"
    config_path.write_text("{sources: [{name: s, type: file, paths: [x]}], sink: {type: stdout}}  # gone\n")
    result = configure_from_stack(
        settings.name, region=local_aws.region, config_path=config_path,
        credentials_path=tmp_path / "credentials", endpoint_url=local_aws.url,
    )  # fmt: skip
    assert not result.comments_preserved
    assert any("comments were lost" in line for line in result.summary())
    config = yaml.safe_load(config_path.read_text())
    assert config["sink"]["type"] == "kinesis" and "stdout" not in config_path.read_text()
    assert config["sources"] == [{"name": "s", "type": "file", "paths": ["x"]}]


def test_unknown_stack_is_an_error_and_nothing_is_written(local_aws: LocalAws, config_path: Path, tmp_path: Path) -> None:
    """A stack that does not exist fails with its name, before any file is touched."""
    before = config_path.read_text()
    credentials = tmp_path / "credentials"
    with pytest.raises(ConfigureError, match="no-such-stack"):
        configure_from_stack("no-such-stack", region=local_aws.region, config_path=config_path,
                             credentials_path=credentials, endpoint_url=local_aws.url)  # fmt: skip
    assert not credentials.exists()
    assert config_path.read_text() == before


def test_stack_without_our_outputs_is_rejected(local_aws: LocalAws, config_path: Path, tmp_path: Path) -> None:
    """A stack lacking our outputs is named with the missing keys."""
    template = {"Resources": {"Q": {"Type": "AWS::SQS::Queue"}}, "Outputs": {"StreamName": {"Value": "x"}}}
    local_aws.client("cloudformation").create_stack(StackName="foreign-stack", TemplateBody=json.dumps(template))
    with pytest.raises(ConfigureError, match=f"lacks the outputs .*{outputs.OUTPUT_SECRET_ARN}"):
        configure_from_stack("foreign-stack", region=local_aws.region, config_path=config_path,
                             credentials_path=tmp_path / "c", endpoint_url=local_aws.url)  # fmt: skip


def test_secret_for_another_key_is_rejected_without_echoing_it(local_aws: LocalAws, config_path: Path, tmp_path: Path) -> None:
    """A secret whose key id differs from the output fails, and the error never contains the secret."""
    secret = "s3cr3t-value-that-must-not-leak-0000000"  # noqa: S105 (a canary, not a credential)
    _lookalike_stack(local_aws, "mismatch-stack", {"AccessKeyId": "AKIDSOMETHINGELSE000", "SecretAccessKey": secret})
    with pytest.raises(ConfigureError, match="redeploy") as error:
        configure_from_stack("mismatch-stack", region=local_aws.region, config_path=config_path,
                             credentials_path=tmp_path / "c", endpoint_url=local_aws.url)  # fmt: skip
    assert secret not in str(error.value)
    assert not (tmp_path / "c").exists()


def test_malformed_secret_is_rejected_without_echoing_it(local_aws: LocalAws, config_path: Path, tmp_path: Path) -> None:
    """A secret without SecretAccessKey is an error naming the missing key, not its content."""
    _lookalike_stack(local_aws, "malformed-stack", {"AccessKeyId": "AKIDLOOKALIKE0000001", "Other": "leak-me-not"})
    with pytest.raises(ConfigureError, match="lacks AccessKeyId or SecretAccessKey") as error:
        configure_from_stack("malformed-stack", region=local_aws.region, config_path=config_path,
                             credentials_path=tmp_path / "c", endpoint_url=local_aws.url)  # fmt: skip
    assert "leak-me-not" not in str(error.value)


def test_missing_config_file_and_region_are_clear_errors(tmp_path: Path) -> None:
    """No config file, or no region anywhere: errors say so before AWS is called."""
    with pytest.raises(ConfigureError, match="cannot read config file"):
        configure_from_stack("tweet-producer", region="us-east-1", config_path=tmp_path / "nope.yaml",
                             credentials_path=tmp_path / "c")  # fmt: skip
    (tmp_path / "config.yaml").write_text("sink: {type: kinesis}\n")
    with pytest.raises(ConfigureError, match="no AWS region"):
        configure_from_stack("tweet-producer", region=None, config_path=tmp_path / "config.yaml",
                             credentials_path=tmp_path / "c")  # fmt: skip


def test_cli_configure_writes_a_config_that_passes_check_config(
    deployed: dict[str, Any], local_aws: LocalAws, config_path: Path, tmp_path: Path, settings: StackSettings,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`tweet-producer configure --from-stack` exits 0, prints no secret, and leaves a config check-config accepts."""
    from cli.main import main

    credentials = tmp_path / "creds"
    argv = ["configure", "--from-stack", settings.name, "--region", local_aws.region, "--endpoint-url", local_aws.url,
            "-c", str(config_path), "--credentials-file", str(credentials)]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr()
    assert settings.stream_name in out.out
    assert _secret(local_aws, deployed) not in out.out + out.err
    assert main(["check-config", "-c", str(config_path)]) == 0


def test_cli_configure_unknown_stack_exits_1_with_the_reason(local_aws: LocalAws, config_path: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown stack makes the command exit 1 with a message naming it, and writes nothing."""
    from cli.main import EXIT_FAILED, main

    before = config_path.read_text()
    argv = ["configure", "--from-stack", "no-such-stack", "--region", local_aws.region, "--endpoint-url", local_aws.url,
            "-c", str(config_path), "--credentials-file", str(tmp_path / "creds")]  # fmt: skip
    assert main(argv) == EXIT_FAILED
    assert "no-such-stack" in capsys.readouterr().err
    assert config_path.read_text() == before and not (tmp_path / "creds").exists()
