"""`transforms:` in config.yaml: loaded per source by name, and every mistake is FILE:LINE: key: problem."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from daemon.config import load_config
from daemon.transforms.config import FieldsStep, FilterStep, PartitionKeyStep
from daemon.yamlsource import ConfigError
from tests.daemon.test_config import PROBLEM_LINE

HEAD = """\
sources:
  - name: replay
    type: file
    paths: [tweets.jsonl]
    transforms:
"""
TAIL = """\
  - type: synthetic
sink:
  type: kinesis
  stream: s
"""


def write(tmp_path: Path, steps: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(HEAD + textwrap.indent(textwrap.dedent(steps), "      ") + TAIL, encoding="utf-8")
    return path


def problems(tmp_path: Path, steps: str) -> list[tuple[int, str, str]]:
    """(line, key, message) of each problem load_config reports."""
    with pytest.raises(ConfigError) as refused:
        load_config(write(tmp_path, steps))
    found = []
    for line in str(refused.value).splitlines():
        match = PROBLEM_LINE.match(line)
        assert match, line
        found.append((int(match["line"]), match["key"] or "", match["message"]))
    return found


def test_transforms_load_by_source_name(tmp_path: Path) -> None:
    """The steps land in Config.transforms under the source's name; a source without transforms is absent."""
    config = load_config(
        write(tmp_path, "- filter: \"data.lang == 'ja'\"\n- fields: [data.id, data.text]\n- partition_key: data.id\n")
    )
    assert config.transforms["replay"].steps == (
        FilterStep(filter="data.lang == 'ja'"),
        FieldsStep(fields=("data.id", "data.text")),
        PartitionKeyStep(partition_key="data.id"),
    )
    assert "synthetic" not in config.transforms
    assert config.sources[0].name == "replay", "the plugin's model never saw transforms:"


def test_loading_twice_gives_equal_configs(tmp_path: Path) -> None:
    """The same file loads to equal transforms (what hot reload compares)."""
    path = write(tmp_path, "- filter: \"data.lang == 'ja'\"\n- add: {fields: {meta.k: [1, 2]}}\n")
    assert load_config(path).transforms == load_config(path).transforms


def test_an_invalid_expression_is_reported_at_its_line(tmp_path: Path) -> None:
    """A JMESPath that does not parse is a problem at its own line and key, quoting the parser."""
    found = problems(tmp_path, '- fields: [data.id]\n- filter: "data.lang == "\n')
    assert len(found) == 1
    line, key, message = found[0]
    assert (line, key) == (7, "sources[0].transforms[1].filter")
    assert "invalid JMESPath expression" in message


def test_unknown_keys_and_steps_are_reported(tmp_path: Path) -> None:
    """An unknown key inside a step lists the allowed ones; an unknown step kind lists the kinds."""
    found = problems(tmp_path, "- redact: {hash: [data.id], salt: x}\n- map: data.id\n")
    allowed = "unknown key (allowed: hash, remove, key_env, key_file, key_credential)"
    assert (6, "sources[0].transforms[0].redact.salt", allowed) in found
    assert any(line == 7 and key == "sources[0].transforms[1].map" and "unknown step" in msg for line, key, msg in found)


def test_bad_paths_and_shapes_are_reported(tmp_path: Path) -> None:
    """A malformed path, a step with two kinds, and a partition key not last: one problem each, at its line."""
    found = problems(tmp_path, "- fields: [data..id]\n- {filter: a, fields: [b]}\n- partition_key: data.id\n- filter: a\n")
    keys = {(line, key) for line, key, _ in found}
    assert (6, "sources[0].transforms[0].fields[0]") in keys
    assert (7, "sources[0].transforms[1]") in keys
    assert (8, "sources[0].transforms[2].partition_key") in keys


def test_a_redact_without_its_key_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Hashing with no key in the environment, file or credential fails the config at the redact step."""
    monkeypatch.delenv("TWEET_PRODUCER_REDACT_KEY", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    found = problems(tmp_path, "- redact: {hash: [data.author_id]}\n")
    assert found[0][:2] == (6, "sources[0].transforms[0].redact") and "no hash key" in found[0][2]


def test_not_a_list_is_reported(tmp_path: Path) -> None:
    """`transforms:` holding a mapping says it must be a list of steps."""
    found = problems(tmp_path, "filter: a\n")
    assert found[0][1] == "sources[0].transforms" and "must be a list" in found[0][2]
