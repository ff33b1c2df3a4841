"""The `transforms:` list of a source in config.yaml: one typed model per step kind.

The models hold what the operator wrote (expression and path strings), never compiled objects, so two
configs compare by value (hot reload decides from `==` whether a source changed). Validators parse each
expression and path once, so an invalid one is a config error at its line; compile.py compiles them again
into the chain that runs (jmespath caches compiled expressions, so that costs little).

    transforms:
      - filter: "data.lang == 'en' && data.public_metrics.like_count > `10`"
      - fields: [data.id, data.text, data.author_id, data.created_at, data.lang, includes.users, matching_rules]
      - redact: {hash: [data.author_id, includes.users[].id], remove: [data.geo]}
      - add: {fields: {pipeline: x-en}, source: producer.source, received_at: producer.received_at}
      - add: {envelope: true}
      - partition_key: data.conversation_id
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import jmespath
from jmespath.exceptions import JMESPathError
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, JsonValue, model_validator

from daemon.transforms.keys import DEFAULT_KEY_CREDENTIAL, DEFAULT_KEY_ENV
from daemon.transforms.paths import parse_path, projection_tree

# Expressions longer than this are almost surely pasted by mistake, and jmespath's parser is recursive.
MAX_EXPRESSION_CHARS = 4096


def check_expression(text: str) -> str:
    """`text` if it is a JMESPath expression; raises ValueError with the parser's message."""
    if len(text) > MAX_EXPRESSION_CHARS:
        raise ValueError(f"expression of {len(text)} characters; at most {MAX_EXPRESSION_CHARS}")
    try:
        jmespath.compile(text)
    except JMESPathError as exc:
        raise ValueError(f"invalid JMESPath expression {text!r}: {_first_line(exc)}") from None
    except RecursionError:
        raise ValueError(f"invalid JMESPath expression {text!r}: nested too deep") from None
    return text


def _first_line(exc: Exception) -> str:
    # jmespath's ParseError spans three lines (message, expression, a caret); the message is what matters.
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _check_path(text: str) -> str:
    parse_path(text)
    return text


Expression = Annotated[str, AfterValidator(check_expression)]
FieldPath = Annotated[str, AfterValidator(_check_path)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FilterStep(_Model):
    filter: Expression = Field(
        description="Keep the record only when this JMESPath expression is true (not false, null, or empty)."
    )


class FieldsStep(_Model):
    fields: tuple[FieldPath, ...] = Field(min_length=1, description="Keep only these paths (projection).")

    @model_validator(mode="after")
    def _consistent(self) -> FieldsStep:
        projection_tree([parse_path(p) for p in self.fields])
        return self


class RedactSpec(_Model):
    hash: tuple[FieldPath, ...] = Field(default=(), description="Replace these string fields by HMAC-SHA256 (hex).")
    remove: tuple[FieldPath, ...] = Field(default=(), description="Remove these fields.")
    key_env: str = Field(default=DEFAULT_KEY_ENV, min_length=1, description="Environment variable holding the key.")
    key_file: Path | None = Field(default=None, description="A file holding the key (mode 0600), when the variable is unset.")
    key_credential: str = Field(
        default=DEFAULT_KEY_CREDENTIAL, min_length=1, description="systemd credential name ($CREDENTIALS_DIRECTORY/NAME)."
    )

    @model_validator(mode="after")
    def _something(self) -> RedactSpec:
        if not self.hash and not self.remove:
            raise ValueError("give hash: and/or remove: (lists of field paths)")
        return self


class RedactStep(_Model):
    redact: RedactSpec


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    return True


class AddSpec(_Model):
    fields: dict[str, JsonValue] = Field(default_factory=dict, description="path -> constant value to set.")
    source: FieldPath | None = Field(default=None, description="Set this path to the source's name.")
    received_at: FieldPath | None = Field(default=None, description="Set this path to the receive time (RFC 3339, UTC).")
    envelope: bool = Field(default=False, description="Wrap the record: {source, received_at, payload}.")

    @model_validator(mode="after")
    def _paths(self) -> AddSpec:
        for key in self.fields:
            if any(segment.each for segment in parse_path(key)):
                raise ValueError(f"fields: {key!r}: add sets one place; '[]' is not allowed here")
        for path in (self.source, self.received_at):
            if path is not None and any(segment.each for segment in parse_path(path)):
                raise ValueError(f"{path!r}: add sets one place; '[]' is not allowed here")
        for key, value in self.fields.items():
            if not _finite(value):
                raise ValueError(f"fields: {key!r}: NaN and infinities are not JSON")
        if self.envelope and (self.fields or self.source or self.received_at):
            raise ValueError("envelope: true wraps the whole record; set fields in a separate add step")
        return self


class AddStep(_Model):
    add: AddSpec


class PartitionKeyStep(_Model):
    partition_key: Expression = Field(
        description="JMESPath giving the Kinesis partition key (a string or integer); else the sink's key paths."
    )


Step = FilterStep | FieldsStep | RedactStep | AddStep | PartitionKeyStep
# The key naming a step in config.yaml -> its model.
STEP_MODELS: dict[str, type[_Model]] = {
    "filter": FilterStep,
    "fields": FieldsStep,
    "redact": RedactStep,
    "add": AddStep,
    "partition_key": PartitionKeyStep,
}


class SourceTransforms(_Model):
    """One source's steps, in order."""

    steps: tuple[Step, ...]


def step_kind(step: Any) -> str:
    """The config key of a step model (`filter`, `fields`, ...)."""
    return next(kind for kind, model in STEP_MODELS.items() if isinstance(step, model))
