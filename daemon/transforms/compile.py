"""A source's `transforms:` compiled once into the chain its context runs on every record.

`Chain.apply(data, event)` -> None (filtered out), or `(data, event, partition_key)`: the very `data` object
when no step changed the record (nothing re-serialised), else the changed object serialised once, compact,
UTF-8, non-ASCII text as it is. Raises TransformFailed naming the step (`transforms[1] redact: ...`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import orjson

from daemon.transforms.config import (
    AddStep,
    FieldsStep,
    FilterStep,
    PartitionKeyStep,
    RedactStep,
    SourceTransforms,
    Step,
    step_kind,
)
from daemon.transforms.expressions import Evaluate, compile_expression
from daemon.transforms.keys import KeyUnavailable, load_key
from daemon.transforms.paths import StepFailed, parse_path, projection_tree
from daemon.transforms.steps import (
    DROP,
    StepFn,
    add_step,
    envelope_step,
    fields_step,
    filter_step,
    key_text,
    redact_step,
)
from sources.parsing import Rejection, parse_json_record

REASON_TRANSFORM_FAILED = "transform_failed"
# A record the source shipped as bytes it did not parse is parsed here; sources bound their own line sizes,
# this only bounds the parse of whatever a source hands over.
MAX_PARSE_BYTES = 16 * 1024 * 1024
# The reference serialisation: compact, non-ASCII as it is, and no NaN/Infinity (not JSON).
_dumps_reference = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
_orjson_dumps = orjson.dumps
_NULL = b"null"


def serialise(obj: Any) -> bytes:
    """`obj` as compact UTF-8 JSON, non-ASCII text as it is: what json.dumps(obj, ensure_ascii=False,
    separators=(",", ":")) gives, encoded UTF-8, but through orjson (about 20x cheaper for a tweet: json.dumps alone
    cost more than half the record path). orjson differs from the reference in three ways, each sent to it:
    integers beyond 64 bits and lone surrogates make orjson raise; NaN and infinities (a 1e999 in the input) become
    `null` - so output holding `null` anywhere is written again by the reference, which refuses them. Floats may
    be spelt differently (1e16, not 1e+16): the same number, valid JSON either way."""
    try:
        data = _orjson_dumps(obj)
    except (TypeError, ValueError):  # orjson.JSONEncodeError is a TypeError
        return _dumps_reference(obj).encode("utf-8")
    if _NULL in data:
        return _dumps_reference(obj).encode("utf-8")
    return data


class TransformFailed(Exception):
    """A step could not be applied to a record: `detail` names the step and what was wrong."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class ConfigProblem(Exception):
    """A step that validated but cannot run here (its hash key is missing): `index` is the step's position."""

    def __init__(self, index: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.index = index
        self.kind = kind
        self.message = message


class Chain:
    """The compiled steps of one source; thread-safe (nothing in it changes after it was built)."""

    def __init__(self, steps: list[tuple[str, StepFn]], key: Evaluate | None, key_label: str) -> None:
        self._steps = steps
        self._key = key  # the compiled partition key expression, or None
        self._key_label = key_label

    def apply(self, data: bytes, event: Any, keyed: bool = True) -> tuple[bytes, Any, str | None] | None:
        """`keyed` False: leave the partition key for later (None): a spooled record's is read as it leaves the spool."""
        obj = event
        if obj is None:
            parsed = parse_json_record(data, MAX_PARSE_BYTES)
            if isinstance(parsed, Rejection):
                raise TransformFailed(f"transforms: the record is not JSON ({parsed.reason}: {parsed.detail})")
            obj = parsed
        original = obj
        for label, step in self._steps:
            try:
                obj = step(obj)
            except StepFailed as exc:
                raise TransformFailed(f"{label}: {exc}") from None
            except Exception as exc:  # noqa: BLE001 - an expression error at run time (a function given the wrong
                # type, jmespath's own TypeError comparing a string with a number): this record's failure, not the daemon's
                raise TransformFailed(f"{label}: {type(exc).__name__}: {exc}") from None
            if obj is DROP:
                return None
        if obj is not original:
            try:
                data = serialise(obj)
            except (ValueError, TypeError, UnicodeEncodeError, RecursionError) as exc:  # a float beyond double range, say
                raise TransformFailed(f"transforms: the changed record cannot be written as JSON ({exc})") from None
        return data, obj, self.key_of(obj) if keyed else None

    def key_of(self, obj: Any) -> str | None:
        """The partition key of a record as shipped (None: the sink's configured paths decide)."""
        if self._key is None or obj is None:
            return None
        try:
            return key_text(self._key(obj))
        except Exception as exc:  # noqa: BLE001 - as for the steps: this record's failure
            raise TransformFailed(f"{self._key_label}: {type(exc).__name__}: {exc}") from None


def compile_chain(config: SourceTransforms, source: str, environ: Mapping[str, str] | None = None) -> Chain:
    """The chain for `config`; raises ConfigProblem for a step that cannot run (a hash key that is missing)."""
    env = os.environ if environ is None else environ
    steps: list[tuple[str, StepFn]] = []
    key = None
    key_label = ""
    for index, step in enumerate(config.steps):
        label = f"transforms[{index}] {step_kind(step)}"
        if isinstance(step, PartitionKeyStep):
            key, key_label = compile_expression(step.partition_key), label
        else:
            steps.append((label, _compile_step(step, index, source, env)))
    return Chain(steps, key, key_label)


def _compile_step(step: Step, index: int, source: str, environ: Mapping[str, str]) -> StepFn:
    if isinstance(step, FilterStep):
        return filter_step(compile_expression(step.filter))
    if isinstance(step, FieldsStep):
        return fields_step(projection_tree([parse_path(p) for p in step.fields]))
    if isinstance(step, RedactStep):
        spec = step.redact
        secret = None
        if spec.hash:
            try:
                secret = load_key(spec.key_env, spec.key_file, spec.key_credential, environ)
            except KeyUnavailable as exc:
                raise ConfigProblem(index, "redact", str(exc)) from None
        return redact_step([parse_path(p) for p in spec.hash], [parse_path(p) for p in spec.remove], secret)
    if isinstance(step, AddStep):
        spec_add = step.add
        if spec_add.envelope:
            return envelope_step(source)
        return add_step(
            [(parse_path(p), value) for p, value in spec_add.fields.items()],
            None if spec_add.source is None else parse_path(spec_add.source),
            None if spec_add.received_at is None else parse_path(spec_add.received_at),
            source,
        )
    raise TypeError(f"unknown step {type(step).__name__}")  # pragma: no cover - STEP_MODELS lists every kind
