"""The processor's environment: the same variable names as infra.settings, and clear errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

import infra.settings
from processor import config
from processor.errors import ConfigurationError
from processor.handler import handler
from tests.conftest import REPO


def test_environment_variable_names_match_the_stack_settings() -> None:
    """The processor's copies of the variable names equal infra.settings' (it deploys without infra/)."""
    assert config.ENV_TABLE_NAME == infra.settings.ENV_TABLE_NAME
    assert config.ENV_DEAD_LETTER_QUEUE_URL == infra.settings.ENV_DEAD_LETTER_QUEUE_URL
    assert config.ENV_TTL_ATTRIBUTE == infra.settings.ENV_TTL_ATTRIBUTE
    assert config.ENV_TTL_DAYS == infra.settings.ENV_TTL_DAYS
    assert infra.settings.TableSettings().ttl_attribute == config.DEFAULT_TTL_ATTRIBUTE


def test_settings_read_the_environment_the_stack_provides() -> None:
    """StackSettings.processor_environment() is exactly what the processor understands."""
    stack = infra.settings.StackSettings(name="demo")
    settings = config.ProcessorSettings.from_environ(stack.processor_environment("https://sqs.example/q"))
    assert (settings.table_name, settings.dead_letter_queue_url, settings.ttl_attribute, settings.ttl_days) == (
        "demo-EventData",
        "https://sqs.example/q",
        stack.table.ttl_attribute,
        stack.table.ttl_days,
    )


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({}, "TABLE_NAME is not set"),
        ({"TABLE_NAME": "t", "TTL_DAYS": "seven"}, "TTL_DAYS='seven' must be a whole number"),
        ({"TABLE_NAME": "t", "TTL_DAYS": "-1"}, "TTL_DAYS=-1 must be between"),
    ],
)
def test_bad_environment_is_a_configuration_error_naming_the_variable(environ: dict[str, str], message: str) -> None:
    """A missing table or a malformed TTL_DAYS stops the function with the variable's name."""
    with pytest.raises(ConfigurationError, match=message):
        config.ProcessorSettings.from_environ(environ)


def test_handler_without_a_table_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    """Misconfiguration is a function error (Lambda retries the batch), never silently skipped records."""
    monkeypatch.delenv("TABLE_NAME", raising=False)
    with pytest.raises(ConfigurationError):
        handler({"Records": []}, None)


def test_settings_from_a_mapping_ignore_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """from_environ(mapping), as the embedded stack calls it, reads the mapping only, never os.environ."""
    monkeypatch.setenv("TABLE_NAME", "from-the-process")
    monkeypatch.setenv("DEAD_LETTER_FILE", "/tmp/from-the-process.jsonl")
    settings = config.ProcessorSettings.from_environ({"TABLE_NAME": "from-the-mapping"})
    assert (settings.table_name, settings.dead_letter_file) == ("from-the-mapping", None)


def test_processor_imports_nothing_it_does_not_deploy() -> None:
    """Importing the handler loads none of daemon/, sources/, sinks/, embedded/, cli/, infra/, aws_cdk (deploys alone)."""
    code = (
        "import sys, processor.handler;"
        "outside = {'daemon', 'sources', 'sinks', 'embedded', 'cli', 'infra', 'aws_cdk'};"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in outside);"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_requirements_cover_every_third_party_import() -> None:
    """processor/requirements.txt names each package the code imports (boto3/botocore come with Lambda)."""
    requirements = (REPO / "processor" / "requirements.txt").read_text().splitlines()
    names = {line.split(">")[0].split("=")[0].strip() for line in requirements if line and not line.startswith("#")}
    assert names == {"aws-lambda-powertools", "aws-kinesis-agg", "six"}
    sources = "\n".join(p.read_text() for p in (REPO / "processor").rglob("*.py"))
    assert "aws_lambda_powertools" in sources and "aws_kinesis_agg" in sources
