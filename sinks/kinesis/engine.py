"""The delivery engine: per-shard queues, a scheduler thread, `in_flight` sender threads, per-record outcomes.

Intake (`submit`) routes records to their shard's queue under one lock per chunk. The scheduler builds a
request whenever one may go (queues.assemble) and hands it to a sender; it never sleeps while holding
work: it waits on a condition until the earliest moment something can change (a backoff ending, a
limiter refilling, `linger` passing) or news arrives (intake, an answer). Each answer is judged
(settle.judge) and applied: accepted records complete as sent, refused ones are dead-lettered, the rest go
back to the front of their shard queue after that shard's backoff (or the stream's, for refusals of the
stream or the network). A record Kinesis accepted is never queued again.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from sinks.base import Completion, Deadline, SinkEvents, SinkThreadDied
from sinks.kinesis.config import KinesisSinkConfig
from sinks.kinesis.health import HealthTracker
from sinks.kinesis.queues import Limits, Request, ShardQueue, WireItem, assemble
from sinks.kinesis.records import KinesisEntry
from sinks.kinesis.retry import Backoff, Decision, decide
from sinks.kinesis.routing import Router
from sinks.kinesis.service import CallFailed, FailureKind, PutOutcome
from sinks.kinesis.settle import UNSENT_AT_SHUTDOWN, Budget, Verdict, judge, report_outcomes, report_request

# The sink holds (queued + in flight) at most this many requests' worth per in-flight slot: enough to keep
# every slot busy while the next requests fill; the daemon's buffer is the main memory bound.
HELD_REQUESTS_PER_SLOT = 2
# 16 MiB, not more: under backpressure (throttled shards) the held records are ~1.5x their bytes in memory,
# and the aggregated daemon peaked at 156 MiB RSS with 32 MiB held against 4 throttled shards (126 with 16).
HELD_BYTES_CAP = 16 * 1024 * 1024
# Aggregated requests stay at about 1 MiB (some 20 aggregates of 50 KB) rather than PutRecords's 5 MiB: each
# request in flight holds its aggregates, its base64 body and the body's copies while it is built, signed and
# sent - at 5 MiB that was ~20 MiB per request and a 200 MiB peak RSS with 4 in flight.
AGGREGATED_REQUEST_BYTES = 1024 * 1024
# Waits that must notice a deadline set from another thread (Deadline has no condition of ours to notify).
DEADLINE_POLL_S = 0.05
# After the deadline, answers still on the wire get this long beyond the transport's own timeouts.
ANSWER_GRACE_S = 1.0
THREAD_JOIN_S = 5.0
RESOURCE_NOT_FOUND = "ResourceNotFoundException"


class Transport(Protocol):
    def put_records(self, stream: str, records: Sequence[WireItem]) -> PutOutcome: ...


# refresh(reason) -> whether the shard set changed; rate-limited by the caller for evidence-driven reasons
Refresher = Callable[[str], bool]


class Engine:
    def __init__(
        self,
        config: KinesisSinkConfig,
        stream: str,
        transport: Transport,
        router: Router,
        events: SinkEvents,
        health: HealthTracker,
        backoff: Backoff,
        refresh: Refresher,
    ) -> None:
        self.config = config
        self.stream = stream
        self.transport = transport
        self.router = router
        self.events = events
        self.health = health
        self.backoff = backoff
        self.refresh = refresh
        agg = config.aggregation
        request_bytes = min(config.max_batch_bytes, AGGREGATED_REQUEST_BYTES) if agg.enabled else config.max_batch_bytes
        self.limits = Limits(config.max_batch_records, request_bytes, config.linger, config.ordered, agg.enabled,
                             agg.max_bytes, agg.max_records)
        self.budget = Budget(config.retry.max_attempts, config.retry.max_age)
        per_request = config.max_batch_records * (agg.max_records if agg.enabled else 1)
        slots = (config.in_flight + 1) * HELD_REQUESTS_PER_SLOT
        self.max_held_records = per_request * slots
        self.max_held_bytes = max(config.max_batch_bytes, min(HELD_BYTES_CAP, config.max_batch_bytes * slots))
        self.answer_bound_s = config.connect_timeout + config.read_timeout + ANSWER_GRACE_S
        self._cond = threading.Condition()
        self._completion: Completion[KinesisEntry] | None = None
        self._held_records = self._held_bytes = 0
        self._outstanding = 0  # submitted and not yet reported through the completion
        self._in_flight = 0
        self._requests: set[Request] = set()  # on the wire, not yet settled
        self._held_until = 0.0  # stream-wide backoff (the stream or the network refused)
        self._stream_failures = 0
        self._window = config.max_batch_records  # shrinks while halving an invalid request
        self._bisecting = False
        self._offset = 0  # round robin over the ready shards
        self._closed = False
        self._deadline: Deadline | None = None  # finish's: retries that cannot start before it are given up
        self._expired = False  # finish gave up: everything coming back is unsent
        self._stopping = False
        self._send_queue: queue.SimpleQueue[Request | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._failure: BaseException | None = None  # what a scheduler or sender thread died of

    # --- the sink contract ----------------------------------------------------------------------------

    def start(self, completion: Completion[KinesisEntry]) -> None:
        self._completion = completion
        with self._cond:
            self.router.sync()
        self._threads = [threading.Thread(target=self._guarded(self._schedule), name="kinesis-scheduler", daemon=True)]
        self._threads += [
            threading.Thread(target=self._guarded(self._send), name=f"kinesis-sender-{i}", daemon=True)
            for i in range(self.config.in_flight)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, entries: Sequence[KinesisEntry], deadline: Deadline) -> int:
        taken, count = 0, len(entries)
        with self._cond:
            if self._closed:
                raise RuntimeError("submit after finish")
            while taken < count:
                self._raise_if_broken()
                if self._held_records >= self.max_held_records or self._held_bytes >= self.max_held_bytes:
                    if deadline.expired():
                        break
                    self._cond.wait(_wait(deadline, DEADLINE_POLL_S))
                    continue
                taken = self._admit(entries, taken)
                self._cond.notify_all()
        return taken

    def finish(self, deadline: Deadline) -> None:
        with self._cond:
            self._closed = True
            self._deadline = deadline
            self._cond.notify_all()
            while self._outstanding > 0 and not deadline.expired() and not self._hopeless(deadline) and self._failure is None:
                self._cond.wait(_wait(deadline, DEADLINE_POLL_S))
            self._expired = True
            leftovers = [e for q in self.router.order for e in q.drain()]
            self._release(leftovers)
            self._cond.notify_all()
        self._report_unsent(leftovers)
        with self._cond:
            bound = time.monotonic() + self.answer_bound_s
            while self._outstanding > 0 and time.monotonic() < bound:
                self._cond.wait(min(DEADLINE_POLL_S, max(0.0, bound - time.monotonic())))
            abandoned: list[KinesisEntry] = []
            for request in self._requests:  # answers that never came within the transport's own timeouts
                request.settled = True
                abandoned += request.user_entries()
            self._requests.clear()
            self._release(abandoned)
            self._stopping = True
            self._cond.notify_all()
        self._report_unsent(abandoned)
        for _ in range(self.config.in_flight):
            self._send_queue.put(None)
        # A sender still waiting for a given-up answer ends by itself once the transport returns.
        for thread in self._threads if not abandoned else self._threads[:1]:
            thread.join(THREAD_JOIN_S)
        with self._cond:
            self._raise_if_broken()  # everything is reported by now; the daemon still hears of the bug

    def _guarded(self, target: Callable[[], None]) -> Callable[[], None]:
        """`target` as a thread body that keeps the exception it dies of, for submit and finish to raise."""

        def run() -> None:
            try:
                target()
            except BaseException as exc:  # noqa: BLE001 - a bug: kept and raised in the daemon's thread
                with self._cond:
                    if self._failure is None:
                        self._failure = exc
                    self._cond.notify_all()

        return run

    def _raise_if_broken(self) -> None:
        """With the lock held: a scheduler or sender thread died; its requests end unsent at finish."""
        if self._failure is not None:
            error = self._failure
            raise SinkThreadDied(f"a Kinesis sink thread ended: {type(error).__name__}: {error}") from error

    def resharded(self) -> None:
        """The shard map changed: follow it (the router re-routes queued records of gone shards)."""
        with self._cond:
            self.router.sync()
            self._cond.notify_all()

    # --- intake ---------------------------------------------------------------------------------------

    def _admit(self, entries: Sequence[KinesisEntry], start: int) -> int:
        """Route entries from `start` until the sink holds its maximum; returns the index reached."""
        now = time.monotonic()
        route = self.router.route
        records, size, stop = self._held_records, self._held_bytes, len(entries)
        index = start
        while index < stop and records < self.max_held_records and size < self.max_held_bytes:
            entry = entries[index]
            route(entry.hash_key).push(entry, now)
            records += 1
            size += entry.size
            index += 1
        self._outstanding += index - start
        self._held_records, self._held_bytes = records, size
        return index

    def _release(self, entries: Sequence[KinesisEntry]) -> None:
        self._held_records -= len(entries)
        self._held_bytes -= sum(e.size for e in entries)

    # --- scheduling -----------------------------------------------------------------------------------

    def _schedule(self) -> None:
        while True:
            with self._cond:
                request = self._next_request()
                if request is None:
                    return
                self._in_flight += 1
                self._requests.add(request)
                count = self._in_flight
            self.events.requests_in_flight(count=count)
            self._send_queue.put(request)

    def _next_request(self) -> Request | None:
        """Wait (under the lock) until a request may go; None when stopping."""
        while not self._stopping:
            now = time.monotonic()
            if self._in_flight >= self.config.in_flight or self._expired:
                self._cond.wait(DEADLINE_POLL_S if self._expired else None)
                continue
            if self._deadline is not None and self._deadline.expired():
                self._cond.wait(DEADLINE_POLL_S)  # finish is giving up: nothing new goes out
                continue
            if self._held_until > now:
                self._cond.wait(self._held_until - now)
                continue
            request, wake = assemble(self.router.order, now, self.limits, flush=self._closed, window=self._window,
                                     offset=self._offset)
            if request is not None:
                self._offset += 1
                return request
            timeout = None if math.isinf(wake) else max(0.0, wake - now)
            if self._deadline is not None:
                timeout = DEADLINE_POLL_S if timeout is None else min(timeout, DEADLINE_POLL_S)
            self._cond.wait(timeout)
        return None

    def _hopeless(self, deadline: Deadline) -> bool:
        """Nothing in flight and no queued record may go before the deadline: waiting longer is pointless."""
        remaining = deadline.remaining()
        if remaining is None or self._in_flight:
            return False
        now = time.monotonic()
        starts = [max(q.ready_at, self._held_until) - now for q in self.router.order if q.entries]
        return bool(starts) and min(starts) >= remaining

    # --- sending and settling -------------------------------------------------------------------------

    def _send(self) -> None:
        while True:
            request = self._send_queue.get()
            if request is None:
                return
            try:
                outcome = self.transport.put_records(self.stream, request.records)
            except Exception as exc:  # noqa: BLE001 - a transport bug must not lose the request's records
                outcome = CallFailed(type(exc).__name__, str(exc), FailureKind.NETWORK, None, maybe_delivered=True)
            self._settle(request, outcome)

    def _settle(self, request: Request, outcome: PutOutcome) -> None:
        decision = decide(outcome, len(request.records))
        report_request(self.events, outcome, decision, len(request.records))
        if request.aggregated:
            self.events.records_aggregated(user_records=request.users, kinesis_records=len(request.records))
        now = time.monotonic()
        verdict = judge(request, outcome, decision, now, self.budget)
        resharded = self._evidence(verdict, decision)
        if resharded and decision.unhealthy is not None and decision.unhealthy[0] == RESOURCE_NOT_FOUND:
            for pv in verdict.parts:  # a closed shard, not a missing stream: again at once, no backoff
                pv.resend += pv.hold
                pv.hold = []
        else:
            self.health.update(outcome, decision)
        network = isinstance(outcome, CallFailed) and outcome.kind is FailureKind.NETWORK
        unsent: list[KinesisEntry] = []
        announcements: list[tuple[int, int, float, str]] = []
        throttles: list[tuple[str, int]] = []
        with self._cond:
            if request.settled:  # finish gave it up as unsent while it was on the wire
                return
            request.settled = True
            self._requests.discard(request)
            self._in_flight -= 1
            stream_wide: list[tuple[ShardQueue, list[KinesisEntry]]] = []
            for pv in verdict.parts:
                q = pv.part.queue
                q.in_flight -= 1
                if q.limiter is not None:
                    if pv.throttled:
                        q.limiter.throttled()
                    if pv.accepted:
                        q.limiter.succeeded(pv.accepted)
                if pv.throttled:
                    throttles.append((q.shard.shard_id, pv.throttled))
                if pv.accepted and not pv.retry:
                    q.failures = 0
                if pv.hold or (network and pv.retry):
                    stream_wide.append((q, pv.hold + pv.retry))
                elif pv.retry:
                    q.failures += 1
                    delay = self.backoff.delay(q.failures)
                    if self._giving_up(delay):
                        unsent += pv.retry
                    else:
                        q.ready_at = now + delay
                        self.router.requeue(q, pv.retry)
                        announcements.append((len(pv.retry), q.failures, delay, ",".join(sorted(pv.codes))))
                if pv.resend:
                    if self._giving_up(0.0):
                        unsent += pv.resend
                    else:
                        self.router.requeue(q, pv.resend)
            if verdict.reroute:
                if self._giving_up(0.0):
                    unsent += verdict.reroute
                else:
                    self.router.reroute(verdict.reroute)
            if stream_wide:
                self._stream_failures += 1
                delay = self.backoff.delay(self._stream_failures)
                again = [e for _, entries in stream_wide for e in entries]
                if self._giving_up(delay):
                    unsent += again
                else:
                    self._held_until = now + delay
                    for q, entries in stream_wide:
                        self.router.requeue(q, entries)
                    announcements.append((len(again), self._stream_failures, delay, ",".join(sorted(decision.codes))))
            elif not isinstance(outcome, CallFailed):
                self._stream_failures = 0
            self._resize_window(request, decision.split, bool(decision.reject))
            done = verdict.sent + [e for e, _, _ in verdict.failed] + unsent
            self._release(done)
            count = self._in_flight
            self._cond.notify_all()
        assert self._completion is not None, "start() was not called"
        report_outcomes(self.events, self._completion, verdict, unsent, announcements, throttles, count)
        if isinstance(outcome, CallFailed) and outcome.maybe_delivered and verdict.again() > len(unsent):
            self.events.duplicates_possible(records=verdict.again() - len(unsent), reason="answer_lost")
        with self._cond:
            self._outstanding -= len(done)
            self._cond.notify_all()

    def _giving_up(self, delay: float) -> bool:
        """Finishing, and a record going again after `delay` could not start before the deadline."""
        if self._expired:
            return True
        if self._deadline is None:
            return False
        remaining = self._deadline.remaining()
        return remaining is not None and delay >= remaining

    def _resize_window(self, request: Request, split: bool, rejected: bool) -> None:
        if split:
            self._bisecting, self._window = True, max(1, len(request.records) // 2)
        elif rejected or not self._bisecting:
            self._bisecting, self._window = False, self.config.max_batch_records

    def _evidence(self, verdict: Verdict, decision: Decision) -> bool:
        """Resharding shows (records landed elsewhere, or a shard may be closed): refresh the map; True if it changed."""
        changed = False
        for landing, routed, records in verdict.misrouted:
            self.events.records_misrouted(records=records, shard_id=routed, detail=f"routed to {routed}, landed on {landing}")
        if verdict.misrouted:
            # Landing on a shard the map does not know means new (child) shards; else the ranges moved.
            unknown = any(self.router.holds(landing, 0) is None for landing, _, _ in verdict.misrouted)
            changed = self.refresh("child_shards" if unknown else "misroute")
        if decision.unhealthy is not None and decision.unhealthy[0] == RESOURCE_NOT_FOUND:
            changed = self.refresh("closed_shard") or changed
        if changed:
            self.resharded()
        if verdict.misrouted_aggregates:
            self._split_misrouted(verdict)
        return changed

    def _split_misrouted(self, verdict: Verdict) -> None:
        """Members of a misrouted aggregate that hash outside the shard it landed on go again (consumers of
        that shard would drop them); the others were delivered where they belong."""
        again: list[KinesisEntry] = []
        with self._cond:
            for members, landing in verdict.misrouted_aggregates:
                for m in members:
                    if self.router.holds(landing, m.hash_key):
                        verdict.sent.append(m)
                    else:
                        m.shard_id = m.sequence_number = None
                        again.append(m)
        if again:
            self.events.duplicates_possible(records=len(again), reason="misrouted_aggregate")
            verdict.reroute.extend(again)

    def _report_unsent(self, entries: list[KinesisEntry]) -> None:
        if not entries:
            return
        assert self._completion is not None, "start() was not called"
        self._completion.unsent(entries, UNSENT_AT_SHUTDOWN)
        with self._cond:
            self._outstanding -= len(entries)
            self._cond.notify_all()


def _wait(deadline: Deadline, poll_s: float) -> float:
    remaining = deadline.remaining()
    return poll_s if remaining is None else max(0.0, min(poll_s, remaining))
