"""The YAML loader's rules: every broken or hostile file ends in located problems, never in an exception."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from daemon.config import load_config
from daemon.yamlsource import MAX_ALIASES, MAX_CONFIG_BYTES, MAX_DEPTH, MAX_VALUES, ConfigError, Problem, load_document

# Loading a hostile file must stay well inside this; the old loader hung on the billion-laughs file.
FAST_SECONDS = 5.0

VALID = b"""\
stack: tweet-producer
sources:
  - type: file
    paths: [tweets.jsonl]
sink:
  type: kinesis
  stream: s
"""


def write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "config.yaml"
    path.write_bytes(data)
    return path


def problems_of(path: Path) -> list[Problem]:
    """The problems load_config reports for `path` (it must refuse the file, and only with ConfigError)."""
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.problems
    return caught.value.problems


def only(problems: list[Problem]) -> Problem:
    assert len(problems) == 1, [str(p) for p in problems]
    return problems[0]


@pytest.mark.parametrize(
    ("data", "line", "column", "code"),
    [
        (VALID.replace(b"stack: tweet-producer", b"stack: tweet\x00producer"), 1, 13, "U+0000"),
        (b"# a comment with a \x00 in it\n" + VALID, 1, 20, "U+0000"),
        (VALID.replace(b"stream: s", b"stream: s\x07"), 7, 12, "U+0007"),
        (VALID + b"log: {level: \x1b[31minfo}\n", 8, 14, "U+001B"),
        (VALID + "log: {level: in\u2028fo}\n".encode(), 8, 16, "U+2028"),
    ],
    ids=["nul_in_value", "nul_in_comment", "bell", "escape", "line_separator"],
)
def test_control_character_is_located(tmp_path: Path, data: bytes, line: int, column: int, code: str) -> None:
    """A raw control character anywhere in the file is reported at its line and column (it used to crash)."""
    path = write(tmp_path, data)
    problem = only(problems_of(path))
    assert (problem.file, problem.line) == (str(path), line)
    assert f"character {code} at column {column}" in problem.message


def test_non_utf8_byte_is_located(tmp_path: Path) -> None:
    """A Latin-1 byte is reported at its line, asking for UTF-8."""
    path = write(tmp_path, VALID.replace(b"stream: s", b"stream: caf\xe9"))
    assert str(only(problems_of(path))) == f"{path}:7: byte 0xe9 at column 14 is not UTF-8; the config file must be UTF-8 text"


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    """A UTF-8 byte-order mark (Windows editors write one) is skipped."""
    assert load_config(write(tmp_path, b"\xef\xbb\xbf" + VALID)).stack == "tweet-producer"


@pytest.mark.parametrize(("bom", "encoding"), [("utf-16-le", "UTF-16"), ("utf-16-be", "UTF-16"), ("utf-32-le", "UTF-32")])
def test_utf16_and_utf32_are_refused(tmp_path: Path, bom: str, encoding: str) -> None:
    """A UTF-16/32 file (BOM first) is one whole-file problem saying which encoding it is."""
    path = write(tmp_path, ("\ufeff" + VALID.decode()).encode(bom))
    assert str(only(problems_of(path))) == f"{path}: the config file is {encoding} text; save it as UTF-8"


@pytest.mark.parametrize("data", [b"", b"  \n\n\t\n", b"\r\n"], ids=["empty", "whitespace_and_tab", "crlf"])
def test_empty_file_is_one_whole_file_problem(tmp_path: Path, data: bytes) -> None:
    """An empty or whitespace-only file says so (a tab used to read as a YAML syntax error)."""
    path = write(tmp_path, data)
    assert str(only(problems_of(path))) == f"{path}: the config file is empty; it needs at least `sources:` and `sink:`"


def test_comment_only_file_is_one_whole_file_problem(tmp_path: Path) -> None:
    """A file of comments only says so instead of listing missing sections."""
    path = write(tmp_path, b"# nothing yet\n")
    assert only(problems_of(path)).line is None


@pytest.mark.parametrize(
    ("data", "kind"), [(b"- a\n- b\n", "a list"), (b"hello\n", "a string"), (b"42\n", "a number"), (b"~\n", "null")]
)
def test_non_mapping_document_is_refused(tmp_path: Path, data: bytes, kind: str) -> None:
    """A document that is not a mapping is a whole-file problem naming what it is."""
    path = write(tmp_path, data)
    assert str(only(problems_of(path))).startswith(f"{path}: the config is {kind}; it must be a mapping")


def test_second_document_is_located(tmp_path: Path) -> None:
    """A second `---` document is reported where it starts; a leading `---` alone is fine."""
    assert load_config(write(tmp_path, b"---\n" + VALID)).stack == "tweet-producer"
    path = write(tmp_path, VALID + b"---\nstack: other\n")
    assert str(only(problems_of(path))) == f"{path}:8: a second YAML document starts here; a config file holds one"


@pytest.mark.parametrize(
    "nested", [b"[" * 2000 + b"]" * 2000, b"{a: " * 2000 + b"1" + b"}" * 2000], ids=["flow_lists", "flow_maps"]
)
def test_deep_nesting_is_refused(tmp_path: Path, nested: bytes) -> None:
    """Nesting past MAX_DEPTH is a located problem (it used to be a RecursionError)."""
    path = write(tmp_path, VALID + b"extra: " + nested + b"\n")
    assert str(only(problems_of(path))) == f"{path}:8: nested deeper than {MAX_DEPTH} levels"


def test_nesting_at_the_limit_is_parsed(tmp_path: Path) -> None:
    """MAX_DEPTH levels still load (and the extra key is then the only problem)."""
    path = write(tmp_path, VALID + b"extra: " + b"[" * (MAX_DEPTH - 1) + b"]" * (MAX_DEPTH - 1) + b"\n")
    assert only(problems_of(path)).key == "extra"


def test_billion_laughs_is_bounded(tmp_path: Path) -> None:
    """Aliases that expand exponentially stop at MAX_VALUES, quickly (the old loader expanded all of them)."""
    levels = [b'l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n']
    levels += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n".encode() for i in range(1, 6)]
    path = write(tmp_path, b"".join(levels))
    started = time.monotonic()
    problem = only(problems_of(path))
    assert time.monotonic() - started < FAST_SECONDS
    assert str(problem) == f"{path}:5: l4: aliases expand the config to more than {MAX_VALUES} values"


def test_alias_chain_deeper_than_the_limit_is_refused(tmp_path: Path) -> None:
    """Aliases nesting lists inside lists past MAX_DEPTH are refused at the top-level key that overflows."""
    chain = b"l0: &l0 [1]\n" + b"".join(b"l%d: &l%d [*l%d]\n" % (i, i, i - 1) for i in range(1, MAX_DEPTH + 5))
    path = write(tmp_path, chain)
    assert (
        str(only(problems_of(path)))
        == f"{path}:{MAX_DEPTH - 1}: l{MAX_DEPTH - 2}: aliases nest the config deeper than {MAX_DEPTH} levels"
    )


def test_merge_bomb_is_bounded(tmp_path: Path) -> None:
    """`<<: [*b, *b, *b]` chains expand exponentially too; they stop at MAX_VALUES, at the key being built."""
    text = b"b0: &b0 {x: 1, y: 2, z: 3}\n" + b"".join(
        b"b%d: &b%d {<<: [*b%d, *b%d, *b%d]}\n" % ((i, i) + (i - 1,) * 3) for i in range(1, 30)
    )
    problem = only(problems_of(write(tmp_path, text)))
    assert (problem.key, problem.message) == ("b7", f"aliases expand the config to more than {MAX_VALUES} values")
    assert problem.line == 8


def test_too_many_aliases_are_refused(tmp_path: Path) -> None:
    """More than MAX_ALIASES alias uses is refused at the first one over the limit; MAX_ALIASES itself loads."""
    text = VALID + b"x: &x 1\n"
    at_limit = problems_of(write(tmp_path, text + b"y: [" + b"*x, " * MAX_ALIASES + b"]\n"))
    assert [p.key for p in at_limit] == ["x", "y"]  # only the two unknown sections
    path = write(tmp_path, text + b"y: [" + b"*x, " * MAX_ALIASES + b"]\nz: *x\n")
    assert str(only(problems_of(path))) == f"{path}:10: more than {MAX_ALIASES} aliases (*name) in one config"


def test_recursive_alias_is_refused(tmp_path: Path) -> None:
    """An alias inside the value it names is a located problem (it used to be a RecursionError)."""
    path = write(tmp_path, b"a: &a [1, *a]\n")
    problem = only(problems_of(path))
    assert (problem.line, problem.key) == (1, "a[1]")
    assert "a cycle" in problem.message


def test_recursive_merge_is_refused(tmp_path: Path) -> None:
    """`<<:` merging the mapping into itself is a cycle, not an endless loop."""
    assert "a cycle" in only(problems_of(write(tmp_path, b"a: &a\n  x: 1\n  <<: *a\n"))).message


def test_merge_key_overrides_are_not_duplicates(tmp_path: Path) -> None:
    """Keys written beside `<<: *defaults` override the merged ones; a real repeat is a duplicate naming both lines."""
    text = VALID.replace(
        b"sources:\n  - type: file\n", b"x-file: &f {type: file, loop: true}\nsources:\n  - <<: *f\n    loop: false\n"
    )
    path = write(tmp_path, text)
    problem = only(problems_of(path))  # only the unknown `x-file` section: the merge itself is fine
    assert problem.key == "x-file"
    path = write(tmp_path, VALID + b"stack: again\n")
    assert str(only(problems_of(path))) == f"{path}:8: stack: duplicate key (first on line 1)"


def test_merged_keys_keep_their_own_lines(tmp_path: Path) -> None:
    """A bad value that came through `<<:` is reported where it is written, under the key it lands on."""
    text = VALID + b"x: &d {max_records: -1}\nbuffer:\n  <<: *d\n"
    problems = problems_of(write(tmp_path, text))
    assert any(p.key == "buffer.max_records" and p.line == 8 for p in problems), [str(p) for p in problems]


@pytest.mark.parametrize("key", [b"[a, b]", b"{a: 1}"], ids=["list", "mapping"])
def test_complex_key_is_refused(tmp_path: Path, key: bytes) -> None:
    """A list or mapping used as a key is a located problem (it used to be a TypeError: unhashable)."""
    path = write(tmp_path, VALID + b"? " + key + b"\n: 1\n")
    assert str(only(problems_of(path))) == f"{path}:8: a key must be plain text, not a list or a mapping"


@pytest.mark.parametrize(("key", "reads_as"), [(b"on", "a boolean"), (b"1", "an integer"), (b"~", "null")])
def test_key_that_is_not_text_is_refused(tmp_path: Path, key: bytes, reads_as: str) -> None:
    """YAML 1.1 turns `on:` into True and `1:` into an int; the problem says so and suggests quotes."""
    problem = only(problems_of(write(tmp_path, VALID + key + b": x\n")))
    assert problem.line == 8
    assert f"reads as {reads_as}; keys are text (quote it: '{key.decode()}')" in problem.message


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (b"!!int abc", "integer"),
        (b"!!bool maybe", "boolean"),
        (b"!!float abc", "number"),
        (b'!!int ""', "integer"),
        (b"9" * 5000, "integer"),
    ],
    ids=["int", "bool", "float", "empty_int", "too_many_digits"],
)
def test_bad_typed_scalar_is_located(tmp_path: Path, value: bytes, kind: str) -> None:
    """A scalar PyYAML cannot convert is a located problem (ValueError, KeyError or IndexError before)."""
    problem = only(problems_of(write(tmp_path, VALID + b"buffer:\n  max_records: " + value + b"\n")))
    assert (problem.line, problem.key) == (9, "buffer.max_records")
    assert problem.message.endswith(f"is not a valid {kind}")


def test_date_like_value_is_text(tmp_path: Path) -> None:
    """`2001-13-45` and `2001-12-14` are read as text, not as dates (an impossible one used to raise ValueError)."""
    path = write(tmp_path, VALID.replace(b"paths: [tweets.jsonl]", b"paths: [2001-13-45, 2001-12-14]"))
    assert load_config(path).sources[0].paths == ["2001-13-45", "2001-12-14"]  # type: ignore[attr-defined]


@pytest.mark.parametrize("tag", [b"!!python/object:os.system", b"!!python/name:os.system", b"!custom", b"!!binary", b"!!set"])
def test_unsupported_tag_is_refused(tmp_path: Path, tag: bytes) -> None:
    """Tags beyond the core schema are named as not allowed (not as a YAML syntax error)."""
    problem = only(problems_of(write(tmp_path, VALID.replace(b"stream: s", b"stream: " + tag + b" x"))))
    assert (problem.line, problem.key) == (7, "sink.stream")
    assert problem.message.startswith(f"the YAML tag {tag.decode()}")


@pytest.mark.parametrize("escape", [b"\\0", b"\\x07", b"\\e", b"\\ud800"])
def test_control_character_from_an_escape_is_refused(tmp_path: Path, escape: bytes) -> None:
    """ "\\0" in a double-quoted path used to be accepted and to crash the daemon when it opened the file."""
    path = write(tmp_path, VALID + b'dead_letter: {path: "dl' + escape + b'.jsonl"}\n')
    problem = only(problems_of(path))
    assert (problem.line, problem.key) == (8, "dead_letter.path")
    assert "which a config value may not hold" in problem.message


def test_control_character_from_the_environment_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A `${VAR}` whose value holds a control character is refused at the line that references it."""
    monkeypatch.setenv("TP_STREAM_WITH_NUL", "s\x01")
    problem = only(problems_of(write(tmp_path, VALID.replace(b"stream: s", b"stream: ${TP_STREAM_WITH_NUL}"))))
    assert (problem.line, problem.key) == (7, "sink.stream")


