"""The steps a chain runs: each takes the record's object and returns it (unchanged), a new object (changed),
or DROP (filtered out); a step that cannot apply raises StepFailed (the record is dead-lettered).

Returning the very object it was given is how a step says "nothing changed": the chain then ships the
source's bytes as they were, without serialising anything.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from daemon.transforms.paths import Path, StepFailed, Tree, compile_projection, kind_of, rewrite
from sinks.base import key_text as key_text  # the sink's rule for key values; the partition_key step uses it

# A filter's verdict that the record goes no further.
DROP: Any = object()
# What a leaf edit finds where a key is absent.
_ABSENT: Any = object()

StepFn = Callable[[Any], Any]
Search = Callable[[Any], Any]


def truthy(value: Any) -> bool:
    """JMESPath's truth: false, null and empty strings, lists and objects are false; anything else (0 too) is true."""
    if value is None or value is False:
        return False
    if isinstance(value, str | list | dict):
        return bool(value)
    return True


def filter_step(search: Search) -> StepFn:
    def run(obj: Any) -> Any:
        result = search(obj)
        if result is True:  # what a comparison gives: no need to ask further
            return obj
        return obj if truthy(result) else DROP

    return run


def fields_step(tree: Tree) -> StepFn:
    projector = compile_projection(tree)

    def run(obj: Any) -> Any:
        return projector(obj, "")

    return run


def redact_step(hashed: Sequence[Path], removed: Sequence[Path], key: bytes | None) -> StepFn:
    def hash_leaf(node: dict[str, Any], name: str, where: str) -> dict[str, Any]:
        value = node.get(name)
        if value is None:
            return node  # absent or null: nothing personal to hide
        if not isinstance(value, str):
            raise StepFailed(f"{where} is {kind_of(value)}; only strings are hashed")
        assert key is not None  # compile.py loads a key whenever there are paths to hash
        copy = dict(node)
        copy[name] = hmac.new(key, value.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()
        return copy

    def remove_leaf(node: dict[str, Any], name: str, where: str) -> dict[str, Any]:
        if name not in node:
            return node
        copy = dict(node)
        del copy[name]
        return copy

    edits = [(path, hash_leaf) for path in hashed] + [(path, remove_leaf) for path in removed]

    def run(obj: Any) -> Any:
        for path, leaf in edits:
            obj = rewrite(obj, path, leaf)
        return obj

    return run


def rfc3339_now() -> str:
    """Now in UTC with milliseconds and a `Z` (2026-12-02T15:20:45.123Z), like X's created_at."""
    return datetime.fromtimestamp(time.time(), UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def set_leaf(value: Any) -> Callable[[dict[str, Any], str, str], dict[str, Any]]:
    """A leaf edit that sets `value` (and leaves an object that holds it already as it is)."""

    def leaf(node: dict[str, Any], name: str, where: str) -> dict[str, Any]:
        current = node.get(name, _ABSENT)
        if current is not _ABSENT and type(current) is type(value) and current == value:
            return node
        copy = dict(node)
        copy[name] = value
        return copy

    return leaf


def add_step(constants: Sequence[tuple[Path, Any]], source_at: Path | None, received_at: Path | None, source: str) -> StepFn:
    fixed = [(path, set_leaf(value)) for path, value in constants]
    if source_at is not None:
        fixed.append((source_at, set_leaf(source)))

    def run(obj: Any) -> Any:
        for path, leaf in fixed:
            obj = rewrite(obj, path, leaf, create=True)
        if received_at is not None:
            obj = rewrite(obj, received_at, set_leaf(rfc3339_now()), create=True)
        return obj

    return run


def envelope_step(source: str) -> StepFn:
    def run(obj: Any) -> Any:
        return {"source": source, "received_at": rfc3339_now(), "payload": obj}

    return run
