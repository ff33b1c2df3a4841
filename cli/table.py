"""`tweet-producer table`: the items of the stack's EventData table, embedded or on AWS."""

from __future__ import annotations

import json
import sys
from decimal import Decimal
from typing import Any, TextIO

import boto3
from boto3.dynamodb.types import TypeDeserializer
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

from daemon.config import Config, split_listen
from infra.settings import StackSettings

_MESSAGE_WIDTH = 60
_SCAN_PAGE_SIZE = 1000


class TableUnavailable(Exception):
    """The table cannot be read; the message says why and what to do."""


def _client(config: Config, profile: str | None) -> tuple[Any, str]:
    if config.embedded.enabled:
        from embedded.endpoint import embedded_client

        host, port = split_listen(config.embedded.listen)
        url = f"http://{host}:{port}"
        return embedded_client("dynamodb", url, config.embedded.region), url
    # The producer's own profile may only put records (least privilege); reading needs another profile.
    session = boto3.Session(
        profile_name=profile or getattr(config.sink, "profile", None), region_name=getattr(config.sink, "region", None)
    )
    return session.client("dynamodb", endpoint_url=getattr(config.sink, "endpoint_url", None)), "aws"


def read_items(config: Config, limit: int | None, profile: str | None = None) -> list[dict[str, Any]]:
    client, where = _client(config, profile)
    table = StackSettings(name=config.stack).table_name
    deserializer = TypeDeserializer()
    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"TableName": table, "Limit": _SCAN_PAGE_SIZE}
    try:
        while limit is None or len(items) < limit:
            page = client.scan(**kwargs)
            items.extend({k: deserializer.deserialize(v) for k, v in item.items()} for item in page["Items"])
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    except EndpointConnectionError as exc:
        hint = "is `tweet-producer run` running?" if where != "aws" else "check the region and network"
        raise TableUnavailable(f"cannot reach {where}: {hint} ({exc})") from exc
    except ClientError as exc:
        error = exc.response.get("Error", {})
        hint = (
            " (the producer's profile cannot read the table: pass --profile)"
            if error.get("Code") == "AccessDeniedException"
            else ""
        )
        raise TableUnavailable(
            f"cannot read table {table} at {where}: {error.get('Code')}: {error.get('Message')}{hint}"
        ) from exc
    except BotoCoreError as exc:
        raise TableUnavailable(f"cannot read table {table} at {where}: {exc}") from exc
    items.sort(key=lambda i: (str(i.get("Username", "")), str(i.get("Id", ""))))
    return items[:limit] if limit is not None else items


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, set):
        return sorted(_plain(v) for v in value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def print_items(items: list[dict[str, Any]], as_json: bool, out: TextIO = sys.stdout) -> None:
    if as_json:
        json.dump([_plain(i) for i in items], out, ensure_ascii=False, indent=1)
        out.write("\n")
        return
    row = "{:<25} {:<20} {:<20} {}\n"
    out.write(row.format("Timestamp", "Username", "Id", "Message"))
    for item in items:
        message = " ".join(str(item.get("Message", "")).split())
        if len(message) > _MESSAGE_WIDTH:
            message = message[: _MESSAGE_WIDTH - 1] + "…"
        out.write(row.format(str(item.get("Timestamp", "")), str(item.get("Username", "")), str(item.get("Id", "")), message))
    out.write(f"{len(items)} item(s)\n")
