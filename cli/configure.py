"""`tweet-producer configure --from-stack`: point the daemon at a deployed stack.

Reads the stack's outputs (CloudFormation DescribeStacks) and the producer's access key (Secrets Manager),
writes the key to an AWS shared-credentials file (mode 0600, profile named after the stack) and points the
config file's `sink:` at the stack's stream with that profile, turning the embedded stack off.

The config file is rewritten section by section: the top-level blocks `stack:`, `embedded:` and `sink:`
are replaced and everything else, comments included, is kept byte for byte. Comments *inside* those three
blocks are lost. If the file's layout does not allow that (flow style, anchors...), the whole file is
re-serialized and all its comments are lost; `ConfigureResult.comments_preserved` says which happened.
"""

from __future__ import annotations

import configparser
import io
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import yaml
from botocore.exceptions import BotoCoreError, ClientError

from infra import outputs
from infra.settings import STACK_NAME_PATTERN

CREDENTIALS_FILE_MODE = 0o600
CREDENTIALS_DIR_MODE = 0o700
# Stack states in which the outputs describe resources that exist and work.
USABLE_STACK_STATUSES = frozenset({"CREATE_COMPLETE", "UPDATE_COMPLETE", "UPDATE_ROLLBACK_COMPLETE", "IMPORT_COMPLETE"})
_REWRITTEN_SECTIONS = ("stack", "embedded", "sink")


class ConfigureError(Exception):
    """The stack, its secret or the config file cannot be used; the message says which and why."""


@dataclass(frozen=True)
class ConfigureResult:
    """What was written. Holds no secret: safe to print."""

    stack_name: str
    region: str
    stream_name: str
    table_name: str
    dead_letter_queue_url: str
    profile: str
    access_key_id: str
    credentials_path: Path
    config_path: Path
    comments_preserved: bool

    def summary(self) -> list[str]:
        """Human-readable lines for the CLI."""
        lines = [
            f"stack {self.stack_name} ({self.region}): stream {self.stream_name}, table {self.table_name}",
            f"credentials: profile [{self.profile}] (access key {self.access_key_id}) in {self.credentials_path} (mode 0600)",
            f"config: {self.config_path}: sink -> kinesis stream {self.stream_name}, embedded stack disabled",
            f"dead-letter queue of the processor: {self.dead_letter_queue_url}",
        ]
        if not self.comments_preserved:
            lines.append(f"note: {self.config_path} was re-serialized; its comments were lost")
        return lines


def configure_from_stack(
    stack_name: str,
    *,
    region: str | None,
    config_path: Path,
    credentials_path: Path,
    endpoint_url: str | None = None,
    profile: str | None = None,
) -> ConfigureResult:
    """Configure the daemon for `stack_name`; `profile`/`region` select the identity that reads the stack.

    `endpoint_url` (a local CloudFormation/Secrets Manager endpoint such as moto's) is also written as the
    sink's endpoint, since the stack read there is the one to ship to. Nothing is written unless the stack,
    its secret and the config file are all usable.
    """
    if not STACK_NAME_PATTERN.match(stack_name):
        raise ConfigureError(f"{stack_name!r} is not a valid stack name")
    document, text = _read_config(config_path)
    try:
        session = boto3.Session(profile_name=profile, region_name=region)
    except BotoCoreError as exc:
        raise ConfigureError(f"cannot use AWS profile {profile!r}: {exc}") from exc
    if not session.region_name:
        raise ConfigureError("no AWS region: pass --region or set AWS_REGION / a profile's region")
    stack_outputs = _stack_outputs(session, stack_name, endpoint_url)
    access_key_id, secret_access_key = _producer_key(session, stack_outputs, endpoint_url)

    _write_credentials(credentials_path, stack_name, access_key_id, secret_access_key)
    sink = _sink_section(document.get("sink"), stack_outputs, stack_name, endpoint_url)
    embedded = dict(document.get("embedded") or {})
    embedded["enabled"] = False
    comments_preserved = _write_config(config_path, text, document, {"stack": stack_name, "embedded": embedded, "sink": sink})
    return ConfigureResult(
        stack_name=stack_name,
        region=stack_outputs[outputs.OUTPUT_REGION],
        stream_name=stack_outputs[outputs.OUTPUT_STREAM_NAME],
        table_name=stack_outputs[outputs.OUTPUT_TABLE_NAME],
        dead_letter_queue_url=stack_outputs[outputs.OUTPUT_DEAD_LETTER_QUEUE_URL],
        profile=stack_name,
        access_key_id=access_key_id,
        credentials_path=credentials_path,
        config_path=config_path,
        comments_preserved=comments_preserved,
    )


