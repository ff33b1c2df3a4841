"""The per-shard limiter: simulated against a shard that enforces Kinesis's rolling-window limits, and its
budget and adaptation rules one by one (fake clock throughout, no sleeping)."""

from __future__ import annotations

import math

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sinks.kinesis import ratelimit
from sinks.kinesis.ratelimit import ShardLimiter
from tests.sinks.shard_sim import KINESIS_WINDOW_S, FakeClock, SimulatedShard, run_producer, run_producers

MIB = 1024 * 1024
RECORDS_PER_S = 1000
DURATION_S = 60.0
SETTLE_S = 5.0  # the adaptive cut may take this long to find a lower real limit
SMALL_RECORD = 1024  # 1,000 of them are under 1 MiB: the records limit binds
LARGE_RECORD = 5 * 1024  # 205 of them make 1 MiB: the bytes limit binds


def limiter_and_clock(**options: bool) -> tuple[ShardLimiter, FakeClock]:
    clock = FakeClock()
    return ShardLimiter(RECORDS_PER_S, MIB, clock=clock, **options), clock


# --- simulation ------------------------------------------------------------------------------


@pytest.mark.parametrize("in_flight", [1, 4])
@pytest.mark.parametrize("record_size", [SMALL_RECORD, LARGE_RECORD], ids=["records-bound", "bytes-bound"])
def test_a_producer_at_full_speed_gets_the_capacity_with_few_throttles(record_size: int, in_flight: int) -> None:
    """A simulated minute at the configured limits: >= 95 % of the binding capacity, <= 0.05 throttled attempts/record."""
    limiter, clock = limiter_and_clock()
    shard = SimulatedShard(RECORDS_PER_S, MIB)
    result = run_producer(limiter, shard, clock, record_size=record_size, duration_s=DURATION_S, in_flight=in_flight)
    print(f"goodput {result.goodput(shard, DURATION_S):.4f}, throttles/record {result.throttles_per_record():.4f}")
    assert result.goodput(shard, DURATION_S) >= 0.95
    assert result.throttles_per_record() <= 0.05


