"""Records of a checkpointed source reach its progress window: delivered, dead-lettered and rejected records
are acknowledged, lost and unsent ones are not, and unsent records of such a source are kept, not dead-lettered."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from daemon.app import Acknowledger
from daemon.buffer import RecordBuffer
from daemon.deadletter import DeadLetterFile
from daemon.pipeline import FatalStop, SinkWorker, SourceContext
from daemon.progress import ProgressWindow
from daemon.telemetry import Telemetry
from sinks.base import Record
from sinks.batch import BatchLimits
from tests.fakes import ScriptedSink, ledger

WAIT_S = 5.0
SOURCE = "src"


def line(record: Record) -> int:
    return int(record.origin.rpartition(":")[2])


class Rig:
    """A source context numbering into a progress window, a scripted sink, and the worker between them."""

    def __init__(self, tmp_path: Path, sink: ScriptedSink, keeping: bool = True) -> None:
        self.path = tmp_path / "dl.jsonl"
        self.telemetry = Telemetry("fake")
        self.dead_letters = DeadLetterFile(self.path, "fake")
        self.fatal = FatalStop(self.telemetry)
        self.window = ProgressWindow()
        self.buffer = RecordBuffer(max_records=1000, max_bytes=10**6)
        kept = frozenset({SOURCE}) if keeping else frozenset()
        acknowledge = Acknowledger({SOURCE: self.window}, self.telemetry)
        self.worker = SinkWorker(sink, self.buffer, self.telemetry, self.dead_letters, self.fatal, acknowledge, kept)
        self.stopping = threading.Event()
        self.context = SourceContext(
            SOURCE, self.buffer, self.telemetry, self.dead_letters, self.stopping, sink, self.fatal, self.window, kept
        )

    def dead(self) -> list[dict[str, Any]]:
        self.dead_letters.close()
        return [json.loads(text) for text in self.path.read_text().splitlines()] if self.path.exists() else []


def test_the_checkpoint_covers_sent_and_dead_lettered_records_but_stops_at_an_unsent_one(tmp_path: Path) -> None:
    """Line 3 dead-lettered, line 6 unsent at shutdown: the committed position is line 5's, the unsent one is
    kept (counted, not in the dead-letter file), and lines after it do not move the checkpoint."""
    decide = {3: "failed", 6: "unsent"}
    sink = ScriptedSink(BatchLimits(1, 10**6, 0.0), lambda r: decide.get(line(r), "sent"))
    rig = Rig(tmp_path, sink)
    rig.worker.start()
    for n in range(1, 11):
        assert rig.context.emit(b"{}", {}, f"f:{n}", token=("f", n))
    rig.worker.finish(WAIT_S)
    assert rig.window.committed() == {"f": 5}
    assert rig.telemetry.ledger.totals() == ledger(received=10, sent=8, dead_lettered=1, kept=1)
    assert [d["origin"] for d in rig.dead()] == ["f:3"]
    assert rig.window.lag()[0] == 5


def test_rejected_input_and_records_the_sink_refuses_are_done_at_once(tmp_path: Path) -> None:
    """A rejected line and a record `prepare` refuses are dead-lettered and acknowledged once the dead-letter
    file was fsynced (the checkpoint thread syncs it at every round): then the checkpoint reaches the last line."""
    sink = ScriptedSink(BatchLimits(5, 10**6, 0.0), reject_when=lambda r: line(r) == 4)
    rig = Rig(tmp_path, sink)
    rig.worker.start()
    for n in range(1, 9):
        if n == 2:
            rig.context.reject(b"{bad", f"f:{n}", "invalid_json", "scripted", token=("f", n))
        else:
            assert rig.context.emit(b"{}", {}, f"f:{n}", token=("f", n))
    rig.worker.finish(WAIT_S)
    # Rejected input is written without waiting for the disk; it is done once an fsync covered it.
    assert rig.window.committed() == {"f": 1}
    rig.dead_letters.sync()
    assert rig.window.committed() == {"f": 8}
    assert sorted(d["origin"] for d in rig.dead()) == ["f:2", "f:4"]


def test_a_record_lost_with_the_dead_letter_file_is_never_acknowledged(tmp_path: Path) -> None:
    """The dead-letter file broke: a failed record is lost (counted, fatal) and the checkpoint stays before it,
    so the next start reads it again."""
    sink = ScriptedSink(BatchLimits(1, 10**6, 0.0), lambda r: "failed" if line(r) == 2 else "sent")
    rig = Rig(tmp_path, sink)
    rig.dead_letters.close()  # every write is refused from now on, as after a failed write
    rig.worker.start()
    for n in range(1, 5):
        assert rig.context.emit(b"{}", {}, f"f:{n}", token=("f", n))
    rig.worker.finish(WAIT_S)
    assert rig.window.committed() == {"f": 1}
    assert rig.telemetry.ledger.totals()["lost"] == 1


def test_unsent_records_of_a_source_without_state_still_go_to_the_dead_letter_file(tmp_path: Path) -> None:
    """A source with neither checkpoint nor spool: its unsent records are written for replay, as before."""
    sink = ScriptedSink(BatchLimits(1, 10**6, 0.0), lambda r: "unsent")
    rig = Rig(tmp_path, sink, keeping=False)
    rig.worker.start()
    for n in range(1, 4):
        assert rig.context.emit(b"{}", {}, f"f:{n}", token=("f", n))
    rig.worker.finish(WAIT_S)
    assert rig.telemetry.ledger.totals()["unsent"] == 3
    assert [d["reason"] for d in rig.dead()] == ["unsent_at_shutdown"] * 3
