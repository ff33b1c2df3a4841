"""Kinesis sink retries against a scripted endpoint: partial re-sends, whole-call failures, permanent errors,
attempt limits and the events reported for each."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from typing import Any

import pytest

from sinks.base import Record
from sinks.kinesis import KinesisSink
from sinks.kinesis.records import KinesisEntry
from sinks.kinesis.retry import REASON_PUT_REJECTED, REASON_RETRIES_EXHAUSTED, Backoff, decide
from sinks.kinesis.service import CallFailed, EntryFailure, FailureKind, PutResponse
from tests.fakes import Reply
from tests.sinks.conftest import (
    DROPPED,
    INTERNAL_500,
    THROTTLED,
    RecordingEvents,
    ScriptedKinesis,
    accept_all,
    assert_accounted,
    deliver,
    fail_positions,
    whole_call,
)

PTEE = "ProvisionedThroughputExceededException"
REQUEST_EVENTS = frozenset({"put_requested", "put_failed", "records_retried", "sink_health"})
Scenario = tuple[ScriptedKinesis, KinesisSink, list[KinesisEntry]]


@pytest.fixture
def setup(
    kinesis_fake: Callable[..., ScriptedKinesis],
    make_sink: Callable[..., KinesisSink],
    make_records: Callable[..., list[Record]],
) -> Callable[..., Scenario]:
    """Scripts the fake, builds a sink pointed at it and prepares `n` entries: setup(n, *script, **config)."""

    def build(n: int, *script: Callable[[dict[str, Any]], Any], **config: Any) -> Scenario:
        fake = kinesis_fake(*script)
        sink = make_sink(fake.server.endpoint_url, **config)
        return fake, sink, [sink.prepare(r) for r in make_records(n, text="retry ✨ ретрай")]

    return build


def wire(entries: list[KinesisEntry]) -> list[tuple[bytes, str]]:
    """What a PutRecords request for these entries must carry, in order."""
    return [(e.record.data, e.partition_key) for e in entries]


# --- partial failures -------------------------------------------------------------------------------


def test_partial_failure_resends_only_the_failed_entries(setup: Callable[..., Any], events: RecordingEvents) -> None:
    """FailedRecordCount > 0: the second request holds exactly the failed entries, in order; all end sent."""
    fake, sink, batch = setup(5, fail_positions({1: PTEE, 3: "InternalFailure"}))
    result = deliver(sink, batch)
    assert_accounted(batch, result)
    assert fake.requests() == [wire(batch), wire([batch[1], batch[3]])]
    assert result.sent == [batch[0], batch[2], batch[4], batch[1], batch[3]]
    lat = [e["latency_s"] for e in events.named("put_requested")]
    assert [(name, args) for name, args in events.calls if name in REQUEST_EVENTS] == [
        ("put_requested", {"result": "partial", "records": 5, "accepted": 3, "latency_s": lat[0]}),
        ("put_failed", {"code": "InternalFailure", "records": 1,
                        "detail": "entries refused in a partial response: InternalFailure (scripted)"}),
        ("put_failed", {"code": PTEE, "records": 1, "detail": f"entries refused in a partial response: {PTEE} (scripted)"}),
        ("records_retried", {"records": 2, "attempt": 1, "delay_s": events.named("records_retried")[0]["delay_s"],
                             "reason": f"InternalFailure,{PTEE}"}),
        ("put_requested", {"result": "success", "records": 2, "accepted": 2, "latency_s": lat[1]}),
    ]


def test_positions_of_a_retried_request_map_back_to_its_own_entries(setup: Callable[..., Any]) -> None:
    """A failure inside a re-send refers to the re-sent request's positions: the third request is entry 3 alone."""
    fake, sink, batch = setup(5, fail_positions({1: PTEE, 3: PTEE}), fail_positions({1: PTEE}))
    result = deliver(sink, batch)
    assert_accounted(batch, result)
    assert fake.requests() == [wire(batch), wire([batch[1], batch[3]]), wire([batch[3]])]
    assert result.sent == [batch[0], batch[2], batch[4], batch[1], batch[3]]


