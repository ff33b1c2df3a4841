"""`tweet-producer table`: lists the EventData items of the embedded stack, and explains when it cannot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli.main import EXIT_FAILED, main
from embedded.endpoint import EmbeddedEndpoint, embedded_client
from embedded.resources import create_resources
from infra.settings import StackSettings
from tests.conftest import free_port

pytestmark = pytest.mark.slow


def config_for(tmp_path: Path, port: int) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(
        f"embedded:\n  listen: 127.0.0.1:{port}\nsources:\n  - type: file\n    paths: [x.jsonl]\nsink:\n  type: kinesis\n",
        encoding="utf-8",
    )
    return path


def test_lists_items_as_json_and_text(
    tmp_path: Path, embedded_endpoint: EmbeddedEndpoint, capsys: pytest.CaptureFixture[str]
) -> None:
    """Items come back whole (non-Latin text intact) as JSON, and as one line each plus a count as text."""
    settings = StackSettings()
    c = {s: embedded_client(s, embedded_endpoint.url, "us-east-1") for s in ("kinesis", "dynamodb", "sqs")}
    create_resources(settings, region="us-east-1", **c)
    for n, text in enumerate(["مرحبا بالعالم", "こんにちは 🚀", "hello"]):
        item = {
            "Username": {"S": f"user{n}"},
            "Id": {"S": str(n)},
            "Message": {"S": text},
            "Timestamp": {"S": "2026-11-01T00:00:00.000Z"},
        }
        c["dynamodb"].put_item(TableName=settings.table_name, Item=item)
    config = config_for(tmp_path, embedded_endpoint.port)

    assert main(["table", "-c", str(config), "--json"]) == 0
    items = json.loads(capsys.readouterr().out)
    assert [i["Message"] for i in items] == ["مرحبا بالعالم", "こんにちは 🚀", "hello"]

    assert main(["table", "-c", str(config), "--limit", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 4 and out[0].split() == ["Timestamp", "Username", "Id", "Message"] and out[-1] == "2 item(s)"


def test_explains_when_the_embedded_stack_is_not_running(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """With nothing listening, the command exits 1 and says to start `tweet-producer run`."""
    assert main(["table", "-c", str(config_for(tmp_path, free_port()))]) == EXIT_FAILED
    assert "is `tweet-producer run` running?" in capsys.readouterr().err
