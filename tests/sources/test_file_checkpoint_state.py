"""File source checkpoints: states it cannot use are refused with CheckpointUnusable, and nothing else escapes."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sources.base import CheckpointUnusable
from sources.file import FileSource, FileSourceConfig
from tests.fakes import RecordingContext
from tests.sources.test_file_checkpoint import key, lines, ns, replay, saved


class Reference(NamedTuple):
    """A file and a usable state for it (two of its five records acknowledged)."""

    path: Path
    key: str
    state: dict[str, Any]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    """Shared by the property's examples: read only."""
    path = tmp_path_factory.mktemp("checkpoint-state") / "in.jsonl"
    path.write_bytes(lines(0, 5))
    source, ctx = replay(paths=[str(path)])
    return Reference(path, key(path), saved(source, ctx, range(2)))


def _set(*steps: str, value: Any) -> Callable[[Reference], Any]:
    """A change to the reference state: `steps` lead to the value replaced (KEY stands for the file's key)."""

    def change(ref: Reference) -> Any:
        state = copy.deepcopy(ref.state)
        target: Any = state
        path = [ref.key if step == "KEY" else step for step in steps]
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value
        return state

    return change


def _without_path(ref: Reference) -> Any:
    return {"format": 1, "pass": 0, "files": {ref.key: {k: v for k, v in ref.state["files"][ref.key].items() if k != "path"}}}


BAD_STATES: dict[str, Callable[[Reference], Any]] = {
    "not_a_dict": lambda ref: [1, 2],
    "no_format": lambda ref: {"pass": 0, "files": {}},
    "other_format": _set("format", value=2),
    "format_as_text": _set("format", value="1"),
    "format_true": _set("format", value=True),
    "negative_pass": _set("pass", value=-1),
    "files_a_list": _set("files", value=[]),
    "key_not_dev_ino": lambda ref: {"format": 1, "pass": 0, "files": {"in.jsonl": ref.state["files"][ref.key]}},
    "entry_not_a_dict": _set("files", "KEY", value="offset 5"),
    "offset_text": _set("files", "KEY", "offset", value="18"),
    "offset_bool": _set("files", "KEY", "offset", value=False),
    "line_zero": _set("files", "KEY", "line", value=0),
    "no_path": _without_path,
    "fingerprint_not_hex": _set("files", "KEY", "fingerprint", value="z" * 64),
    "fingerprint_bytes_too_many": _set("files", "KEY", "fingerprint_bytes", value=4096),
    "file_pass_after_state_pass": _set("files", "KEY", "pass", value=3),
    "broken_not_bool": _set("files", "KEY", "broken", value="yes"),
}


@pytest.mark.parametrize("change", BAD_STATES.values(), ids=BAD_STATES.keys())
def test_states_that_do_not_fit_raise_checkpoint_unusable(reference: Reference, change: Callable[[Reference], Any]) -> None:
    """Another format, wrong types or inconsistent passes: CheckpointUnusable with a reason, not a crash later."""
    source = FileSource(FileSourceConfig(paths=[str(reference.path)]))
    with pytest.raises(CheckpointUnusable) as caught:
        source.resume(change(reference))
    assert str(caught.value)


def test_the_reference_state_is_taken(reference: Reference) -> None:
    """The state the bad ones are made from is itself usable: the restart sends the last three records."""
    _, again = replay(reference.state, paths=[str(reference.path)])
    assert ns(again) == [2, 3, 4]


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
NUMBERS = st.integers(min_value=-2, max_value=2**70) | JSON


def near_valid(ref: Reference) -> st.SearchStrategy[Any]:
    """States shaped like the reference, each field valid, off by a little, or any JSON value."""
    entry = st.fixed_dictionaries(
        {
            "path": st.just(str(ref.path)) | JSON,
            "offset": NUMBERS,
            "line": NUMBERS,
            "pass": st.integers(min_value=-1, max_value=3) | JSON,
            "fingerprint": st.just(ref.state["files"][ref.key]["fingerprint"])
            | st.text("0123456789abcdef", min_size=64, max_size=64)
            | JSON,
            "fingerprint_bytes": st.integers(min_value=-1, max_value=2000) | JSON,
        },
        optional={"broken": st.booleans() | JSON},
    )
    keys = st.just(ref.key) | st.sampled_from(["0:0", "1:2"]) | st.text(max_size=8)
    return st.fixed_dictionaries(
        {
            "format": st.just(1) | JSON,
            "pass": st.integers(min_value=-1, max_value=3) | JSON,
            "files": st.dictionaries(keys, entry, max_size=3) | JSON,
        }
    )


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_any_state_is_taken_or_refused_with_checkpoint_unusable(reference: Reference, data: st.DataObject) -> None:
    """Any JSON value as state: resume takes it or raises CheckpointUnusable, and a taken one replays without error."""
    state = data.draw(st.one_of(JSON, near_valid(reference)), label="state")
    source = FileSource(FileSourceConfig(paths=[str(reference.path)]))
    try:
        source.resume(state)
    except CheckpointUnusable:
        return
    ctx = RecordingContext(max_wait_s=0)
    source.run(ctx)  # whatever offset it names: records or rejections, never an exception
    assert len(ctx.tokens) <= 5 + 1