def test_a_record_level_entry_code_dead_letters_that_entry_while_throttled_ones_retry(
    setup: Callable[..., Any], events: RecordingEvents
) -> None:
    """A per-entry code about the record itself fails that entry (put_rejected, code in detail); only the throttled
    one is re-sent; the sink stays healthy."""
    fake, sink, batch = setup(3, fail_positions({0: "InvalidArgumentException", 2: PTEE}))
    result = deliver(sink, batch)
    assert_accounted(batch, result)
    assert fake.requests() == [wire(batch), wire([batch[2]])]
    assert result.sent == [batch[1], batch[2]]
    [(entry, reason, detail)] = result.failed
    assert entry is batch[0] and reason == REASON_PUT_REJECTED and detail.startswith("InvalidArgumentException")
    assert [e["records"] for e in events.named("records_retried")] == [1]
    assert events.named("sink_health") == []


def test_a_stream_level_entry_code_holds_the_entry_and_marks_the_sink_unhealthy(
    setup: Callable[..., Any], events: RecordingEvents
) -> None:
    """A per-entry KMS refusal is about the stream's key, not the record: held and re-sent, never dead-lettered."""
    fake, sink, batch = setup(3, fail_positions({0: "KMSDisabledException"}), fail_positions({0: "KMSDisabledException"}),
                              retry={"max_attempts": 1})
    result = deliver(sink, batch)
    assert_accounted(batch, result)
    assert fake.requests() == [wire(batch), wire([batch[0]]), wire([batch[0]])]
    assert result.sent == [batch[1], batch[2], batch[0]] and not result.failed
    assert [(h["healthy"], h["reason"]) for h in events.named("sink_health")] == [
        (False, "KMSDisabledException"), (True, "KMSDisabledException")
    ]


# --- whole-call failures that retry ----------------------------------------------------------------


@pytest.mark.parametrize(
    "reply",
    [
        THROTTLED,
        Reply.error("ThrottlingException", 400),
        Reply.error("KMSThrottlingException", 400),
        INTERNAL_500,
        Reply.error("ServiceUnavailable", 503),
        Reply.error("SomethingUnheardOf", 502),
        Reply.error("ExpiredTokenException", 400),
        DROPPED,
    ],
    ids=["throughput", "throttling", "kms-throttling", "500-internal", "503", "5xx-unknown-code", "expired-token", "dropped"],
)
def test_a_retriable_whole_call_failure_resends_everything_then_succeeds(
    setup: Callable[..., Any], events: RecordingEvents, reply: Reply
) -> None:
    """Throttling, 5xx, expired credentials and a dropped connection: the same records again, all sent."""
    fake, sink, batch = setup(3, whole_call(reply))
    result = deliver(sink, batch)
    assert_accounted(batch, result)
    assert result.sent == batch and not result.failed and not result.unsent
    assert fake.requests() == [wire(batch), wire(batch)]
    [failed] = events.named("put_failed")
    assert failed["records"] == 3
    assert events.named("put_requested")[0]["latency_s"] is not None
    if reply.error_code is not None:
        assert failed["code"] == reply.error_code
    [retried] = events.named("records_retried")
    assert (retried["records"], retried["attempt"], retried["reason"]) == (3, 1, failed["code"])
    assert [(e["result"], e["accepted"]) for e in events.named("put_requested")][-1] == ("success", 3)


def test_a_read_timeout_is_retried(setup: Callable[..., Any]) -> None:
    """A request that gets no answer within read_timeout is sent again; the second answer delivers it."""
    release = threading.Event()

    def stall(body: dict[str, Any]) -> dict[str, Any]:
        release.wait(5)
        return accept_all(body)

    # 1 s, not less: the second, answered request must not time out too on a loaded machine (seen at 0.2 s).
    fake, sink, batch = setup(2, stall, read_timeout=1.0)
    try:
        result = deliver(sink, batch)
        assert_accounted(batch, result)
    finally:
        release.set()
    assert_accounted(batch, result)
    assert result.sent == batch
    assert fake.requests() == [wire(batch), wire(batch)]


