"""File source checkpoints: tokens on every input, the saved state, and where a restart resumes from it.

Each test runs the source in-process with a RecordingContext, folds its tokens through the daemon's
ProgressWindow (acknowledging the records the test says), saves `checkpoint_state` through JSON as the
daemon does, and starts a new source from it with `resume`.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from daemon.progress import ProgressWindow
from sources.file import FileSource, FileSourceConfig
from sources.file_checkpoint import KIND_REPLACED, KIND_TRUNCATED
from tests.fakes import RecordingContext

RUN_DEADLINE_S = 10.0


def lines(first: int, count: int) -> bytes:
    """JSON lines {"n": first}, {"n": first + 1}, ..."""
    return b"".join(b'{"n": %d}\n' % n for n in range(first, first + count))


def key(path: Path) -> str:
    stat = os.stat(path)
    return f"{stat.st_dev}:{stat.st_ino}"


def replay(state: dict[str, Any] | None = None, **config: Any) -> tuple[FileSource, RecordingContext]:
    """Run a file source (resumed from `state` if given) to its end, or until the context stops it."""
    stop_after = config.pop("stop_after_emits", None)
    source = FileSource(FileSourceConfig(**config))
    if state is not None:
        source.resume(state)
    ctx = RecordingContext(max_wait_s=0, stop_after_emits=stop_after)
    failure: list[BaseException] = []

    def target() -> None:
        try:
            source.run(ctx)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
            failure.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(RUN_DEADLINE_S)
    if thread.is_alive():  # e.g. a loop that finds nothing to read, pass after pass
        ctx.stop.set()
        thread.join(RUN_DEADLINE_S)
        raise AssertionError(f"the source did not finish within {RUN_DEADLINE_S}s; it handed over {len(ctx.tokens)} inputs")
    if failure:
        raise failure[0]
    return source, ctx


def saved(source: FileSource, ctx: RecordingContext, acked: Iterable[int] | None = None) -> dict[str, Any]:
    """The state the daemon would save once the inputs numbered `acked` (all by default) were acknowledged."""
    window = ProgressWindow()
    numbers = [window.emitted(*token) for _, token in ctx.tokens]
    window.acknowledged(numbers if acked is None else [numbers[i] for i in acked])
    return json.loads(json.dumps(source.checkpoint_state(window.committed())))


def ns(ctx: RecordingContext) -> list[int]:
    return [event["n"] for event in ctx.events()]


@pytest.mark.parametrize("rate", [0, 1_000_000], ids=["fast_path", "rate_limited_path"])
def test_tokens_on_emits_and_rejects_in_order(tmp_path: Path, rate: float) -> None:
    """Every emit and every reject carries (file identity, (next offset, next line, pass, generation)), in input order."""
    path = tmp_path / "in.jsonl"
    content = b'{"n": 0}\n{"n": 1}\nnot json\n{"n": 3}\n'
    path.write_bytes(content)
    _, ctx = replay(paths=[str(path)], rate=rate)
    ends = [content.index(b"\n", at) + 1 for at in (0, 9, 18, 27)]
    assert [kind for kind, _ in ctx.tokens] == ["emit", "emit", "reject", "emit"]
    assert {token[0] for _, token in ctx.tokens} == {key(path)}
    assert [token[1][:3] for _, token in ctx.tokens] == [(end, n + 2, 0) for n, end in enumerate(ends)]
    assert len(ctx.emitted) == 3 and len(ctx.rejected) == 1


def test_no_tokens_without_checkpoint(tmp_path: Path) -> None:
    """checkpoint: false hands over the same records with no tokens, and checkpoints() says so."""
    path = tmp_path / "in.jsonl"
    path.write_bytes(lines(0, 3))
    source, ctx = replay(paths=[str(path)], checkpoint=False)
    assert not source.checkpoints()
    assert ns(ctx) == [0, 1, 2] and ctx.tokens == [("emit", None)] * 3


def test_state_has_the_pinned_format(tmp_path: Path) -> None:
    """The saved state names each file by identity with path, next offset and line, pass and a sha256 fingerprint."""
    path = tmp_path / "in.jsonl"
    path.write_bytes(lines(0, 200))  # over 1024 bytes: the fingerprint covers the first 1024
    source, ctx = replay(paths=[str(path)])
    state = saved(source, ctx, range(3))
    content = path.read_bytes()
    assert state == {
        "format": 1,
        "pass": 0,
        "files": {
            key(path): {
                "path": str(path),
                "offset": len(lines(0, 3)),
                "line": 4,
                "pass": 0,
                "fingerprint": hashlib.sha256(content[:1024]).hexdigest(),
                "fingerprint_bytes": 1024,
            }
        },
    }


@pytest.mark.parametrize("order", ["in_order", "reversed"])
def test_resume_after_a_partial_ack_starts_right_after_the_acknowledged_prefix(tmp_path: Path, order: str) -> None:
    """Acks 0-2 and 4-6 of 10 (in or out of order): the gap at 3 holds the checkpoint, the restart sends 3-9 exactly."""
    path = tmp_path / "in.jsonl"
    path.write_bytes(lines(0, 10))
    source, ctx = replay(paths=[str(path)])
    acked = [0, 1, 2, 4, 5, 6]
    state = saved(source, ctx, acked if order == "in_order" else reversed(acked))
    assert state["files"][key(path)]["offset"] == len(lines(0, 3))
    resumed, again = replay(state, paths=[str(path)])
    assert ns(again) == list(range(3, 10))
    assert again.emitted[0][2] == f"{path}:4"  # line numbers go on from the checkpoint
    assert saved(resumed, again)["files"][key(path)]["offset"] == path.stat().st_size


def test_a_finished_replay_resumes_with_nothing_to_read(tmp_path: Path) -> None:
    """All acknowledged: a restart reads nothing (not a record, not a rejection), and saves the same state again."""
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_bytes(lines(0, 3))
    second.write_bytes(lines(3, 2) + b"oops\n")
    config: dict[str, Any] = {"paths": [str(tmp_path)]}
    source, ctx = replay(**config)
    assert len(ctx.tokens) == 6
    state = saved(source, ctx)
    resumed, again = replay(state, **config)
    assert again.tokens == [] and again.emitted == [] and again.rejected == []
    assert saved(resumed, again) == state


def test_unacknowledged_files_are_read_from_their_start(tmp_path: Path) -> None:
    """Only the first file's records acknowledged: the restart skips it and replays the second whole."""
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_bytes(lines(0, 2))
    second.write_bytes(lines(2, 2))
    source, ctx = replay(paths=[str(tmp_path)])
    state = saved(source, ctx, [0, 1, 3])  # 3 without 2: behind the gap, so b.jsonl has no entry
    assert list(state["files"]) == [key(first)]
    _, again = replay(state, paths=[str(tmp_path)])
    assert ns(again) == [2, 3]


