"""No silent death: a failure of the daemon's own parts stops it loudly, with a non-zero exit a supervisor acts on."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from daemon.app import EXIT_FATAL, watch_threads
from daemon.buffer import RecordBuffer
from daemon.deadletter import DeadLetterFile
from daemon.pipeline import COMPONENT_SINK_WORKER, FatalStop, SinkWorker, SourceContext
from daemon.supervisor import SourceSupervisor
from daemon.telemetry import Telemetry
from sinks.batch import BatchLimits
from sources.base import Source, SourceConfig
from sources.base import SourceContext as SourceContextProtocol
from tests.fakes import ScriptedSink

# Embedded stack start-up plus the flush deadline, with a wide margin for a loaded machine.
EXIT_DEADLINE_S = 90

BODY = """
sources:
  - name: replay
    type: file
    paths: ["{replay}"]
    rate: 50
sink:
  type: kinesis
dead_letter:
  path: /dev/full
shutdown:
  flush_deadline: 5s
"""


@pytest.mark.slow
def test_an_unwritable_dead_letter_file_stops_the_daemon_with_exit_fatal(tmp_path: Path, daemon_factory: Any) -> None:
    """With dead_letter.path on /dev/full (ENOSPC), the first bad line makes the daemon log fatal_error naming the file
    and its cause, log the record it could not keep (records_lost, with its origin) and exit EXIT_FATAL on its own."""
    replay = tmp_path / "tweets.jsonl"
    good = [f'{{"data": {{"id": "{n}", "text": "t", "author_id": "a{n}"}}}}' for n in range(5)]
    replay.write_text("\n".join([*good, "this is not json", *good]) + "\n", encoding="utf-8")
    daemon = daemon_factory(BODY.format(replay=replay)).start()
    returncode = daemon.process.wait(EXIT_DEADLINE_S)
    logs = daemon.logs()
    assert returncode == EXIT_FATAL, daemon.stdout_path.read_text()[-5000:]
    (fatal,) = [e for e in logs if e.get("event") == "fatal_error"]
    assert fatal["component"] == "dead_letter_file" and "No space left" in fatal["cause"]
    lost_origins = [o for e in logs if e.get("event") == "records_lost" for o in e["origins"]]
    assert f"{replay}:6" in lost_origins
    (summary,) = [e for e in logs if e.get("event") == "shutdown_complete"]
    assert summary["fatal"] == ["dead_letter_file"]
    assert summary["received"] == summary["sent"] + summary["dead_lettered"] + summary["unsent"] + summary["lost"]
    assert summary["lost"] >= 1 and summary["sent"] >= 5, "the best-effort flush still delivers the good lines"


class _Idle(Source):
    config_model = SourceConfig

    def run(self, ctx: SourceContextProtocol) -> None:
        ctx.wait(60)


def test_a_worker_or_supervisor_thread_that_ended_unexpectedly_is_fatal(tmp_path: Path) -> None:
    """The main loop's watch: a sink worker thread or a supervisor thread that ended without finishing is fatal."""
    telemetry, stopping = Telemetry("s"), threading.Event()
    fatal = FatalStop(telemetry)
    buffer = RecordBuffer(10, 10**6)
    dead_letters = DeadLetterFile(tmp_path / "dl.jsonl", "s")
    sink = ScriptedSink(BatchLimits(10, 10**6, 0.01))
    worker = SinkWorker(sink, buffer, telemetry, dead_letters, fatal)
    context = SourceContext("idle", buffer, telemetry, dead_letters, stopping, sink, fatal)
    supervisor = SourceSupervisor(_Idle(SourceConfig(type="idle")), context, telemetry, stopping, 0.05, 0.1, fatal)
    # Threads that end at once, as if killed by something no except clause saw.
    worker.thread = threading.Thread(target=lambda: None)
    supervisor.thread = threading.Thread(target=lambda: None)
    watch_threads(fatal, worker, [supervisor])
    assert not fatal.triggered, "threads not started yet are not dead"
    worker.thread.start()
    supervisor.thread.start()
    worker.thread.join()
    supervisor.thread.join()
    watch_threads(fatal, worker, [supervisor])
    assert [c for c, _ in fatal.failures] == [COMPONENT_SINK_WORKER, "source supervisor idle"]
    assert fatal.wake.is_set()
