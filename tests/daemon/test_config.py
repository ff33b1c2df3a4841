"""Config loading: the shipped config is valid; every broken config is refused with FILE:LINE: key: problem."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from cli.main import EXIT_INVALID_CONFIG, main
from daemon.config import load_config
from daemon.yamlsource import ConfigError

REPO = Path(__file__).resolve().parents[2]
PROBLEM_LINE = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+): (?:(?P<key>[^\s:]+): )?(?P<message>.+)$")

VALID = """\
stack: tweet-producer
sources:
  - name: replay
    type: file
    paths: [tweets.jsonl]
sink:
  type: kinesis
  stream: s
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_shipped_config_is_valid() -> None:
    """The config.yaml in the repository loads, targets the embedded stack and replays the bundled sample."""
    config = load_config(REPO / "config.yaml")
    assert config.embedded.enabled
    assert config.sources[0].type == "file"
    assert config.sink.type == "kinesis"


def test_defaults_and_units(tmp_path: Path) -> None:
    """Durations and sizes accept units; unnamed sources are named after their type."""
    path = write(
        tmp_path,
        VALID.replace("  - name: replay\n    type: file", "  - type: file")
        + "shutdown: {flush_deadline: 250ms}\nbuffer: {max_bytes: 2MiB}\n",
    )
    config = load_config(path)
    assert config.shutdown.flush_deadline == pytest.approx(0.25)
    assert config.buffer.max_bytes == 2 * 1024 * 1024
    assert config.sources[0].name == "file"


def test_env_reference_is_substituted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`${VAR}` takes the variable's value and `${VAR:-default}` falls back to the default."""
    monkeypatch.setenv("TP_STREAM", "from-env")
    path = write(tmp_path, VALID.replace("stream: s", "stream: ${TP_STREAM}") + "dead_letter: {path: '${TP_NOPE:-dl.jsonl}'}\n")
    config = load_config(path)
    assert config.sink.stream == "from-env"  # type: ignore[attr-defined]
    assert config.dead_letter.path == Path("dl.jsonl")


# (name, config text, expected line, expected key, a fragment of the message)
BROKEN = [
    ("yaml_syntax", VALID + "metrics: [unclosed\n", 10, None, "YAML syntax error"),
    ("unknown_top_level_key", VALID + "sinks: {}\n", 9, "sinks", "unknown key"),
    ("unknown_source_key", VALID.replace("    paths:", "    pathz: [x]\n    paths:"), 5, "sources[0].pathz", "unknown key"),
    (
        "wrong_type",
        VALID.replace("    paths: [tweets.jsonl]", "    paths: [tweets.jsonl]\n    rate: fast"),
        6,
        "sources[0].rate",
        "valid number",
    ),
    ("missing_paths", VALID.replace("    paths: [tweets.jsonl]\n", ""), 3, "sources[0].paths", "missing required key"),
    ("unknown_source_type", VALID.replace("type: file", "type: fiel"), 4, "sources[0].type", "unknown source type 'fiel'"),
    ("unknown_sink_type", VALID.replace("type: kinesis", "type: kafka"), 7, "sink.type", "unknown sink type 'kafka'"),
    ("missing_sink", VALID.split("sink:")[0], 1, "sink", "a sink is required"),
    (
        "missing_env_var",
        VALID.replace("stream: s", "stream: ${TP_SURELY_UNSET_VARIABLE}"),
        8,
        "sink.stream",
        "environment variable TP_SURELY_UNSET_VARIABLE is not set",
    ),
    ("bad_duration", VALID + "shutdown:\n  flush_deadline: soon\n", 10, "shutdown.flush_deadline", "not a duration"),
    ("bad_listen", VALID + "metrics:\n  listen: 9477\n", 10, "metrics.listen", ""),
    ("negative_buffer", VALID + "buffer:\n  max_records: -5\n", 10, "buffer.max_records", "greater than or equal to 1"),
    ("duplicate_key", VALID + "stack: again\n", 9, "stack", "duplicate key"),
    (
        "sources_not_a_list",
        VALID.replace("sources:\n  - name: replay\n    type: file\n    paths: [tweets.jsonl]\n", "sources: file\n"),
        2,
        "sources",
        "non-empty list",
    ),
    ("bad_stack_name", VALID.replace("stack: tweet-producer", "stack: 9 lives"), 1, "stack", "pattern"),
    ("sink_out_of_range", VALID.replace("stream: s", "stream: s\n  max_batch_records: 501"), 9, "sink.max_batch_records", "500"),
    ("unknown_log_level", VALID + "log:\n  level: loud\n", 10, "log.level", "debug"),
]


@pytest.mark.parametrize(("text", "line", "key", "fragment"), [b[1:] for b in BROKEN], ids=[b[0] for b in BROKEN])
def test_broken_config_is_refused_with_location(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, line: int, key: str | None, fragment: str
) -> None:
    """check-config exits 2 and names the file, line and key (when there is one) of the problem."""
    path = write(tmp_path, text)
    assert main(["check-config", "-c", str(path)]) == EXIT_INVALID_CONFIG
    problems = [PROBLEM_LINE.match(out) for out in capsys.readouterr().err.splitlines()[:-1]]
    assert problems and all(problems), problems
    found = [(int(m["line"]), m["key"], m["message"]) for m in problems if m]
    assert any(p_line == line and p_key == key and fragment in message for p_line, p_key, message in found), found
    assert all(m["file"] == str(path) for m in problems if m)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    """Several mistakes in one file are all listed, in line order, not just the first."""
    path = write(
        tmp_path, VALID.replace("type: file", "type: file\n    bogus: 1").replace("stream: s", "stream: s\n  linger: -1")
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    keys = [p.key for p in caught.value.problems]
    assert keys == ["sources[0].bogus", "sink.linger"]


def test_unreadable_file_is_a_config_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A missing config file is reported as `FILE: cannot read the config file: REASON`, with exit 2."""
    missing = tmp_path / "nope.yaml"
    assert main(["check-config", "-c", str(missing)]) == EXIT_INVALID_CONFIG
    assert capsys.readouterr().err.splitlines()[0] == f"{missing}: cannot read the config file: No such file or directory"


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan"])
def test_infinite_duration_is_refused(tmp_path: Path, value: str) -> None:
    """`flush_deadline: .inf` used to be accepted, so a shutdown would wait for ever; durations are finite."""
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, VALID + f"shutdown:\n  flush_deadline: {value}\n"))
    assert [(p.line, p.key) for p in caught.value.problems] == [(10, "shutdown.flush_deadline")]


def test_long_value_is_cut_in_validation_messages(tmp_path: Path) -> None:
    """A huge wrong value is quoted back cut short with its length (the whole value used to be printed)."""
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, VALID + "shutdown:\n  flush_deadline: " + "x" * 50_000 + "\n"))
    (problem,) = caught.value.problems
    assert len(problem.message) < 200
    assert "(50000 characters) is not a duration" in problem.message


def test_valid_config_exits_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """check-config on a valid file exits 0 and says OK."""
    assert main(["check-config", "-c", str(write(tmp_path, VALID))]) == 0
    assert "OK" in capsys.readouterr().out