def test_loop_reads_files_of_an_older_pass_again_in_the_saved_pass(tmp_path: Path) -> None:
    """loop: stopped in pass 1 after a.jsonl: the restart reads b.jsonl (still of pass 0) in pass 1, then pass 2."""
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_bytes(lines(0, 2))
    second.write_bytes(lines(2, 2))
    config: dict[str, Any] = {"paths": [str(tmp_path)], "loop": True}
    source, ctx = replay(stop_after_emits=6, **config)
    assert ns(ctx) == [0, 1, 2, 3, 0, 1]
    state = saved(source, ctx)
    assert state["pass"] == 1
    assert {name: entry["pass"] for name, entry in state["files"].items()} == {key(first): 1, key(second): 0}
    resumed, again = replay(state, stop_after_emits=6, **config)
    assert ns(again) == [2, 3, 0, 1, 2, 3]
    assert [token[1][2] for _, token in again.tokens] == [1, 1, 2, 2, 2, 2]
    after = saved(resumed, again)
    assert after["pass"] == 2 and {e["pass"] for e in after["files"].values()} == {2}


def test_loop_with_the_whole_pass_finished_starts_the_next_pass(tmp_path: Path) -> None:
    """loop: every file finished in the saved pass: the restart begins the next pass from the first file."""
    path = tmp_path / "a.jsonl"
    path.write_bytes(lines(0, 3))
    config: dict[str, Any] = {"paths": [str(path)], "loop": True}
    source, ctx = replay(stop_after_emits=3, **config)
    state = saved(source, ctx)
    assert state["pass"] == 0 and state["files"][key(path)]["offset"] == path.stat().st_size
    _, again = replay(state, stop_after_emits=3, **config)
    assert ns(again) == [0, 1, 2] and {token[1][2] for _, token in again.tokens} == {1}


