"""File source checkpoints: states it cannot use are refused with CheckpointUnusable, and nothing else escapes."""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sources.base import CheckpointUnusable
from sources.file import FileSource, FileSourceConfig
from tests.fakes import RecordingContext
from tests.sources.test_file_checkpoint import key, lines, ns, replay, saved

# One file shared by the property's examples (read only), with a valid state for it.
_DIR = Path(tempfile.mkdtemp(prefix="file-checkpoint-state-"))
_FILE = _DIR / "in.jsonl"
_FILE.write_bytes(lines(0, 5))
_source, _ctx = replay(paths=[str(_FILE)])
VALID = saved(_source, _ctx, range(2))
KEY = key(_FILE)


def _with(path: list[str], value: Any) -> dict[str, Any]:
    state = copy.deepcopy(VALID)
    target: Any = state
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return state


BAD_STATES = {
    "not_a_dict": [1, 2],
    "no_format": {"pass": 0, "files": {}},
    "other_format": _with(["format"], 2),
    "format_as_text": _with(["format"], "1"),
    "format_true": _with(["format"], True),
    "negative_pass": _with(["pass"], -1),
    "files_a_list": _with(["files"], []),
    "key_not_dev_ino": {"format": 1, "pass": 0, "files": {"in.jsonl": VALID["files"][KEY]}},
    "entry_not_a_dict": _with(["files", KEY], "offset 5"),
    "offset_text": _with(["files", KEY, "offset"], "18"),
    "offset_bool": _with(["files", KEY, "offset"], False),
    "line_zero": _with(["files", KEY, "line"], 0),
    "no_path": {"format": 1, "pass": 0, "files": {KEY: {k: v for k, v in VALID["files"][KEY].items() if k != "path"}}},
    "fingerprint_not_hex": _with(["files", KEY, "fingerprint"], "z" * 64),
    "fingerprint_bytes_too_many": _with(["files", KEY, "fingerprint_bytes"], 4096),
    "file_pass_after_state_pass": _with(["files", KEY, "pass"], 3),
    "broken_not_bool": _with(["files", KEY, "broken"], "yes"),
}


@pytest.mark.parametrize("state", BAD_STATES.values(), ids=BAD_STATES.keys())
def test_states_that_do_not_fit_raise_checkpoint_unusable(state: Any) -> None:
    """Another format, wrong types or inconsistent passes: CheckpointUnusable with a reason, not a crash later."""
    source = FileSource(FileSourceConfig(paths=[str(_FILE)]))
    with pytest.raises(CheckpointUnusable) as caught:
        source.resume(state)
    assert str(caught.value)


def test_the_valid_state_is_taken() -> None:
    """The reference state the property mutates is itself usable: the restart sends the last three records."""
    _, again = replay(VALID, paths=[str(_FILE)])
    assert ns(again) == [2, 3, 4]


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
NUMBERS = st.integers(min_value=-2, max_value=2**70) | JSON
ENTRY = st.fixed_dictionaries(
    {
        "path": st.just(str(_FILE)) | JSON,
        "offset": NUMBERS,
        "line": NUMBERS,
        "pass": st.integers(min_value=-1, max_value=3) | JSON,
        "fingerprint": st.just(VALID["files"][KEY]["fingerprint"]) | st.text("0123456789abcdef", min_size=64, max_size=64) | JSON,
        "fingerprint_bytes": st.integers(min_value=-1, max_value=2000) | JSON,
    },
    optional={"broken": st.booleans() | JSON},
)
NEAR_VALID = st.fixed_dictionaries(
    {
        "format": st.just(1) | JSON,
        "pass": st.integers(min_value=-1, max_value=3) | JSON,
        "files": st.dictionaries(st.just(KEY) | st.sampled_from(["0:0", "1:2"]) | st.text(max_size=8), ENTRY, max_size=3) | JSON,
    }
)


@settings(max_examples=200, deadline=None)
@given(st.one_of(JSON, NEAR_VALID))
def test_any_state_is_taken_or_refused_with_checkpoint_unusable(state: Any) -> None:
    """Any JSON value as state: resume takes it or raises CheckpointUnusable, and a taken one replays without error."""
    source = FileSource(FileSourceConfig(paths=[str(_FILE)]))
    try:
        source.resume(state)
    except CheckpointUnusable:
        return
    ctx = RecordingContext(max_wait_s=0)
    source.run(ctx)  # whatever offset it names: records or rejections, never an exception
    assert len(ctx.tokens) <= 5 + 1