def _read_config(path: Path) -> tuple[dict[str, Any], str]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigureError(f"cannot read config file {path}: {exc.strerror}") from exc
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigureError(f"{path} is not valid YAML: {exc}") from exc
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise ConfigureError(f"{path}: the config must be a mapping of sections (sources:, sink:, ...)")
    for key in ("embedded", "sink"):
        if document.get(key) is not None and not isinstance(document[key], dict):
            raise ConfigureError(f"{path}: {key}: must be a mapping")
    return document, text


def _client_error(exc: ClientError) -> str:
    error = exc.response.get("Error", {})
    return f"{error.get('Code', 'error')}: {error.get('Message', '')}"


def _stack_outputs(session: boto3.Session, stack_name: str, endpoint_url: str | None) -> dict[str, str]:
    where = f"{stack_name} in {session.region_name}"
    try:
        stacks = session.client("cloudformation", endpoint_url=endpoint_url).describe_stacks(StackName=stack_name)
    except ClientError as exc:
        raise ConfigureError(f"cannot describe stack {where}: {_client_error(exc)}") from exc
    except BotoCoreError as exc:
        raise ConfigureError(f"cannot describe stack {where}: {exc}") from exc
    stack = stacks["Stacks"][0]
    status = stack.get("StackStatus", "")
    if status not in USABLE_STACK_STATUSES:
        raise ConfigureError(f"stack {where} is {status}; deploy it first (see docs/deploy.md)")
    found = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    missing = [key for key in outputs.ALL_OUTPUTS if not found.get(key)]
    if missing:
        raise ConfigureError(
            f"stack {where} lacks the outputs {', '.join(missing)}: is it a tweet-producer stack of this version?"
        )
    return found


def _producer_key(session: boto3.Session, stack_outputs: dict[str, str], endpoint_url: str | None) -> tuple[str, str]:
    secret_arn = stack_outputs[outputs.OUTPUT_SECRET_ARN]
    try:
        response = session.client("secretsmanager", endpoint_url=endpoint_url).get_secret_value(SecretId=secret_arn)
    except ClientError as exc:
        raise ConfigureError(f"cannot read the producer secret {secret_arn}: {_client_error(exc)}") from exc
    except BotoCoreError as exc:
        raise ConfigureError(f"cannot read the producer secret {secret_arn}: {exc}") from exc
    # Never echo the secret's value in an error: say what is wrong with its shape only.
    try:
        value = json.loads(response.get("SecretString") or "")
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise ConfigureError(f"the producer secret {secret_arn} is not a JSON object")
    key_id = value.get(outputs.SECRET_KEY_ACCESS_KEY_ID)
    secret = value.get(outputs.SECRET_KEY_SECRET_ACCESS_KEY)
    if not isinstance(key_id, str) or not isinstance(secret, str) or not key_id or not secret:
        raise ConfigureError(
            f"the producer secret {secret_arn} lacks {outputs.SECRET_KEY_ACCESS_KEY_ID} or {outputs.SECRET_KEY_SECRET_ACCESS_KEY}"
        )
    if key_id != stack_outputs[outputs.OUTPUT_ACCESS_KEY_ID]:
        raise ConfigureError(
            f"the producer secret {secret_arn} holds access key {key_id}, but the stack's output "
            f"{outputs.OUTPUT_ACCESS_KEY_ID} is {stack_outputs[outputs.OUTPUT_ACCESS_KEY_ID]}: redeploy the stack"
        )
    return key_id, secret