def test_another_file_with_the_same_identity_is_read_from_its_start(tmp_path: Path) -> None:
    """Same inode, other first bytes (as after inode reuse): a new file, read from 0, reported as file_replaced."""
    path = tmp_path / "in.jsonl"
    path.write_bytes(lines(0, 4))
    source, ctx = replay(paths=[str(path)])
    state = saved(source, ctx, range(2))
    with path.open("r+b") as handle:  # rewritten in place: the identity stays, the content is another
        handle.write(lines(10, 4))
    assert key(path) in state["files"]
    _, again = replay(state, paths=[str(path)])
    assert ns(again) == [10, 11, 12, 13]
    assert [kind for kind, _ in again.protocol_messages] == [KIND_REPLACED]


def test_a_file_truncated_while_down_is_read_from_its_start(tmp_path: Path) -> None:
    """Now shorter than the saved offset: read again from 0, reported as file_truncated naming the file."""
    path = tmp_path / "in.jsonl"
    path.write_bytes(lines(0, 6))
    source, ctx = replay(paths=[str(path)])
    state = saved(source, ctx)
    with path.open("r+b") as handle:  # copytruncate while stopped, then two new lines
        handle.truncate(0)
        handle.write(lines(20, 2))
    _, again = replay(state, paths=[str(path)])
    assert ns(again) == [20, 21]
    assert len(again.protocol_messages) == 1
    kind, detail = again.protocol_messages[0]
    assert kind == KIND_TRUNCATED and str(path) in detail


def test_a_grown_file_resumes_at_its_offset(tmp_path: Path) -> None:
    """Appended to while down (same first bytes, longer): only the new lines are read."""
    path = tmp_path / "in.jsonl"
    path.write_bytes(lines(0, 3))
    source, ctx = replay(paths=[str(path)])
    state = saved(source, ctx)
    with path.open("ab") as handle:
        handle.write(lines(3, 2))
    _, again = replay(state, paths=[str(path)])
    assert ns(again) == [3, 4] and again.protocol_messages == []


def test_gzip_files_resume_in_their_decompressed_content(tmp_path: Path) -> None:
    """A .gz file: offsets and the fingerprint are of its content; a partial ack resumes, a full one reads nothing."""
    path = tmp_path / "in.jsonl.gz"
    content = lines(0, 5)
    path.write_bytes(gzip.compress(content))
    source, ctx = replay(paths=[str(path)])
    state = saved(source, ctx, range(2))
    entry = state["files"][key(path)]
    assert entry["offset"] == len(lines(0, 2))
    assert entry["fingerprint"] == hashlib.sha256(content).hexdigest() and entry["fingerprint_bytes"] == len(content)
    resumed, again = replay(state, paths=[str(path)])
    assert ns(again) == [2, 3, 4]
    _, third = replay(saved(resumed, again), paths=[str(path)])
    assert third.tokens == []