def test_without_max_attempts_retries_continue_until_success_within_backoff_bounds(
    setup: Callable[..., Any], events: RecordingEvents
) -> None:
    """max_attempts 0 keeps retrying (here 6 throttles); each delay is within [0, min(max, initial*2^(n-1))]."""
    fake, sink, batch = setup(2, *[whole_call(THROTTLED)] * 6, retry={"initial_backoff": 0.001, "max_backoff": 0.004})
    result = deliver(sink, batch)
    assert_accounted(batch, result)
    assert result.sent == batch
    assert len(fake.requests()) == 7
    retried = events.named("records_retried")
    assert [r["attempt"] for r in retried] == [1, 2, 3, 4, 5, 6]
    for r in retried:
        assert 0 <= r["delay_s"] <= min(0.004, 0.001 * 2 ** (r["attempt"] - 1))


# --- permanent failures and attempt limits ----------------------------------------------------------


def test_an_invalid_request_that_names_no_record_dead_letters_a_lone_entry(
    setup: Callable[..., Any], events: RecordingEvents
) -> None:
    """A one-entry request refused as invalid (ValidationException naming nothing): that entry is put_rejected."""
    fake, sink, batch = setup(1, whole_call(Reply.error("ValidationException", 400, "no can do")))
    result = deliver(sink, batch)
    assert_accounted(batch, result)
    assert len(fake.requests()) == 1 and not result.sent and not result.unsent
    assert result.failed == [(batch[0], REASON_PUT_REJECTED, "ValidationException: no can do")]
    assert events.named("records_retried") == []
    assert [(e["code"], e["records"]) for e in events.named("put_failed")] == [("ValidationException", 1)]
    assert [e["result"] for e in events.named("put_requested")] == ["invalid"]


def test_max_attempts_turns_endless_throttling_into_retries_exhausted(setup: Callable[..., Any]) -> None:
    """With max_attempts 3 and a stream that always throttles: exactly 3 requests, then retries_exhausted."""
    fake, sink, batch = setup(2, *[whole_call(THROTTLED)] * 10, retry={"max_attempts": 3})
    result = deliver(sink, batch)
    assert_accounted(batch, result)
    assert len(fake.requests()) == 3
    assert [(e, reason) for e, reason, _ in result.failed] == [(e, REASON_RETRIES_EXHAUSTED) for e in batch]
    assert all("3 attempts" in detail and PTEE in detail for _, _, detail in result.failed)


def test_max_attempts_counts_per_entry_in_partial_failures(setup: Callable[..., Any], events: RecordingEvents) -> None:
    """max_attempts 2: the entry failing twice is exhausted, the others were sent at the first attempt."""
    fake, sink, batch = setup(3, fail_positions({0: PTEE}), fail_positions({0: PTEE}), retry={"max_attempts": 2})
    result = deliver(sink, batch)
    assert_accounted(batch, result)
    assert fake.requests() == [wire(batch), wire([batch[0]])]
    assert result.sent == [batch[1], batch[2]]
    assert [(e, reason) for e, reason, _ in result.failed] == [(batch[0], REASON_RETRIES_EXHAUSTED)]
    assert len(events.named("records_retried")) == 1


def test_max_attempts_one_never_retries(setup: Callable[..., Any], events: RecordingEvents) -> None:
    """max_attempts 1: a throttled request is not repeated and no retry is announced."""
    fake, sink, batch = setup(2, whole_call(THROTTLED), retry={"max_attempts": 1})
    result = deliver(sink, batch)
    assert_accounted(batch, result)
    assert len(fake.requests()) == 1
    assert [reason for _, reason, _ in result.failed] == [REASON_RETRIES_EXHAUSTED] * 2
    assert events.named("records_retried") == []


