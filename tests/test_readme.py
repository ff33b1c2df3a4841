"""The README stays true: its quick start is two commands, and its config tables name every key in full."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from daemon.config import Config
from sinks import SINK_TYPES, load_builtin_sinks
from sources import SOURCE_TYPES, load_builtin_sources

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
# The table of the daemon's own keys has no caption; a plugin's table is captioned "Source `file`:" etc.
DAEMON_TABLE = "daemon"
_PLUGIN_CAPTION = re.compile(r"^(Source|Sink) `([\w-]+)`:$")
_CODE = re.compile(r"`([^`]+)`")
# Sections that hold a plugin's config: one row in the daemon's table, their keys in the plugin's table.
PLUGIN_SECTIONS = frozenset({"sources", "sink"})


def _keys(model: type[BaseModel], prefix: str = "", leaves: frozenset[str] = frozenset()) -> list[str]:
    """Every key as config.yaml spells it: nested sections dotted (`retry.max_attempts`), `type` left out."""
    keys = []
    for name, field in model.model_fields.items():
        if name == "type":
            continue
        annotation = field.annotation
        if name not in leaves and isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys += _keys(annotation, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys


def _cell_keys(cell: str) -> list[str]:
    """The keys a row's key cell names: `a.b` / `c` names a.b and a.c (a short form inherits the first's
    section); `sources[]` names sources."""
    named = [code.removesuffix("[]") for code in _CODE.findall(cell)]
    if not named:
        return []
    section = named[0].rpartition(".")[0]
    return [named[0]] + [key if "." in key or not section else f"{section}.{key}" for key in named[1:]]


def documented_keys(readme: str) -> dict[str, set[str]]:
    """The key cells of each table in the README's Configuration section, by table (daemon, source:file, ...)."""
    reference = readme.split("\n## Configuration", 1)[1].split("\n## ", 1)[0]
    tables: dict[str, set[str]] = {}
    table = DAEMON_TABLE
    for line in reference.splitlines():
        caption = _PLUGIN_CAPTION.match(line.strip())
        if caption:
            table = f"{caption.group(1).lower()}:{caption.group(2)}"
        elif line.startswith("|") and not re.match(r"^\|\s*(key\s*\||-)", line):
            tables.setdefault(table, set()).update(_cell_keys(line.split("|")[1]))
    return tables


def expected_keys() -> dict[str, set[str]]:
    """The keys of the daemon's config model and of every registered source and sink type."""
    load_builtin_sources()
    load_builtin_sinks()
    # Config.transforms is filled from each source's `transforms:` (documented in "Filters and transforms"), not a key.
    expected = {DAEMON_TABLE: set(_keys(Config, leaves=PLUGIN_SECTIONS)) - {"transforms"}}
    for kind, registry in (("source", SOURCE_TYPES), ("sink", SINK_TYPES)):
        for type_name, plugin in registry.items():
            expected[f"{kind}:{type_name}"] = set(_keys(plugin.config_model))
    return expected


def test_quick_start_is_two_commands_install_and_run_then_test() -> None:
    """The quick start has exactly two shell commands: install + run, then install + tests."""
    section = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```sh\n(.*?)\n```", section, re.S)
    assert len(commands) == 2
    assert "pip install -e '.[embedded]'" in commands[0] and "tweet-producer run" in commands[0]
    assert "pytest" in commands[1]
    assert "pytest" in (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()


def test_config_tables_name_every_key_in_full() -> None:
    """Each key of every config model has a row in its own table, under its full dotted name."""
    documented = documented_keys(README)
    missing = {
        table: sorted(keys - documented.get(table, set()))
        for table, keys in expected_keys().items()
        if keys - documented.get(table, set())
    }
    assert not missing, f"keys without a row in the README's configuration tables: {missing}"


def test_config_tables_name_no_key_that_does_not_exist() -> None:
    """Every key the tables document is a key of the model the table describes (no stale rows)."""
    expected = expected_keys()
    stale = {table: sorted(keys - expected.get(table, set())) for table, keys in documented_keys(README).items()}
    assert not any(stale.values()), f"rows for keys no config model has: {stale}"


@pytest.mark.parametrize(
    ("table", "row_start"),
    [(DAEMON_TABLE, "| `embedded.region` |"), ("sink:kinesis", "| `retry.max_attempts` |"), ("source:file", "| `loop` |")],
)
def test_removing_a_row_is_noticed(table: str, row_start: str) -> None:
    """By full key and table: without its row, `embedded.region` is missing although the sink table has `region`."""
    assert row_start in README
    without_row = "\n".join(line for line in README.splitlines() if not line.startswith(row_start))
    removed = row_start.strip("| `")
    assert removed in documented_keys(README)[table]
    assert removed not in documented_keys(without_row)[table]


def test_a_short_form_in_a_key_cell_inherits_the_first_keys_section() -> None:
    """`supervision.restart_initial_backoff` / `restart_max_backoff` documents supervision.restart_max_backoff."""
    assert _cell_keys(" `a.b` / `c` ") == ["a.b", "a.c"]
    assert _cell_keys(" `x` / `y` ") == ["x", "y"]
    assert _cell_keys(" `sources[]` ") == ["sources"]