@pytest.mark.parametrize("in_flight", [1, 4])
@pytest.mark.parametrize("record_size", [SMALL_RECORD, LARGE_RECORD], ids=["records-bound", "bytes-bound"])
def test_the_adaptive_cut_finds_a_real_limit_half_the_configured_one(record_size: int, in_flight: int) -> None:
    """Real limits at half the configured ones: after 5 s, >= 90 % of real capacity at <= 0.05 throttled attempts/record."""
    limiter, clock = limiter_and_clock()
    shard = SimulatedShard(RECORDS_PER_S // 2, MIB // 2)
    result = run_producer(limiter, shard, clock, record_size=record_size, duration_s=DURATION_S, in_flight=in_flight)
    goodput, throttles = result.goodput(shard, DURATION_S, SETTLE_S), result.throttles_per_record(SETTLE_S)
    print(f"after {SETTLE_S}s: goodput {goodput:.4f}, throttles/record {throttles:.4f}; fraction {limiter.fraction:.3f}")
    assert goodput >= 0.90
    assert throttles <= 0.05


def test_two_producers_sharing_a_shard_split_it_fairly() -> None:
    """Two daemons each configured for the whole shard: after 5 s >= 90 % together, each >= 40 %, <= 0.05 throttles/record."""
    clock = FakeClock()
    limiters = [ShardLimiter(RECORDS_PER_S, MIB, clock=clock) for _ in range(2)]
    shard = SimulatedShard(RECORDS_PER_S, MIB)
    results = run_producers(limiters, shard, clock, record_size=SMALL_RECORD, duration_s=DURATION_S)
    accepted = [r.accepted(SETTLE_S) for r in results]
    throttled = sum(r.throttled(SETTLE_S) for r in results)
    print(f"together {sum(accepted) / (RECORDS_PER_S * (DURATION_S - SETTLE_S)):.4f}, shares "
          f"{[round(a / sum(accepted), 3) for a in accepted]}, throttles/record {throttled / sum(accepted):.4f}")
    assert sum(accepted) >= 0.90 * RECORDS_PER_S * (DURATION_S - SETTLE_S)
    assert min(accepted) >= 0.40 * sum(accepted)
    assert throttled <= 0.05 * sum(accepted)


def test_without_adaptation_a_lower_real_limit_keeps_being_hit() -> None:
    """The same half-limit shard with adaptive=False keeps throttling (so the adaptive result is the cut's doing)."""
    limiter, clock = limiter_and_clock(adaptive=False)
    shard = SimulatedShard(RECORDS_PER_S // 2, MIB // 2)
    result = run_producer(limiter, shard, clock, record_size=SMALL_RECORD, duration_s=DURATION_S)
    assert result.throttles_per_record(SETTLE_S) > 0.5
    assert limiter.fraction == 1.0


def test_records_larger_than_the_burst_go_one_at_a_time() -> None:
    """Near-1 MiB records (never within available()) sent alone when delay_for says 0 fill the shard without a throttle."""
    limiter, clock = limiter_and_clock()
    shard = SimulatedShard(RECORDS_PER_S, MIB)
    result = run_producer(limiter, shard, clock, record_size=MIB - 300, duration_s=DURATION_S)
    assert result.goodput(shard, DURATION_S) >= 0.95
    assert result.throttled() == 0


# --- the window guard ---------------------------------------------------------------------------

STEPS = st.lists(
    st.tuples(st.floats(0, 0.3), st.integers(1, 500), st.integers(1, 400_000)),  # (wait, entries wanted, entry size)
    min_size=1,
    max_size=120,
)


@settings(max_examples=200, deadline=None)
@given(steps=STEPS)
# Three 250 KB entries 0.26 s apart leave the bucket full but the window at 750 KB: a 400 KB entry (bigger
# than the bucket) must wait for the window, not just for the bucket.
@example(steps=[(0.0, 1, 250_000), (0.26, 1, 250_000), (0.26, 1, 250_000), (0.26, 1, 400_000)])
def test_no_one_second_window_ever_gets_more_than_the_limit(steps: list[tuple[float, int, int]]) -> None:
    """Taking only what available() allows (or one entry once delay_for is 0) never overfills any one-second window."""
    limiter, clock = limiter_and_clock()
    sends: list[tuple[float, int, int]] = []
    for wait, wanted, size in steps:
        clock.now += wait
        records, room = limiter.available()
        count = min(wanted, int(records), int(room // size))
        if count == 0 and limiter.delay_for(1, size) == 0:
            count = 1
        if count:
            limiter.spend(count, count * size)
            sends.append((clock.now, count, count * size))
    for start, _, _ in sends:
        inside = [(n, b) for t, n, b in sends if start <= t < start + KINESIS_WINDOW_S]
        assert sum(n for n, _ in inside) <= RECORDS_PER_S
        assert sum(b for _, b in inside) <= MIB


@settings(max_examples=200, deadline=None)
@given(steps=STEPS, records=st.integers(1, 500), size=st.integers(1, 2 * MIB))
def test_delay_for_is_exactly_the_wait_after_which_the_amount_may_go(
    steps: list[tuple[float, int, int]], records: int, size: int
) -> None:
    """After any history, waiting delay_for(n, s) makes that amount allowed (exactly 0 then), and waiting less does not."""
    limiter, clock = limiter_and_clock()
    for wait, wanted, entry_size in steps:
        clock.now += wait
        limiter.spend(wanted, wanted * entry_size)  # overdraw freely: the debt must be waited out too
    delay = limiter.delay_for(records, size)
    if delay > 0.01:
        clock.now += delay - 0.005
        assert limiter.delay_for(records, size) > 0
        clock.now += 0.005
    else:
        clock.now += delay
    assert limiter.delay_for(records, size) == 0  # exactly: a caller checks `> 0` before waiting again


def test_a_full_bucket_holds_burst_s_of_the_target_pace() -> None:
    """At start the budget is BURST_S of 97 % of the limits; spending it empties it; it refills at that pace."""
    limiter, clock = limiter_and_clock()
    records, size = limiter.available()
    assert records == pytest.approx(RECORDS_PER_S * ratelimit.TARGET_FRACTION * ratelimit.BURST_S)
    assert size == pytest.approx(MIB * ratelimit.TARGET_FRACTION * ratelimit.BURST_S)
    limiter.spend(int(records), int(records) * 100)
    assert limiter.available()[0] < 1
    assert limiter.delay_for(97, 9700) == pytest.approx(0.1, abs=0.002)
    clock.now += 0.1
    assert limiter.available()[0] == pytest.approx(97 + records - int(records), abs=0.01)
    assert limiter.rate == pytest.approx((RECORDS_PER_S * ratelimit.TARGET_FRACTION, MIB * ratelimit.TARGET_FRACTION))


def test_after_a_pause_one_full_request_to_one_shard_goes_at_once() -> None:
    """500 entries of ~1 KB (a full PutRecords) fit the budget of a rested shard: no split, no wait."""
    limiter, clock = limiter_and_clock()
    clock.now += 5.0
    records, size = limiter.available()
    assert records >= 500 and size >= 500 * SMALL_RECORD
    assert limiter.delay_for(500, 500 * SMALL_RECORD) == 0


def test_a_refund_gives_back_a_spend_that_went_nowhere() -> None:
    """A spend refunded (sent nowhere) restores bucket and window: a full request goes at once; partial refunds are partial."""
    limiter, clock = limiter_and_clock()
    clock.now += 5.0
    before = limiter.available()
    limiter.spend(500, 500 * SMALL_RECORD)
    assert limiter.delay_for(499, 499 * SMALL_RECORD) > 0
    limiter.refund(500, 500 * SMALL_RECORD)
    assert limiter.available() == pytest.approx(before)
    assert limiter.delay_for(499, 499 * SMALL_RECORD) == 0
    limiter.spend(300, 300 * SMALL_RECORD)
    limiter.spend(200, 200 * SMALL_RECORD)
    limiter.refund(250, 250 * SMALL_RECORD)
    assert limiter.available()[0] == pytest.approx(before[0] - 250)
    clock.now += KINESIS_WINDOW_S + ratelimit.GUARD_S  # what stayed spent leaves the window like any send
    assert limiter.available() == pytest.approx(before)


def test_a_light_past_second_allows_a_burst_but_a_full_one_does_not() -> None:
    """After 0.9 s at full pace the budget is what the window leaves, not the bucket; once sends age out it is full again."""
    limiter, clock = limiter_and_clock()
    for _ in range(90):  # 0.9 s of sends of 11 records every 10 ms: 990 records
        limiter.spend(11, 11 * 100)
        clock.now += 0.01
    assert limiter.available()[0] <= RECORDS_PER_S - 990 + 1e-9
    clock.now += KINESIS_WINDOW_S + ratelimit.GUARD_S  # every send left the window; the bucket is full again
    assert limiter.available()[0] == pytest.approx(RECORDS_PER_S * ratelimit.TARGET_FRACTION * ratelimit.BURST_S)


# --- adaptation ------------------------------------------------------------------------------


def test_a_burst_of_refusals_is_one_cut() -> None:
    """Throttles within CUT_SPACING_S are one cut: to 90 % first (the start level is known), then to 70 % below it."""
    limiter, clock = limiter_and_clock()
    for _ in range(5):
        limiter.throttled()
        clock.now += 0.01
    assert limiter.fraction == pytest.approx(ratelimit.GENTLE_DECREASE_FACTOR)
    clock.now += ratelimit.CUT_SPACING_S
    limiter.throttled()
    assert limiter.fraction == pytest.approx(ratelimit.GENTLE_DECREASE_FACTOR * ratelimit.DECREASE_FACTOR)
    assert limiter.rate[0] == pytest.approx(RECORDS_PER_S * ratelimit.TARGET_FRACTION * limiter.fraction)


def test_cuts_stop_at_the_floor() -> None:
    """However often throttled, the pace stays at >= 10 % of the configured limit."""
    limiter, clock = limiter_and_clock()
    for _ in range(100):
        limiter.throttled()
        clock.now += ratelimit.CUT_SPACING_S
    assert limiter.fraction == pytest.approx(ratelimit.MIN_FRACTION)
    assert limiter.rate[0] == pytest.approx(RECORDS_PER_S * ratelimit.TARGET_FRACTION * ratelimit.MIN_FRACTION)


def deeply_cut(limiter: ShardLimiter, clock: FakeClock) -> float:
    """Throttle twice, 0.2 s apart: 1.0 -> 0.9 (gentle) -> 0.63 (deep). Returns the level last throttled at."""
    limiter.throttled()
    clock.now += 0.2
    limiter.throttled()
    return ratelimit.GENTLE_DECREASE_FACTOR


def succeed_for(limiter: ShardLimiter, clock: FakeClock, seconds: float) -> None:
    """Answers accepting 10 entries every 10 ms for `seconds`."""
    for _ in range(round(seconds / 0.01)):
        clock.now += 0.01
        limiter.succeeded(10)


def test_successes_climb_fast_to_below_the_throttled_level_then_probe_slowly() -> None:
    """After a deep cut the pace climbs fast to 95 % of the throttled level, creeps 2 %/s past it, then 10 %/s to the top."""
    limiter, clock = limiter_and_clock()
    at = deeply_cut(limiter, clock)
    fast_s = (at * ratelimit.RECOVERY_FRACTION - limiter.fraction) / ratelimit.FAST_INCREASE_PER_S
    succeed_for(limiter, clock, fast_s)
    assert limiter.fraction == pytest.approx(at * ratelimit.RECOVERY_FRACTION, abs=1e-3)
    succeed_for(limiter, clock, 1.0)
    assert limiter.fraction == pytest.approx(at * ratelimit.RECOVERY_FRACTION + ratelimit.PROBE_INCREASE_PER_S, abs=1e-3)
    succeed_for(limiter, clock, 10.0)
    assert limiter.fraction == 1.0


def test_a_long_pause_raises_the_pace_by_at_most_one_step() -> None:
    """One success after an hour of silence raises the pace by MAX_INCREASE_STEP_S worth, not by an hour's."""
    limiter, clock = limiter_and_clock()
    at = deeply_cut(limiter, clock)
    succeed_for(limiter, clock, 0.5)  # past the fast climb, into the probing band
    before = limiter.fraction
    assert at * ratelimit.RECOVERY_FRACTION <= before < at * ratelimit.PROBE_BAND - ratelimit.PROBE_INCREASE_PER_S
    clock.now += 3600
    limiter.succeeded(1)
    assert limiter.fraction == pytest.approx(before + ratelimit.PROBE_INCREASE_PER_S * ratelimit.MAX_INCREASE_STEP_S)


def test_without_adaptation_throttles_and_successes_change_nothing() -> None:
    """adaptive=False keeps the configured pace whatever the answers say."""
    limiter, clock = limiter_and_clock(adaptive=False)
    limiter.throttled()
    clock.now += 1
    limiter.succeeded(100)
    assert limiter.fraction == 1.0


@pytest.mark.parametrize("limits", [(0, MIB), (1000, -1), (math.inf, MIB), (1000, math.nan)])
def test_limits_must_be_positive_and_finite(limits: tuple[float, float]) -> None:
    """A zero, negative, infinite or NaN limit is refused at construction, naming both values."""
    with pytest.raises(ValueError, match="must be positive and finite"):
        ShardLimiter(*limits)
