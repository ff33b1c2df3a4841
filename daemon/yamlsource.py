"""YAML loading that remembers where every value came from, and `${ENV}` substitution.

Config errors must read `FILE:LINE: key: problem`, so the loader keeps a map from each value's path
(e.g. ("sources", 0, "paths")) to its line in the file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

Path_ = tuple[str | int, ...]

# `${NAME}` or `${NAME:-default}`; `$${` stays a literal `${`.
_ENV_REFERENCE = re.compile(r"\$(\$)?\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a config file, located by line and dotted key."""

    file: str
    line: int
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.key}: {self.message}"


class ConfigError(Exception):
    """Every problem found in a config file; `str()` lists them one per line."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


def dotted(path: Path_) -> str:
    """("sources", 0, "paths") -> "sources[0].paths"; the empty path is the document itself."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(document)"


@dataclass
class LocatedDocument:
    """A parsed YAML document plus the line (1-based) of every key and sequence item in it."""

    file: str
    data: Any
    lines: dict[Path_, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    def line_of(self, path: Path_) -> int:
        """The line of `path`, or of its nearest ancestor present in the file (for missing keys)."""
        for end in range(len(path), -1, -1):
            line = self.lines.get(path[:end])
            if line is not None:
                return line
        return 1

    def problem(self, path: Path_, message: str) -> Problem:
        return Problem(self.file, self.line_of(path), dotted(path), message)


def load_document(path: Path) -> LocatedDocument:
    """Read and parse `path`; unreadable files and YAML syntax errors become problems, not exceptions."""
    name = str(path)
    doc = LocatedDocument(name, None)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        doc.problems.append(Problem(name, 1, "(file)", f"cannot read the config file: {reason}"))
        return doc
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            doc.data = {}
            return doc
        doc.lines[()] = root.start_mark.line + 1
        doc.data = _build(loader, root, (), doc)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        problem = " ".join(p for p in (exc.context, exc.problem) if p) or "invalid YAML"
        doc.problems.append(Problem(name, line, "(yaml)", f"YAML syntax error: {problem}"))
    except yaml.YAMLError as exc:
        doc.problems.append(Problem(name, 1, "(yaml)", f"YAML error: {exc}"))
    finally:
        loader.dispose()
    return doc


def _build(loader: yaml.SafeLoader, node: yaml.Node, path: Path_, doc: LocatedDocument) -> Any:
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)  # resolves `<<` merge keys
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            child = (*path, key if isinstance(key, str | int) else str(key))
            line = key_node.start_mark.line + 1
            if key in result:
                doc.problems.append(Problem(doc.file, line, dotted(child), "duplicate key"))
            doc.lines[child] = line
            result[key] = _build(loader, value_node, child, doc)
        return result
    if isinstance(node, yaml.SequenceNode):
        items = []
        for index, item_node in enumerate(node.value):
            child = (*path, index)
            doc.lines[child] = item_node.start_mark.line + 1
            items.append(_build(loader, item_node, child, doc))
        return items
    value = loader.construct_object(node, deep=True)
    if isinstance(value, str) and "${" in value:
        value = _substitute(value, path, doc)
    return value


def _substitute(value: str, path: Path_, doc: LocatedDocument, environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ

    def replace(match: re.Match[str]) -> str:
        escaped, name, default = match.groups()
        if escaped:
            return match.group(0)[1:]
        if name in env:
            return env[name]
        if default is not None:
            return default
        doc.problems.append(doc.problem(path, f"environment variable {name} is not set"))
        return ""

    return _ENV_REFERENCE.sub(replace, value)
