"""YAML loading that remembers where every value came from, and `${ENV}` substitution.

Config errors must read `FILE:LINE: key: problem` (or `FILE: problem` for the whole file), so the loader
keeps a map from each value's path (e.g. ("sources", 0, "paths")) to its line in the file. Whatever bytes
the file holds, loading ends in a document or in problems, never in an exception: the file is bounded in
size, nesting, aliases and expanded values before PyYAML's recursive composer and our builder see it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

Path_ = tuple[str | int, ...]

# A config is a page of settings: these bounds are far above any real one and keep a hostile or broken
# file (a log file, /dev/zero, a billion-laughs document) from exhausting memory, CPU or the stack.
MAX_CONFIG_BYTES = 256 * 1024  # the shipped config is under 2 KiB; PyYAML reads this much in well under a second
MAX_DEPTH = 32
MAX_ALIASES = 100
MAX_VALUES = 10_000
# Values and keys quoted back in messages are cut to this many characters; whole messages to the other.
MAX_SHOWN_CHARS = 60
MAX_MESSAGE_CHARS = 400

_UTF8_BOM = b"\xef\xbb\xbf"
# Longest first: the UTF-32 LE mark begins with the UTF-16 LE one.
_OTHER_BOMS = ((b"\xff\xfe\x00\x00", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32"), (b"\xff\xfe", "UTF-16"), (b"\xfe\xff", "UTF-16"))
# What YAML 1.1 refuses in a stream, plus NEL and the Unicode line/paragraph separators: YAML counts those
# as line breaks and editors mostly do not, so allowing them would make our line numbers disagree.
_UNACCEPTABLE_TEXT = re.compile("[^\t\n\r\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
# Control characters (tab and newline aside) and lone surrogates can only arrive through escapes such as
# "\0" or through ${ENV}; in a path or a name they fail much later, far from the config line.
_UNACCEPTABLE_VALUE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_${}-]{1,60}")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")

# `${NAME}` or `${NAME:-default}`; `$${` stays a literal `${`.
_ENV_REFERENCE = re.compile(r"\$(\$)?\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

_TAG = "tag:yaml.org,2002:"
_MERGE_TAG = _TAG + "merge"
# Implicit timestamps and `=` become text: no setting is a date, and `2001-13-45` must not crash the loader.
_TEXT_TAGS = frozenset({_TAG + "str", _TAG + "timestamp", _TAG + "value"})
_TYPED_TAGS = {_TAG + "null": "null", _TAG + "bool": "boolean", _TAG + "int": "integer", _TAG + "float": "number"}
_READS_AS = {"null": "null", "boolean": "a boolean", "integer": "an integer", "number": "a number"}
_ALLOWED_TAGS = "!!str, !!int, !!float, !!bool, !!null, !!seq, !!map"


def shown(value: Any) -> str:
    """`repr(value)`, cut to MAX_SHOWN_CHARS so that a huge value cannot flood the terminal."""
    text = repr(value)
    if len(text) <= MAX_SHOWN_CHARS:
        return text
    size = f" ({len(value)} characters)" if isinstance(value, str) else ""
    return f"{text[:MAX_SHOWN_CHARS]}...{size}"


def _one_line(text: str, limit: int | None = None) -> str:
    """Escape line breaks and control characters, so that one problem stays one line, and cap the length."""
    text = _CONTROL.sub(lambda m: m.group(0).encode("unicode_escape", "backslashreplace").decode("ascii"), text)
    return text if limit is None or len(text) <= limit else text[:limit] + "..."


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a config file, located by line and dotted key when it has them."""

    file: str
    line: int | None
    key: str | None
    message: str

    def __str__(self) -> str:
        where = _one_line(self.file) + ("" if self.line is None else f":{self.line}")
        message = _one_line(self.message, MAX_MESSAGE_CHARS)
        return f"{where}: {self.key}: {message}" if self.key else f"{where}: {message}"


class ConfigError(Exception):
    """Every problem found in a config file; `str()` lists them one per line."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


def _key_text(key: str) -> str:
    # Odd keys are always unknown ones; quote them so the key field never holds spaces, colons or dots.
    if _PLAIN_KEY.fullmatch(key):
        return key
    cut = key if len(key) <= MAX_SHOWN_CHARS else key[:MAX_SHOWN_CHARS] + "..."
    return "[" + json.dumps(cut).replace(" ", "\\u0020").replace(":", "\\u003a") + "]"


def dotted(path: Path_) -> str:
    """("sources", 0, "paths") -> "sources[0].paths"; the empty path is the document itself."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            name = _key_text(part)
            text += name if not text else (name if name.startswith("[") else f".{name}")
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

    def whole_file(self, message: str) -> Problem:
        return Problem(self.file, None, None, message)


