"""A reload that changes only a source's transforms restarts that source with the new chain (real daemon, SIGHUP):
lines read before it went through the old filter, lines read after through the new one, each line once."""

from __future__ import annotations

import signal
from collections import Counter
from pathlib import Path
from typing import Any

from tests.daemon.test_kinesis_delivery import LAND_TIMEOUT_S, START_TIMEOUT_S, fake, start, stop  # noqa: F401 - fixture
from tests.daemon.transforms.test_daemon import body, broken, lines_from, shipped
from tests.daemon.transforms.tweets import line
from tests.fake_kinesis import FakeKinesis

BEFORE, AFTER = 120, 90


def test_a_changed_filter_applies_to_what_the_restarted_source_reads(
    tmp_path: Path,
    daemon_factory: Any,
    fake: FakeKinesis,  # noqa: F811 - the fixture
) -> None:
    """Japanese tweets are kept before the reload, English ones after it; the stream holds each kept line once."""
    first = lines_from(0, BEFORE)
    replay = tmp_path / "tweets.jsonl"
    replay.write_bytes(b"".join(line(e) + b"\n" for e in first))
    daemon = start(daemon_factory, body(replay, fake))
    daemon.wait_for_event("all_sources_finished", timeout=LAND_TIMEOUT_S)
    kept_before = [b for b in map(shipped, first) if b is not None]
    assert fake.wait_for_user_records(len(kept_before), timeout_s=LAND_TIMEOUT_S)

    more = lines_from(BEFORE, AFTER)
    with replay.open("ab") as out:
        out.write(b"".join(line(e) + b"\n" for e in more))
    text = daemon.config_path.read_text(encoding="utf-8")
    daemon.config_path.write_text(text.replace("data.lang == 'ja'", "data.lang == 'en'", 1), encoding="utf-8")
    assert daemon.process is not None
    daemon.process.send_signal(signal.SIGHUP)
    assert daemon.wait_for_event("config_reloaded", timeout=START_TIMEOUT_S)["restarted"] == ["replay"]

    kept_after = [b for b in (shipped(e, lang="en") for e in more) if b is not None]
    assert fake.wait_for_user_records(len(kept_before) + len(kept_after), timeout_s=LAND_TIMEOUT_S)
    summary = stop(daemon)
    assert Counter(r.data for r in fake.user_records()) == Counter(kept_before + kept_after)
    assert summary["received"] == BEFORE + AFTER
    # Tweets the projection cannot take fail only before the reload: after it, the English filter drops them first.
    failing = sum(map(broken, first))
    assert (summary["sent"], summary["dead_lettered"]) == (len(kept_before) + len(kept_after), failing)
    assert summary["filtered"] == BEFORE + AFTER - summary["sent"] - failing


def test_an_invalid_expression_in_a_reload_is_refused_at_its_line_and_the_old_filter_goes_on(
    tmp_path: Path,
    daemon_factory: Any,
    fake: FakeKinesis,  # noqa: F811 - the fixture
) -> None:
    """A reload whose filter does not parse is refused as FILE:LINE: key: problem; the source is not restarted, and
    lines appended afterwards still go through the old filter."""
    first = lines_from(0, BEFORE)
    replay = tmp_path / "tweets.jsonl"
    replay.write_bytes(b"".join(line(e) + b"\n" for e in first))
    # Following the file (tail -F): the same source, never restarted, reads what is appended after the reload.
    daemon = start(daemon_factory, body(replay, fake).replace("    type: file\n", "    type: file\n    follow: true\n", 1))
    kept_before = [b for b in map(shipped, first) if b is not None]
    assert fake.wait_for_user_records(len(kept_before), timeout_s=LAND_TIMEOUT_S)

    text = daemon.config_path.read_text(encoding="utf-8")
    broken_text = text.replace("data.lang == 'ja'", "data.lang == = 'en'", 1)
    assert broken_text != text
    daemon.config_path.write_text(broken_text, encoding="utf-8")
    outcome = daemon.reload()
    assert (outcome["event"], outcome["result"]) == ("config_reload_failed", "invalid"), outcome
    line_number = next(n for n, row in enumerate(broken_text.splitlines(), 1) if "data.lang == = 'en'" in row)
    [problem] = outcome["problems"]
    assert problem.startswith(f"{daemon.config_path}:{line_number}: sources[0].transforms[0].filter: "), problem

    more = lines_from(BEFORE, AFTER)
    with replay.open("ab") as out:
        out.write(b"".join(line(e) + b"\n" for e in more))
    kept_after = [b for b in map(shipped, more) if b is not None]  # still the Japanese filter
    assert fake.wait_for_user_records(len(kept_before) + len(kept_after), timeout_s=LAND_TIMEOUT_S)
    stop(daemon)
    assert Counter(r.data for r in fake.user_records()) == Counter(kept_before + kept_after)
    assert len([e for e in daemon.logs() if e.get("event") == "source_started"]) == 1