def _write_credentials(path: Path, profile: str, access_key_id: str, secret_access_key: str) -> None:
    """Set `[profile]` in the shared-credentials file, keeping its other profiles; 0600, replaced atomically."""
    parser = configparser.RawConfigParser()
    if path.exists():
        try:
            parser.read(path, encoding="utf-8")
        except (configparser.Error, OSError) as exc:
            raise ConfigureError(f"cannot read the credentials file {path}: {exc}") from exc
    if not parser.has_section(profile):
        parser.add_section(profile)
    parser.set(profile, "aws_access_key_id", access_key_id)
    parser.set(profile, "aws_secret_access_key", secret_access_key)
    buffer = io.StringIO()
    parser.write(buffer)
    path.parent.mkdir(mode=CREDENTIALS_DIR_MODE, parents=True, exist_ok=True)
    _replace_file(path, buffer.getvalue(), CREDENTIALS_FILE_MODE)


def _replace_file(path: Path, content: str, mode: int) -> None:
    # mkstemp creates the file 0600 before anything is written into it; the mode is set before the rename
    # so the file never exists under its name with wider permissions.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _sink_section(
    current: dict[str, Any] | None, stack_outputs: dict[str, str], profile: str, endpoint_url: str | None
) -> dict[str, Any]:
    # Other keys of an existing Kinesis sink (partition key, linger, retries...) are the user's tuning: kept.
    sink = dict(current) if current and current.get("type") == "kinesis" else {"type": "kinesis"}
    sink["stream"] = stack_outputs[outputs.OUTPUT_STREAM_NAME]
    sink["region"] = stack_outputs[outputs.OUTPUT_REGION]
    sink["profile"] = profile
    if endpoint_url:
        sink["endpoint_url"] = endpoint_url
    else:
        sink.pop("endpoint_url", None)  # an embedded-stack endpoint would send AWS-bound records astray
    return sink


_TOP_LEVEL_KEY = re.compile(r"^([A-Za-z_][A-Za-z0-9_-]*)\s*:")


def _write_config(path: Path, text: str, document: dict[str, Any], changes: dict[str, Any]) -> bool:
    """Write `document` updated with `changes`; True when the file's comments outside them were kept."""
    wanted = {**document, **changes}
    rewritten = _replace_blocks(text, changes)
    try:
        # The block edit is trusted only if it parses back to exactly the document wanted.
        preserved = rewritten is not None and yaml.safe_load(rewritten) == wanted
    except yaml.YAMLError:
        preserved = False
    if not preserved:
        rewritten = yaml.safe_dump(wanted, sort_keys=False, allow_unicode=True, default_flow_style=False)
    mode = path.stat().st_mode & 0o777
    _replace_file(path, rewritten or "", mode)
    return preserved


def _replace_blocks(text: str, changes: dict[str, Any]) -> str | None:
    """Replace each top-level `key:` block of `text` named in `changes`; None if a key appears twice."""
    lines = text.splitlines(keepends=True)
    starts = [(i, m.group(1)) for i, line in enumerate(lines) if (m := _TOP_LEVEL_KEY.match(line))]
    names = [name for _, name in starts]
    if len(names) != len(set(names)):
        return None
    blocks: dict[str, tuple[int, int]] = {}
    for n, (start, name) in enumerate(starts):
        end = starts[n + 1][0] if n + 1 < len(starts) else len(lines)
        # Comment and blank lines just above the next key belong to it, not to this block.
        while end > start + 1 and (not lines[end - 1].strip() or lines[end - 1].lstrip().startswith("#")):
            end -= 1
        blocks[name] = (start, end)
    out = list(lines)
    appended: list[str] = []
    # Replace from the bottom up so earlier indices stay valid.
    for name in sorted(changes, key=lambda k: blocks.get(k, (-1, -1))[0], reverse=True):
        dumped = yaml.safe_dump({name: changes[name]}, sort_keys=False, allow_unicode=True, default_flow_style=False)
        if name in blocks:
            start, end = blocks[name]
            out[start:end] = [dumped]
        else:
            appended.append(dumped)
    result = "".join(out)
    if appended:
        result = result + ("" if result.endswith("\n") or not result else "\n") + "".join(reversed(appended))
    return result