def test_odd_key_stays_on_one_line(tmp_path: Path) -> None:
    """A key holding a newline, a colon and spaces is quoted, so each problem is still one line."""
    path = write(tmp_path, VALID + b'"a\\nb: c d": 1\n')
    lines = str(ConfigError(problems_of(path))).splitlines()
    assert lines == [f'{path}:8: ["a\\nb\\u003a\\u0020c\\u0020d"]: unknown key ' + lines[0].split(" unknown key ")[1]]


def test_oversized_file_is_refused_unread(tmp_path: Path) -> None:
    """A file over MAX_CONFIG_BYTES is one whole-file problem (the old loader parsed it and echoed the value)."""
    path = write(tmp_path, b"stack: " + b"a" * MAX_CONFIG_BYTES + b"\n")
    assert (
        str(only(problems_of(path))) == f"{path}: the config file is larger than {MAX_CONFIG_BYTES} bytes; is it the right file?"
    )


def test_long_value_is_cut_in_messages(tmp_path: Path) -> None:
    """A 100 000-character value is quoted back cut short, with its length."""
    problem = only(problems_of(write(tmp_path, VALID.replace(b"stack: tweet-producer", b"stack: " + b"a" * 100_000))))
    assert len(problem.message) < 200
    assert "(100000 characters)" in problem.message


def test_too_many_values_are_refused(tmp_path: Path) -> None:
    """More than MAX_VALUES values is refused while parsing, before the document is built."""
    path = write(tmp_path, VALID + b"extra: [" + b"1, " * MAX_VALUES + b"1]\n")
    assert f"more than {MAX_VALUES} values" in only(problems_of(path)).message


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_unreadable_file_is_one_whole_file_problem(tmp_path: Path, kind: str) -> None:
    """A missing path or a directory is `FILE: cannot read the config file: REASON`."""
    path = tmp_path / "config.yaml"
    if kind == "directory":
        path.mkdir()
    doc = load_document(path)
    assert [str(p) for p in doc.problems] == [
        f"{path}: cannot read the config file: {'No such file or directory' if kind == 'missing' else 'Is a directory'}"
    ]


@pytest.mark.skipif(not Path("/proc/self/mem").exists(), reason="needs Linux /proc")
def test_read_error_after_open_is_a_problem() -> None:
    """A file that opens but fails to read (here /proc/self/mem, EIO) is a whole-file problem, not an OSError."""
    doc = load_document(Path("/proc/self/mem"))
    assert [str(p) for p in doc.problems] == ["/proc/self/mem: cannot read the config file: Input/output error"]
