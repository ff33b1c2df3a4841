"""The checkpoint store: the load rule (missing, corrupt, wrong envelope or version, another source type, a foreign
destination: set aside with the reason, start from the beginning), saves that skip unchanged state, and saves that
survive a crash or a power loss at every step (the next start loads the old or the new state, never fails)."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.checkpoints import CHECKPOINT_VERSION, CheckpointStore, CheckpointWriteFailed
from daemon.durable import LOCAL, FileSystem, LocalFileSystem
from tests.fake_fs import CrashingFS, FaultyFS, PowerLossFS, SimulatedCrash

DEST = "arn:aws:kinesis:us-east-1:000000000000:stream/tweets@1700000000.0"
OLD_STATE: dict[str, Any] = {"files": {"2049:17": {"path": "/data/a.jsonl", "offset": 100, "line": 3}}}
NEW_STATE: dict[str, Any] = {"files": {"2049:17": {"path": "/data/a.jsonl", "offset": 250, "line": 7}}}


@dataclass
class RecordingCheckpointEvents:
    """A CheckpointEvents that keeps every call as (event name, arguments...)."""

    calls: list[tuple[Any, ...]] = field(default_factory=list)

    def checkpoint_missing(self, source: str) -> None:
        self.calls.append(("missing", source))

    def checkpoint_loaded(self, source: str, path: Path, saved_at: str) -> None:
        self.calls.append(("loaded", source, path, saved_at))

    def checkpoint_unusable(self, source: str, path: Path, reason: str, moved_to: Path | None) -> None:
        self.calls.append(("unusable", source, path, reason, moved_to))

    def checkpoint_saved(self, source: str, seconds: float) -> None:
        self.calls.append(("saved", source, seconds))

    def checkpoint_write_failed(self, source: str, error: Exception) -> None:
        self.calls.append(("write_failed", source, error))

    def names(self) -> list[str]:
        return [call[0] for call in self.calls]


def store(directory: Path, fs: FileSystem = LOCAL) -> tuple[CheckpointStore, RecordingCheckpointEvents]:
    events = RecordingCheckpointEvents()
    return CheckpointStore(directory, events, fs), events


def envelope(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "version": CHECKPOINT_VERSION,
        "source": "replay",
        "type": "file",
        "destination": DEST,
        "saved_at": "2026-12-02T02:00:00.000Z",
        "state": OLD_STATE,
    }
    return base | changes


def test_a_saved_checkpoint_loads_back_with_its_envelope(tmp_path: Path) -> None:
    """save writes the documented envelope (0600) and a new store loads the same state, reporting when it was saved."""
    saver, events = store(tmp_path / "checkpoints")
    saver.save("replay", "file", DEST, OLD_STATE)
    assert events.names() == ["saved"]
    path = tmp_path / "checkpoints" / "replay.json"
    document = json.loads(path.read_text())
    assert set(document) == {"version", "source", "type", "destination", "saved_at", "state"}
    assert (document["version"], document["source"], document["type"], document["destination"]) == (1, "replay", "file", DEST)
    assert document["state"] == OLD_STATE and document["saved_at"].endswith("Z")
    assert path.stat().st_mode & 0o777 == 0o600
    loader, events = store(tmp_path / "checkpoints")
    assert loader.load("replay", "file", DEST) == OLD_STATE
    assert events.calls == [("loaded", "replay", path, document["saved_at"])]


def test_a_missing_checkpoint_means_start_from_the_beginning(tmp_path: Path) -> None:
    """No file: None and checkpoint_missing, nothing created."""
    loader, events = store(tmp_path)
    assert loader.load("replay", "file", DEST) is None
    assert events.calls == [("missing", "replay")]
    assert os.listdir(tmp_path) == []


UNUSABLE_CASES = {
    "not JSON": (b'{"version": 1, "sour', "corrupt: not JSON"),
    "empty": (b"", "corrupt: not JSON"),
    "not UTF-8": (b"\xff\xfe\x00garbage", "corrupt: not JSON"),
    "NaN in the state": (json.dumps(envelope()).replace('"offset": 100', '"offset": NaN').encode(), "corrupt: not JSON"),
    "a list": (b"[1, 2]", "not a checkpoint: a JSON list"),
    "missing state": (json.dumps({k: v for k, v in envelope().items() if k != "state"}).encode(), "missing keys ['state']"),
    "extra key": (json.dumps(envelope(extra=1)).encode(), "unexpected keys ['extra']"),
    "state not an object": (json.dumps(envelope(state=[1])).encode(), "state is a list, not a dict"),
    "version 2": (json.dumps(envelope(version=2)).encode(), "version 2: this daemon reads version 1"),
    "version true": (json.dumps(envelope(version=True)).encode(), "version True"),
    "another source": (json.dumps(envelope(source="other")).encode(), "written for source 'other', not 'replay'"),
    "another type": (json.dumps(envelope(type="jetstream")).encode(), "written for a 'jetstream' source, this one is 'file'"),
    "foreign": (json.dumps(envelope(destination="arn:old@1")).encode(), f"foreign: written for arn:old@1, now {DEST}"),
    "no destination saved": (json.dumps(envelope(destination=None)).encode(), f"foreign: written for None, now {DEST}"),
}


@pytest.mark.parametrize("case", list(UNUSABLE_CASES))
def test_an_unusable_checkpoint_is_set_aside_with_its_reason(tmp_path: Path, case: str) -> None:
    """Each unusable file: None, checkpoint_unusable with the reason, the file renamed aside with its bytes intact
    (nothing deleted), so the next save starts a fresh file."""
    raw, reason = UNUSABLE_CASES[case]
    path = tmp_path / "replay.json"
    path.write_bytes(raw)
    loader, events = store(tmp_path)
    assert loader.load("replay", "file", DEST) is None
    [(name, source, reported, text, moved_to)] = events.calls
    assert (name, source, reported) == ("unusable", "replay", path)
    assert reason in text
    assert moved_to is not None and moved_to.name.startswith("replay.json.unusable-")
    assert moved_to.read_bytes() == raw and not path.exists()
    loader.save("replay", "file", DEST, NEW_STATE)
    assert store(tmp_path)[0].load("replay", "file", DEST) == NEW_STATE


def test_without_a_destination_any_saved_destination_is_accepted(tmp_path: Path) -> None:
    """A sink that cannot name its destination (None) does not make every checkpoint foreign."""
    (tmp_path / "replay.json").write_text(json.dumps(envelope(destination="arn:old@1")))
    assert store(tmp_path)[0].load("replay", "file", None) == OLD_STATE


def test_set_aside_files_never_overwrite_each_other(tmp_path: Path) -> None:
    """Two files set aside in the same second keep distinct names: earlier evidence is not overwritten."""
    loader, events = store(tmp_path)
    for raw in (b"first", b"second"):
        (tmp_path / "replay.json").write_bytes(raw)
        assert loader.load("replay", "file", DEST) is None
    moved = sorted(path.read_bytes() for path in tmp_path.iterdir())
    assert moved == [b"first", b"second"] and events.names() == ["unusable", "unusable"]


def test_set_aside_on_request_of_the_source(tmp_path: Path) -> None:
    """set_aside (the source raised CheckpointUnusable on a loaded state) moves the file and reports the reason."""
    loader, events = store(tmp_path)
    loader.save("replay", "file", DEST, OLD_STATE)
    assert loader.load("replay", "file", DEST) == OLD_STATE
    loader.set_aside("replay", "unknown position format")
    assert events.calls[-1][0:4] == ("unusable", "replay", tmp_path / "replay.json", "unknown position format")
    assert events.calls[-1][4] is not None and not (tmp_path / "replay.json").exists()
    loader.save("replay", "file", DEST, OLD_STATE)  # not skipped: the file is gone
    assert (tmp_path / "replay.json").exists()


def test_an_unchanged_state_is_not_written_again(tmp_path: Path) -> None:
    """A save equal to the last saved or loaded state makes no file call at all (no fsync while idle); a changed
    state, or the same dict mutated in place, is written."""
    counter = CrashingFS(LOCAL, crash_at=None)
    saver, events = store(tmp_path, counter)
    state: dict[str, Any] = {"cursor": 1}
    saver.save("jet", "jetstream", DEST, state)
    writes = counter.steps()
    saver.save("jet", "jetstream", DEST, {"cursor": 1})
    assert counter.steps() == writes and events.names() == ["saved"]
    state["cursor"] = 2  # the source mutated what it handed over: the store compares against what it wrote
    saver.save("jet", "jetstream", DEST, state)
    assert counter.steps() > writes and events.names() == ["saved", "saved"]
    loader, _ = store(tmp_path, counter)
    assert loader.load("jet", "jetstream", DEST) == {"cursor": 2}
    steps = counter.steps()
    loader.save("jet", "jetstream", DEST, {"cursor": 2})
    assert counter.steps() == steps


def test_source_names_map_to_safe_file_names(tmp_path: Path) -> None:
    """A source name with a separator or a leading dot cannot escape the checkpoint directory."""
    saver, _ = store(tmp_path / "checkpoints")
    saver.save("../evil/x", "file", None, OLD_STATE)
    assert os.listdir(tmp_path) == ["checkpoints"]
    assert os.listdir(tmp_path / "checkpoints") == ["%2E.%2Fevil%2Fx.json"]
    assert store(tmp_path / "checkpoints")[0].load("../evil/x", "file", None) == OLD_STATE


def test_a_non_utf8_file_name_in_the_state_round_trips(tmp_path: Path) -> None:
    """A path that is not UTF-8 (surrogate escapes) is saved as escapes and loads back as the same str."""
    state = {"path": os.fsdecode(b"/data/\xff.jsonl")}
    saver, _ = store(tmp_path)
    saver.save("replay", "file", DEST, state)
    assert store(tmp_path)[0].load("replay", "file", DEST) == state


def test_a_failed_write_is_reported_and_raised_and_the_old_checkpoint_stays(tmp_path: Path) -> None:
    """ENOSPC during a save: checkpoint_write_failed, CheckpointWriteFailed, the old checkpoint still loads, and the
    next save (disk freed) writes again instead of being skipped as unchanged."""
    faulty = FaultyFS(LOCAL)
    saver, events = store(tmp_path, faulty)
    saver.save("replay", "file", DEST, OLD_STATE)
    faulty.faults["write"] = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    with pytest.raises(CheckpointWriteFailed, match="No space left") as raised:
        saver.save("replay", "file", DEST, NEW_STATE)
    assert isinstance(raised.value.__cause__, OSError)
    assert events.names() == ["saved", "write_failed"]
    assert store(tmp_path)[0].load("replay", "file", DEST) == OLD_STATE
    del faulty.faults["write"]
    saver.save("replay", "file", DEST, NEW_STATE)
    assert store(tmp_path)[0].load("replay", "file", DEST) == NEW_STATE


def test_a_state_that_is_not_json_is_a_reported_write_failure(tmp_path: Path) -> None:
    """A source bug (a set in the state) is reported and raised as CheckpointWriteFailed, not a crash."""
    saver, events = store(tmp_path)
    with pytest.raises(CheckpointWriteFailed, match="not JSON-able"):
        saver.save("replay", "file", DEST, {"keys": {1, 2}})
    assert events.names() == ["write_failed"] and os.listdir(tmp_path) == []


def save_steps(tmp_path: Path, first: bool) -> int:
    """How many mutating calls one save makes (the first one also creates the directory)."""
    root = tmp_path / "count"
    counter = CrashingFS(LOCAL, crash_at=None)
    saver, _ = store(root / "checkpoints", counter)
    if not first:
        saver.save("replay", "file", DEST, OLD_STATE)
    before = counter.steps()
    saver.save("replay", "file", DEST, NEW_STATE)
    return counter.steps() - before


@pytest.mark.parametrize("first", [False, True], ids=["replace", "first save"])
@pytest.mark.parametrize("power_loss", [False, True], ids=["crash", "power loss"])
def test_a_crash_at_every_step_of_a_save_leaves_the_old_or_the_new_state(tmp_path: Path, first: bool, power_loss: bool) -> None:
    """A process crash (or a crash then a power loss) at each step of a save: a new store loads the old state (or
    none on a first save) or the new one, never an unusable file; after a power loss with save returned, the new one;
    and the next save over the leftovers works."""
    steps = save_steps(tmp_path, first)
    assert steps >= 5
    outcomes = []
    for crash_at in [*range(1, steps + 1), None]:
        root = tmp_path / f"run-{crash_at}"
        root.mkdir()
        directory = root / "checkpoints"
        if not first:
            store(directory)[0].save("replay", "file", DEST, OLD_STATE)
        power = PowerLossFS(root)
        crashing = CrashingFS(power, crash_at, writes_torn=True)
        with contextlib.suppress(SimulatedCrash):
            store(directory, crashing)[0].save("replay", "file", DEST, NEW_STATE)
        assert crashing.crashed == (crash_at is not None)
        if power_loss:
            power.power_loss(torn=True)
        loader, events = store(directory)
        loaded = loader.load("replay", "file", DEST)
        assert "unusable" not in events.names(), events.calls
        outcomes.append(loaded)
        loader.save("replay", "file", DEST, {"after": crash_at})
        assert store(directory)[0].load("replay", "file", DEST) == {"after": crash_at}
        assert os.listdir(directory) == ["replay.json"]
    assert all(outcome in (None if first else OLD_STATE, NEW_STATE) for outcome in outcomes), outcomes
    assert outcomes[-1] == NEW_STATE  # save returned: durable even across a power loss
    assert outcomes[0] == (None if first else OLD_STATE)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
valid_states = st.dictionaries(st.text(max_size=8), json_values, max_size=4)
envelopes = st.fixed_dictionaries(
    {},
    optional={
        "version": st.sampled_from([1, 2, True, "1", None]) | json_values,
        "source": st.sampled_from(["replay", "other"]) | json_values,
        "type": st.sampled_from(["file", "jetstream"]) | json_values,
        "destination": st.sampled_from([DEST, None, "arn:old@1"]) | json_values,
        "saved_at": st.sampled_from(["2026-12-02T02:00:00.000Z"]) | json_values,
        "state": valid_states | json_values,
    },
)
checkpoint_bytes = (
    st.binary(max_size=300)
    | valid_states.map(lambda state: json.dumps(envelope(state=state)).encode())
    | envelopes.map(lambda document: json.dumps(document).encode())
    | st.builds(lambda document, cut: json.dumps(document).encode()[:cut], envelopes, st.integers(0, 400))
    | st.integers(1, 5000).map(lambda depth: b"[" * depth * 10)
)


class NoSyncFS(LocalFileSystem):
    """Real files without the fsyncs: the property is about parsing, and 200 examples x fsync is slow."""

    def fsync_dir(self, path: Path) -> None:
        pass


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=checkpoint_bytes)
def test_any_bytes_load_as_a_valid_state_or_an_unusable_report(tmp_path: Path, raw: bytes) -> None:
    """Whatever the checkpoint file holds, load never raises: it returns a dict (reported loaded, file kept) or None
    (reported unusable with a reason, the bytes moved aside intact)."""
    directory = Path(tempfile.mkdtemp(dir=tmp_path))  # one per example: tmp_path is shared by all of them
    (directory / "replay.json").write_bytes(raw)
    loader, events = store(directory, NoSyncFS())
    loaded = loader.load("replay", "file", DEST)
    if loaded is None:
        [(name, _, _, reason, moved_to)] = events.calls
        assert name == "unusable" and reason
        assert moved_to is not None and moved_to.read_bytes() == raw
        assert not (directory / "replay.json").exists()
    else:
        assert isinstance(loaded, dict) and events.names() == ["loaded"]
        assert json.loads(raw)["state"] == loaded
    for path in directory.iterdir():
        path.unlink()
    directory.rmdir()
