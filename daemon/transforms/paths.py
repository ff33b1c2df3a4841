"""Field paths (`data.author_id`, `includes.users[].username`): parsing, and copy-on-write edits along them.

A path is keys joined by dots; `[]` after a key says its value is a list and the rest of the path applies to
every element. Keys cannot hold `.`, `[` or `]` (X v2, Jetstream and Mastodon keys never do). `[]` may not end
a path: a path names object fields, and a list's elements are reached through the key that follows it.

Edits never change an object in place: every object on the way to a change is copied, anything else is shared.
So a step that changes nothing returns the very object it got (the chain's test for "changed"), and a source
that holds on to its parsed events (templates, caches) never sees them altered.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

_EACH = "[]"
_FORBIDDEN_IN_KEY = frozenset(".[]")
# Longest path accepted: real payloads nest under 10 deep; this only keeps a typo from becoming a deep recursion.
MAX_PATH_SEGMENTS = 32


class StepFailed(Exception):
    """A step cannot be applied to this record (the record is dead-lettered with the message)."""


@dataclass(frozen=True, slots=True)
class Segment:
    key: str
    each: bool  # the value is a list; the rest of the path applies to each element


Path = tuple[Segment, ...]


def parse_path(text: str) -> Path:
    """`text` as a path; raises ValueError saying what is wrong (never anything else)."""
    if not isinstance(text, str) or not text:
        raise ValueError("a field path must be a non-empty string such as data.author_id")
    parts = text.split(".")
    if len(parts) > MAX_PATH_SEGMENTS:
        raise ValueError(f"{text!r} has {len(parts)} keys; at most {MAX_PATH_SEGMENTS}")
    segments: list[Segment] = []
    for part in parts:
        each = part.endswith(_EACH)
        key = part[: -len(_EACH)] if each else part
        if not key:
            raise ValueError(f"{text!r} has an empty key (paths look like data.author_id or includes.users[].id)")
        if _FORBIDDEN_IN_KEY & set(key):
            raise ValueError(f"{text!r}: key {key!r} may not contain '.', '[' or ']' ('[]' only ends a list's key)")
        segments.append(Segment(key, each))
    if segments[-1].each:
        raise ValueError(f"{text!r} ends in '[]': name the key to take from each element (e.g. includes.users[].id)")
    return tuple(segments)


def kind_of(value: Any) -> str:
    """The JSON name of a value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


# A leaf edit: (the object holding the last key, that key, the dotted place for messages) -> the object, copied
# when changed, or the same object when there is nothing to do.
Leaf = Callable[[dict[str, Any], str, str], dict[str, Any]]


def rewrite(node: Any, path: Path, leaf: Leaf, create: bool = False) -> Any:
    """`node` with `leaf` applied at `path` (to every element where the path says `[]`); objects on the way are
    copied only when something under them changed. A missing (or null) step on the way means nothing to do,
    unless `create`, which makes an empty object there. Raises StepFailed where a value is not an object/list."""
    return _rewrite(node, path, 0, leaf, create, "")


def _rewrite(node: Any, path: Path, index: int, leaf: Leaf, create: bool, where: str) -> Any:
    if not isinstance(node, dict):
        raise StepFailed(f"{where.rstrip('.') or 'the record'} is {kind_of(node)}, not an object")
    segment = path[index]
    name = where + segment.key
    if index == len(path) - 1:
        return leaf(node, segment.key, name)
    child = node.get(segment.key)
    if child is None:
        if not create:
            return node
        child = {}
    if segment.each:
        if not isinstance(child, list):
            raise StepFailed(f"{name} is {kind_of(child)}, not a list")
        items: list[Any] | None = None
        for position, element in enumerate(child):
            edited = _rewrite(element, path, index + 1, leaf, create, f"{name}[{position}].")
            if edited is not element:
                if items is None:
                    items = list(child)
                items[position] = edited
        if items is None:
            return node
        new_child: Any = items
    else:
        new_child = _rewrite(child, path, index + 1, leaf, create, name + ".")
        if new_child is child:
            return node
    copy = dict(node)
    copy[segment.key] = new_child
    return copy


# --- projection (`fields`) -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Branch:
    """What to keep under one key: everything (`keep` None), or the sub-tree `keep`; `each` as in Segment."""

    each: bool
    keep: dict[str, Branch] | None


Tree = dict[str, Branch]


def projection_tree(paths: Sequence[Path]) -> Tree:
    """The paths merged into one tree (a path that keeps a whole value wins over paths below it); raises
    ValueError when one key is used both as a list (`[]`) and as an object."""
    tree: Tree = {}
    for path in paths:
        _merge(tree, path, 0)
    return tree


def _merge(tree: Tree, path: Path, index: int) -> None:
    segment = path[index]
    last = index == len(path) - 1
    found = tree.get(segment.key)
    if found is not None and found.each != segment.each:
        raise ValueError(f"{segment.key!r} is used both as a list ({segment.key}[]) and as an object")
    if last:
        tree[segment.key] = Branch(segment.each, None)
        return
    if found is not None and found.keep is None:
        return  # the whole value is kept already
    if found is None:
        found = tree[segment.key] = Branch(segment.each, {})
    assert found.keep is not None  # set just above or found with a sub-tree
    _merge(found.keep, path, index + 1)


Projector = Callable[[Any, str], Any]


def project(node: Any, tree: Tree) -> Any:
    """Only the fields of `tree` from `node` (fields absent are left out); `node` itself when nothing is left out."""
    return compile_projection(tree)(node, "")


def compile_projection(tree: Tree) -> Projector:
    """`tree` as a function (node, where) -> projected node, each level split once into the keys kept whole and
    the keys projected further, so the usual level (only whole keys) is one dict comprehension."""
    whole = frozenset(key for key, branch in tree.items() if branch.keep is None)
    nested = {key: (branch.each, compile_projection(branch.keep)) for key, branch in tree.items() if branch.keep is not None}

    def flat(node: Any, where: str) -> Any:
        if not isinstance(node, dict):
            raise StepFailed(f"{where.rstrip('.') or 'the record'} is {kind_of(node)}, not an object")
        # In the record's own key order, so a projected record reads like the original with fields left out.
        kept = {key: value for key, value in node.items() if key in whole}
        return node if len(kept) == len(node) else kept  # nothing left out: the original, not re-serialised

    if not nested:
        return flat

    def mixed(node: Any, where: str) -> Any:
        if not isinstance(node, dict):
            raise StepFailed(f"{where.rstrip('.') or 'the record'} is {kind_of(node)}, not an object")
        kept: dict[str, Any] = {}
        same = True
        for key, value in node.items():
            if key in whole:
                kept[key] = value
                continue
            found = nested.get(key)
            if found is None:
                same = False
                continue
            each, inner = found
            if value is not None:
                if each:
                    if not isinstance(value, list):
                        raise StepFailed(f"{where}{key} is {kind_of(value)}, not a list")
                    items = [e if e is None else inner(e, f"{where}{key}[{i}].") for i, e in enumerate(value)]
                    if any(a is not b for a, b in zip(items, value, strict=True)):
                        value = items
                        same = False
                else:
                    projected = inner(value, f"{where}{key}.")
                    if projected is not value:
                        value = projected
                        same = False
            kept[key] = value
        return node if same else kept

    return mixed
