"""`transforms:` in config.yaml: loaded per source by name, and every mistake is FILE:LINE: key: problem."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from daemon.config import load_config
from daemon.transforms.config import FieldsStep, FilterStep, PartitionKeyStep
from daemon.yamlsource import ConfigError
from tests.daemon.test_config import PROBLEM_LINE, REPO

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


def test_a_constant_that_is_not_json_is_reported(tmp_path: Path) -> None:
    """`add` of .nan (YAML's NaN) is refused at load: no record could carry it as JSON."""
    found = problems(tmp_path, "- add: {fields: {score: .nan}}\n")
    assert found[0][:2] == (6, "sources[0].transforms[0].add") and "NaN" in found[0][2]


def test_not_a_list_is_reported(tmp_path: Path) -> None:
    """`transforms:` holding a mapping says it must be a list of steps."""
    found = problems(tmp_path, "filter: a\n")
    assert found[0][1] == "sources[0].transforms" and "must be a list" in found[0][2]


def test_top_level_transforms_are_refused(tmp_path: Path) -> None:
    """`transforms:` at the top of the file is refused, pointing to sources[].transforms."""
    path = tmp_path / "config.yaml"
    path.write_text("sources: [{type: synthetic}]\nsink: {type: kinesis, stream: s}\ntransforms: {}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r":3: transforms: transforms belong to a source"):
        load_config(path)


def uncommented_example(text: str) -> str:
    """config.yaml with its commented `transforms:` example (under the first source) uncommented."""
    lines, inside = [], False
    for raw in text.splitlines():
        if raw.startswith("    # transforms:"):
            inside = True
        if inside and raw.startswith("    # "):
            raw = "    " + raw[len("    # ") :]
        elif inside:
            inside = False
        lines.append(raw)
    return "\n".join(lines)


def test_the_commented_example_in_config_yaml_is_valid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Uncommented, the shipped example loads: every step of it validates and compiles (with a hash key set)."""
    monkeypatch.setenv("TWEET_PRODUCER_REDACT_KEY", "an-example-key-of-16-bytes")
    text = (REPO / "config.yaml").read_text(encoding="utf-8")
    example = uncommented_example(text)
    assert example != text
    path = tmp_path / "config.yaml"
    path.write_text(example.replace("data/sample_tweets.jsonl", str(REPO / "data" / "sample_tweets.jsonl")), encoding="utf-8")
    kinds = [next(iter(step.model_dump())) for step in load_config(path).transforms["sample"].steps]
    assert kinds == ["filter", "filter", "fields", "redact", "add", "partition_key"]


def test_a_reload_restarts_exactly_the_source_whose_transforms_changed(tmp_path: Path) -> None:
    """Loaded twice, equal transforms leave the source unchanged; an edited expression restarts it (by value)."""
    from daemon.reload_plan import plan_reload

    first = load_config(write(tmp_path, "- filter: \"data.lang == 'ja'\"\n"))
    same = load_config(write(tmp_path, "- filter: \"data.lang == 'ja'\"\n"))
    edited = load_config(write(tmp_path, "- filter: \"data.lang == 'en'\"\n"))
    assert plan_reload(first, same).restarted == [] and plan_reload(first, same).unchanged == ["replay", "synthetic"]
    assert plan_reload(first, edited).restarted == ["replay"] and plan_reload(first, edited).unchanged == ["synthetic"]