# --- the decision and the backoff as values ---------------------------------------------------------


def test_decide_maps_outcomes_to_positions() -> None:
    """decide: success delivers all; transient failures retry all; stream-level ones hold all (unhealthy);
    invalid ones reject the named entries and resend the rest, or split; partial responses split by code."""
    assert decide(PutResponse((), 0.01), 3).delivered_all
    retry_all = decide(CallFailed(PTEE, "slow down", FailureKind.THROTTLED, 0.01), 3)
    assert (retry_all.retry, retry_all.hold, retry_all.reject, dict(retry_all.codes)) == ((0, 1, 2), (), (), {PTEE: 3})
    assert retry_all.result == "throttled" and retry_all.unhealthy is None
    held = decide(CallFailed("AccessDeniedException", "denied", FailureKind.PERMANENT, 0.01), 2)
    assert (held.retry, held.hold, held.reject, held.unhealthy) == ((), (0, 1), (), ("AccessDeniedException", "denied"))
    assert held.result == "permanent" and held.needs_backoff
    named = decide(CallFailed("ValidationException", "m", FailureKind.INVALID, 0.01, ((1, "ValidationException: m"),)), 3)
    assert (named.resend, named.reject, named.needs_backoff) == ((0, 2), ((1, "ValidationException: m"),), False)
    assert decide(CallFailed("ValidationException", "m", FailureKind.INVALID, 0.01), 4).split
    partial = decide(
        PutResponse((EntryFailure(1, PTEE, "m"), EntryFailure(3, "KMSNotFoundException", "k"),
                     EntryFailure(4, "InvalidArgumentException", "i")), 0.01), 5
    )
    assert (partial.retry, partial.hold, partial.reject) == ((1,), (3,), ((4, "InvalidArgumentException: i"),))
    assert partial.unhealthy == ("KMSNotFoundException", "k") and partial.result == "partial"
    assert dict(partial.codes) == {PTEE: 1, "KMSNotFoundException": 1, "InvalidArgumentException": 1}


def test_backoff_ceiling_doubles_from_initial_up_to_the_cap() -> None:
    """The ceiling of attempt n is min(max, initial * 2^(n-1)), and stays finite for huge n."""
    backoff = Backoff(0.1, 1.0, random.Random(1))
    assert [round(backoff.ceiling(n), 9) for n in range(1, 7)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert backoff.ceiling(10_000) == 1.0


def test_backoff_is_full_jitter_within_bounds() -> None:
    """Delays are spread over the whole [0, ceiling] range (not just near it) and never exceed it."""
    backoff = Backoff(0.1, 1.0, random.Random(3))
    for attempt in (1, 3, 5, 50):
        delays = [backoff.delay(attempt) for _ in range(2000)]
        ceiling = backoff.ceiling(attempt)
        assert all(0 <= d <= ceiling for d in delays)
        assert min(delays) < 0.05 * ceiling and max(delays) > 0.95 * ceiling


def test_backoff_with_the_same_seed_repeats_its_schedule() -> None:
    """A seeded RNG makes the schedule reproducible; another seed gives another schedule."""
    def schedule(seed: int) -> list[float]:
        backoff = Backoff(0.5, 8.0, random.Random(seed))
        return [backoff.delay(n) for n in range(1, 10)]

    assert schedule(11) == schedule(11)
    assert schedule(11) != schedule(12)


def test_the_sink_draws_its_delays_from_the_injected_rng(setup: Callable[..., Any], events: RecordingEvents) -> None:
    """The delays announced by records_retried are exactly those of a Backoff seeded the same way."""
    _fake, sink, batch = setup(1, *[whole_call(THROTTLED)] * 3, seed=42, retry={"initial_backoff": 0.001, "max_backoff": 0.002})
    deliver(sink, batch)
    expected = Backoff(0.001, 0.002, random.Random(42))
    assert [e["delay_s"] for e in events.named("records_retried")] == [expected.delay(n) for n in (1, 2, 3)]
