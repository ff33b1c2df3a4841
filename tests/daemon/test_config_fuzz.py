"""Property: whatever a config file holds, load_config returns a Config or raises ConfigError with located lines."""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.config import Config, load_config
from daemon.yamlsource import ConfigError

REPO = Path(__file__).resolve().parents[2]
SHIPPED = (REPO / "config.yaml").read_bytes()
# Bounded so the whole suite runs in seconds on a shared 2-core machine.
EXAMPLES = 150
FUZZ_SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Keys the config knows, so that generated documents reach validation and not only "unknown key".
KNOWN_KEYS = [
    "stack", "embedded", "enabled", "listen", "region", "sources", "sink", "type", "name", "paths", "rate", "loop",
    "stream", "partition_key", "linger", "buffer", "max_records", "max_bytes", "shutdown", "flush_deadline",
    "dead_letter", "path", "metrics", "log", "level", "format", "supervision", "file", "kinesis", "<<",
]  # fmt: skip
# Fragments that exercise the loader's rules when spliced into the shipped file.
TOKENS = [
    b"\x00", b"\x07", b"\x1b", b"\t", b"\r", b"\n", b"\xef\xbb\xbf", b"\xff\xfe", b"\xe9", b"\xc2\x85", "\u2028".encode(),
    b"&a ", b"*a", b"<<: *a\n", b"!!python/object:os.system ", b"!custom ", b"!!binary ", b"!!int ", b"!!bool ",
    b"---\n", b"...\n", b"? ", b": ", b"- ", b"[", b"]", b"{", b"}", b",", b"'", b'"', b'"\\0"', b'"\\ud800"', b"#",
    b"~", b".inf", b".nan", b"2001-13-45", b"9" * 5000, b"${HOME}", b"${TP_FUZZ_UNSET}", b"on", b"1", b"  ", b"%YAML 1.1\n",
]  # fmt: skip


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    """One directory for every example (Hypothesis reuses a test's fixtures across examples)."""
    with tempfile.TemporaryDirectory(prefix="config-fuzz-") as name:
        yield Path(name)


def assert_loads_or_refuses(path: Path, data: bytes) -> None:
    """The property: a Config, or a ConfigError whose every line starts with `FILE:` or `FILE:LINE:`."""
    path.write_bytes(data)
    try:
        config = load_config(path)
    except ConfigError as exc:
        located = re.compile(rf"^{re.escape(str(path))}(:[0-9]+)?: \S")
        lines = str(exc).split("\n")
        assert exc.problems and len(lines) == len(exc.problems), lines
        assert all(located.match(line) for line in lines), lines
        assert all(p.line is None or p.line >= 1 for p in exc.problems)
        return
    assert isinstance(config, Config)


@FUZZ_SETTINGS
@given(data=st.binary(max_size=2048))
def test_arbitrary_bytes(workdir: Path, data: bytes) -> None:
    """Random bytes load or are refused with located problems."""
    assert_loads_or_refuses(workdir / "config.yaml", data)


@FUZZ_SETTINGS
@given(text=st.text(alphabet=st.characters(codec="utf-8"), max_size=400))
def test_arbitrary_text(workdir: Path, text: str) -> None:
    """Random Unicode text (more of it parses than random bytes) loads or is refused with located problems."""
    assert_loads_or_refuses(workdir / "config.yaml", text.encode("utf-8", "surrogatepass"))


_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=20),
    st.sampled_from(["file", "kinesis", "10s", "64MiB", "127.0.0.1:9477", "info", "auto", "tweet-producer"]),
)
_keys = st.one_of(st.sampled_from(KNOWN_KEYS), st.text(max_size=10))
_documents = st.recursive(
    _scalars,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(_keys, children, max_size=5)),
    max_leaves=25,
)


@FUZZ_SETTINGS
@given(document=_documents, flow=st.sampled_from([None, True, False]), unicode=st.booleans())
def test_arbitrary_yaml_documents(workdir: Path, document: Any, flow: bool | None, unicode: bool) -> None:
    """Any structure PyYAML can dump loads or is refused with located problems."""
    text = yaml.safe_dump(document, default_flow_style=flow, allow_unicode=unicode)
    assert_loads_or_refuses(workdir / "config.yaml", text.encode("utf-8", "surrogatepass"))


def _set_at(tree: Any, steps: list[int], value: Any) -> Any:
    """Replace the node reached by `steps` (each an index into a mapping's keys or a list) with `value`."""
    if not steps or not isinstance(tree, dict | list) or not tree:
        return value
    index = steps[0] % len(tree)
    if isinstance(tree, dict):
        key = list(tree)[index]
        return {**tree, key: _set_at(tree[key], steps[1:], value)}
    return [*tree[:index], _set_at(tree[index], steps[1:], value), *tree[index + 1 :]]


@FUZZ_SETTINGS
@given(steps=st.lists(st.integers(min_value=0, max_value=20), max_size=4), value=_documents)
def test_shipped_config_with_a_value_replaced(workdir: Path, steps: list[int], value: Any) -> None:
    """The shipped config with any one value (or section) swapped for arbitrary data loads or is refused."""
    tree = _set_at(yaml.safe_load(SHIPPED), steps, value)
    assert_loads_or_refuses(workdir / "config.yaml", yaml.safe_dump(tree).encode("utf-8", "surrogatepass"))


_edits = st.lists(
    st.tuples(
        st.sampled_from(["insert", "delete", "replace"]),
        st.integers(min_value=0, max_value=len(SHIPPED)),
        st.one_of(st.sampled_from(TOKENS), st.binary(min_size=1, max_size=4)),
    ),
    min_size=1,
    max_size=4,
)


@FUZZ_SETTINGS
@given(edits=_edits)
def test_shipped_config_with_bytes_spliced(workdir: Path, edits: list[tuple[str, int, bytes]]) -> None:
    """The shipped config with hostile fragments inserted, bytes deleted or replaced loads or is refused."""
    data = SHIPPED
    for action, at, fragment in edits:
        at = min(at, len(data))
        if action == "insert":
            data = data[:at] + fragment + data[at:]
        elif action == "delete":
            data = data[:at] + data[at + len(fragment) :]
        else:
            data = data[:at] + fragment + data[at + len(fragment) :]
    assert_loads_or_refuses(workdir / "config.yaml", data)


@FUZZ_SETTINGS
@given(lines=st.permutations(SHIPPED.splitlines(keepends=True)).map(lambda ls: ls[: len(ls) // 2]), indent=st.integers(0, 4))
def test_shipped_config_lines_shuffled(workdir: Path, lines: list[bytes], indent: int) -> None:
    """Half of the shipped config's lines, shuffled and re-indented, load or are refused."""
    assert_loads_or_refuses(workdir / "config.yaml", b"".join(b" " * indent + line for line in lines))