def test_a_damaged_gzip_file_is_not_reported_again_after_a_restart(tmp_path: Path) -> None:
    """A cut-off .gz: its lines and the damage are handed over once; the restart reads nothing of it."""
    path = tmp_path / "in.jsonl.gz"
    whole = gzip.compress(lines(0, 300))
    path.write_bytes(whole[: len(whole) - 20])
    source, ctx = replay(paths=[str(path)])
    assert [reason for _, _, reason, _ in ctx.rejected] == ["gzip_truncated"]
    assert ctx.tokens[-1][0] == "reject"
    state = saved(source, ctx)
    assert state["files"][key(path)].get("broken") is True
    _, again = replay(state, paths=[str(path)])
    assert again.tokens == []


def test_csv_resumes_after_the_header_with_its_columns(tmp_path: Path) -> None:
    """CSV: the header takes no token; a restart re-reads it and decodes the remaining rows by it."""
    path = tmp_path / "in.csv"
    path.write_bytes(b"data.id,data.text\n1,one\n2,two\n3,three\n4,four\n")
    source, ctx = replay(paths=[str(path)], format="csv")
    assert [kind for kind, _ in ctx.tokens] == ["emit"] * 4
    state = saved(source, ctx, range(2))
    assert state["files"][key(path)]["line"] == 4
    _, again = replay(state, paths=[str(path)], format="csv")
    assert again.events() == [{"data": {"id": "3", "text": "three"}}, {"data": {"id": "4", "text": "four"}}]
    assert again.rejected == [] and again.emitted[0][2] == f"{path}:4"


def test_state_keeps_restored_files_this_run_did_not_reach(tmp_path: Path) -> None:
    """A file of the restored state that this run has not acknowledged anything of keeps its saved entry."""
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_bytes(lines(0, 2))
    second.write_bytes(lines(2, 2))
    source, ctx = replay(paths=[str(tmp_path)])
    state = saved(source, ctx, range(3))
    resumed, again = replay(state, paths=[str(tmp_path)])
    assert ns(again) == [3]
    nothing_acked = saved(resumed, again, [])
    assert nothing_acked == state


def test_tokens_go_on_after_a_crash_and_a_skipped_input(tmp_path: Path) -> None:
    """run crashes on an emit, the input is skipped (as the supervisor does): later tokens start after it."""
    path = tmp_path / "in.jsonl"
    path.write_bytes(lines(0, 5))
    source = FileSource(FileSourceConfig(paths=[str(path)]))
    ctx = RecordingContext(max_wait_s=0, crash_after_emits=2)
    with pytest.raises(OSError, match="disk hiccup"):
        source.run(ctx)
    position = source.position()
    assert position is not None and position[3] == len(lines(0, 2))
    skipped = source.skip(position)
    assert skipped is not None and skipped.data == b'{"n": 2}'
    source.run(ctx)
    assert ns(ctx) == [0, 1, 3, 4]
    assert [token[1][:2] for _, token in ctx.tokens] == [(len(lines(0, n)), n + 1) for n in (1, 2, 4, 5)]
    state = saved(source, ctx)
    _, again = replay(state, paths=[str(path)])
    assert again.tokens == []


def test_a_skipped_last_input_carries_the_token_after_it(tmp_path: Path) -> None:
    """The poison input is the file's last: its skip carries the position after it, so a checkpoint that passes
    it (once dead-lettered) reads nothing again at the next start - no second dead letter for it."""
    path = tmp_path / "in.jsonl"
    path.write_bytes(lines(0, 3))
    source = FileSource(FileSourceConfig(paths=[str(path)]))
    ctx = RecordingContext(max_wait_s=0, crash_after_emits=2)
    with pytest.raises(OSError, match="disk hiccup"):
        source.run(ctx)
    position = source.position()
    assert position is not None
    skipped = source.skip(position)
    assert skipped is not None and skipped.data == b'{"n": 2}'
    assert skipped.token == (ctx.tokens[-1][1][0], (len(lines(0, 3)), 4, 0, skipped.token[1][3]))
    ctx.tokens.append(("reject", skipped.token))  # what the supervisor's reject hands over
    state = saved(source, ctx)
    _, again = replay(state, paths=[str(path)])
    assert again.tokens == [] and again.rejected == []