class _Stop(Exception):
    """A bound was exceeded: building stops at the first such problem (the rest would be noise)."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(str(problem))
        self.problem = problem


def load_document(path: Path) -> LocatedDocument:
    """Read and parse `path`; unreadable, oversized, non-UTF-8 and malformed files become problems."""
    doc = LocatedDocument(str(path), None)
    text = _read_text(path, doc)
    if text is None:
        return doc
    if not text.strip():
        doc.problems.append(doc.whole_file("the config file is empty; it needs at least `sources:` and `sink:`"))
        return doc
    try:
        _scan(text, doc)
        loader = yaml.SafeLoader(text)
        try:
            root = loader.get_single_node()
            if root is None:
                doc.problems.append(doc.whole_file("the config file holds only comments; it needs `sources:` and `sink:`"))
                return doc
            doc.lines[()] = root.start_mark.line + 1
            doc.data = _Builder(loader, doc).build(root, (), 1)
        finally:
            loader.dispose()
    except _Stop as stop:
        doc.problems.append(stop.problem)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = " ".join(p for p in (exc.context, exc.problem) if p) or "invalid YAML"
        doc.problems.append(Problem(doc.file, line, None, f"YAML syntax error: {problem}"))
    except yaml.YAMLError as exc:
        doc.problems.append(doc.whole_file(f"YAML error: {exc}"))
    if doc.problems:
        doc.data = None
    return doc


def _read_text(path: Path, doc: LocatedDocument) -> str | None:
    """The file as text without a UTF-8 BOM, or None with a problem recorded."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        doc.problems.append(doc.whole_file(f"cannot read the config file: {reason}"))
        return None
    if len(raw) > MAX_CONFIG_BYTES:
        doc.problems.append(doc.whole_file(f"the config file is larger than {MAX_CONFIG_BYTES} bytes; is it the right file?"))
        return None
    for bom, encoding in _OTHER_BOMS:
        if raw.startswith(bom):
            doc.problems.append(doc.whole_file(f"the config file is {encoding} text; save it as UTF-8"))
            return None
    raw = raw.removeprefix(_UTF8_BOM)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, column = _position(raw, exc.start, b"\n")
        message = f"byte 0x{raw[exc.start]:02x} at column {column} is not UTF-8; the config file must be UTF-8 text"
        doc.problems.append(Problem(doc.file, line, None, message))
        return None
    bad = _UNACCEPTABLE_TEXT.search(text)
    if bad is not None:
        line, column = _position(text, bad.start(), "\n")
        message = f"character U+{ord(bad.group()):04X} at column {column} is not allowed in a config file (is it a binary file?)"
        doc.problems.append(Problem(doc.file, line, None, message))
        return None
    return text


def _position(data: Any, index: int, newline: Any) -> tuple[int, int]:
    """1-based line and column of `index` in `data` (bytes or str)."""
    line_start = data.rfind(newline, 0, index) + 1
    return data.count(newline, 0, index) + 1, index - line_start + 1


def _scan(text: str, doc: LocatedDocument) -> None:
    """Walk the parser's events (an iterative pass) to enforce the bounds before composing recursively."""
    loader = yaml.SafeLoader(text)
    depth = documents = aliases = values = 0
    try:
        while not loader.check_event(yaml.StreamEndEvent):
            event = loader.get_event()
            line = event.start_mark.line + 1
            if isinstance(event, yaml.DocumentStartEvent):
                documents += 1
                if documents > 1:
                    raise _Stop(Problem(doc.file, line, None, "a second YAML document starts here; a config file holds one"))
            elif isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    raise _Stop(Problem(doc.file, line, None, f"nested deeper than {MAX_DEPTH} levels"))
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
            elif isinstance(event, yaml.AliasEvent):
                aliases += 1
                if aliases > MAX_ALIASES:
                    raise _Stop(Problem(doc.file, line, None, f"more than {MAX_ALIASES} aliases (*name) in one config"))
            if isinstance(event, yaml.NodeEvent):
                values += 1
                if values > MAX_VALUES:
                    raise _Stop(Problem(doc.file, line, None, f"more than {MAX_VALUES} values in one config"))
    finally:
        loader.dispose()


def _tag_text(tag: str) -> str:
    return _one_line("!!" + tag.removeprefix(_TAG) if tag.startswith(_TAG) else tag, MAX_SHOWN_CHARS)


class _Builder:
    """Turns composed nodes into plain data, recording lines and refusing what a config cannot hold."""

    def __init__(self, loader: yaml.SafeLoader, doc: LocatedDocument) -> None:
        self.loader = loader
        self.doc = doc
        self.lines = doc.lines
        self.values = 0
        self.open: set[int] = set()  # ids of the collections being built: an alias to one of them is a cycle

    def build(self, node: yaml.Node, path: Path_, depth: int) -> Any:
        line = node.start_mark.line + 1
        self.values += 1
        if self.values > MAX_VALUES:
            self._overflow(path, line, f"aliases expand the config to more than {MAX_VALUES} values")
        if depth > MAX_DEPTH:
            self._overflow(path, line, f"aliases nest the config deeper than {MAX_DEPTH} levels")
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node, path)
        if id(node) in self.open:
            raise _Stop(self._at(line, path, "an alias refers to a value that contains it (a cycle)"))
        self.open.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode) and node.tag == _TAG + "map":
                return self._mapping(node, path, depth)
            if isinstance(node, yaml.SequenceNode) and node.tag == _TAG + "seq":
                items = []
                for index, item_node in enumerate(node.value):
                    self.lines[(*path, index)] = item_node.start_mark.line + 1
                    items.append(self.build(item_node, (*path, index), depth + 1))
                return items
        finally:
            self.open.discard(id(node))
        return self._refuse_tag(node, path)

    def _overflow(self, path: Path_, line: int, message: str) -> None:
        # Aliased nodes carry their anchor's line; the top-level section being expanded is what to fix.
        top = path[:1]
        raise _Stop(self._at(self.doc.lines.get(top, line), top, message))

    def _at(self, line: int, path: Path_, message: str) -> Problem:
        return Problem(self.doc.file, line, dotted(path) if path else None, message)

    def _refuse_tag(self, node: yaml.Node, path: Path_) -> None:
        message = f"the YAML tag {_tag_text(node.tag)} is not allowed (allowed: {_ALLOWED_TAGS})"
        self.doc.problems.append(self._at(node.start_mark.line + 1, path, message))

    def _scalar(self, node: yaml.ScalarNode, path: Path_) -> Any:
        if node.tag in _TEXT_TAGS:
            return self._text(node.value, node, path)
        kind = _TYPED_TAGS.get(node.tag)
        if kind is None:
            return self._refuse_tag(node, path)
        try:
            return self.loader.construct_object(node)
        except (ValueError, KeyError, IndexError, OverflowError, yaml.YAMLError):
            # `!!int abc`, `!!bool maybe`, `!!int ""`, or an integer with more digits than Python converts.
            self.doc.problems.append(self._at(node.start_mark.line + 1, path, f"{shown(node.value)} is not a valid {kind}"))
            return None

    def _text(self, value: str, node: yaml.Node, path: Path_) -> str:
        if "${" in value:
            value = _substitute(value, path, self.doc)
        bad = _UNACCEPTABLE_VALUE.search(value)
        if bad is not None:
            message = f"contains the character U+{ord(bad.group()):04X}, which a config value may not hold"
            self.doc.problems.append(self._at(node.start_mark.line + 1, path, message))
        return value

    def _mapping(self, node: yaml.MappingNode, path: Path_, depth: int) -> dict[str, Any]:
        result: dict[str, Any] = {}
        first_line: dict[str, int] = {}
        merges: list[yaml.Node] = []
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if key_node.tag == _MERGE_TAG:
                merges.append(value_node)
                continue
            key = self._key(key_node, path)
            if key is None:
                continue
            child = (*path, key)
            if key in first_line:
                self.doc.problems.append(self._at(line, child, f"duplicate key (first on line {first_line[key]})"))
                continue
            first_line[key] = line
            self.lines[child] = line
            result[key] = self.build(value_node, child, depth + 1)
        for merge in merges:
            self._merge(merge, path, depth, result)
        return result

    def _key(self, node: yaml.Node, path: Path_) -> str | None:
        line = node.start_mark.line + 1
        if not isinstance(node, yaml.ScalarNode):
            self.doc.problems.append(self._at(line, path, "a key must be plain text, not a list or a mapping"))
            return None
        if node.tag in _TEXT_TAGS:
            key: str = node.value
            bad = _UNACCEPTABLE_VALUE.search(key)
            if bad is None:
                return key
            message = f"a key contains the character U+{ord(bad.group()):04X}, which a config may not hold"
            self.doc.problems.append(self._at(line, path, message))
            return None
        kind = _TYPED_TAGS.get(node.tag)
        if kind is None:
            self._refuse_tag(node, path)
            return None
        # YAML 1.1 reads `on:`, `yes:`, `1:` and `~:` as a boolean, number or null, never as the word typed.
        message = f"the key {node.value!r} reads as {_READS_AS[kind]}; keys are text (quote it: '{node.value}')"
        self.doc.problems.append(self._at(line, (*path, node.value), _one_line(message, MAX_MESSAGE_CHARS)))
        return None

    def _merge(self, node: yaml.Node, path: Path_, depth: int, result: dict[str, Any]) -> None:
        """`<<: *defaults` (or a list of them): keys written in the mapping win, then earlier merges."""
        sources = node.value if isinstance(node, yaml.SequenceNode) else [node]
        if not all(isinstance(source, yaml.MappingNode) for source in sources):
            message = "`<<` merges a mapping or a list of mappings (for example `<<: *defaults`)"
            self.doc.problems.append(self._at(node.start_mark.line + 1, path, message))
            return
        for source in sources:
            outer, self.lines = self.lines, {}
            try:
                merged = self.build(source, path, depth)
            finally:
                merged_lines, self.lines = self.lines, outer
            for key, value in (merged or {}).items():
                if key not in result:
                    result[key] = value
                    prefix = (*path, key)
                    self.lines.update((p, line) for p, line in merged_lines.items() if p[: len(prefix)] == prefix)


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
