"""One request's outcome applied to its user records, as a value: who was sent, dead-lettered, or goes again.

`judge` is pure (apart from stamping each record's delivery state: shard, sequence number, attempts, last
error): the engine applies its verdict to the queues under its lock and reports completions outside it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from operator import attrgetter

from sinks.base import Completion, SinkEvents
from sinks.kinesis.queues import Part, Request
from sinks.kinesis.records import KinesisEntry
from sinks.kinesis.retry import REASON_PUT_REJECTED, REASON_RETRIES_EXHAUSTED, Decision
from sinks.kinesis.service import THROTTLING_ERROR_CODES, CallFailed, PutOutcome, PutResponse

UNSENT_AT_SHUTDOWN = "not delivered before the shutdown deadline"
_attempts = attrgetter("attempts")
# The routing of the stand-in shard used while the shard map cannot be listed: no misroute can be told.
UNKNOWN_SHARD_ID = "*"


@dataclass(frozen=True)
class Budget:
    """retry.max_attempts and retry.max_age: after either, a failing record is dead-lettered."""

    max_attempts: int  # 0 = no limit
    max_age_s: float  # 0 = no limit

    def exhausted(self, entry: KinesisEntry, now: float) -> bool:
        if self.max_attempts and entry.attempts >= self.max_attempts:
            return True
        return bool(self.max_age_s) and now - entry.first_attempt_at >= self.max_age_s


@dataclass
class PartVerdict:
    """What goes again for one shard queue of the request."""

    part: Part
    retry: list[KinesisEntry] = field(default_factory=list)  # after the shard's backoff; attempt counted
    hold: list[KinesisEntry] = field(default_factory=list)  # after the stream-wide backoff; not counted
    resend: list[KinesisEntry] = field(default_factory=list)  # at once; not counted
    throttled: int = 0  # records refused with a throttling code
    accepted: int = 0  # Kinesis records (aggregates count once) this shard accepted
    codes: Counter[str] = field(default_factory=Counter)


@dataclass
class Verdict:
    sent: list[KinesisEntry] = field(default_factory=list)
    failed: list[tuple[KinesisEntry, str, str]] = field(default_factory=list)
    parts: list[PartVerdict] = field(default_factory=list)
    # (landing shard, routed shard, Kinesis records) for records that landed elsewhere than routed
    misrouted: list[tuple[str, str, int]] = field(default_factory=list)
    # aggregates that landed elsewhere: (members, landing shard); the engine decides who goes again
    misrouted_aggregates: list[tuple[list[KinesisEntry], str]] = field(default_factory=list)
    reroute: list[KinesisEntry] = field(default_factory=list)  # members of misrouted aggregates, to go again

    def again(self) -> int:
        return sum(len(p.retry) + len(p.hold) + len(p.resend) for p in self.parts) + len(self.reroute)


def judge(request: Request, outcome: PutOutcome, decision: Decision, now: float, budget: Budget) -> Verdict:
    if isinstance(outcome, PutResponse) and not outcome.failures and not request.aggregated:
        return _all_accepted(request, outcome)
    verdict = Verdict()
    retry, hold, resend = set(decision.retry), set(decision.hold), set(decision.resend)
    rejected = dict(decision.reject)
    if isinstance(outcome, PutResponse):
        codes = {f.position: f.code for f in outcome.failures}
        shard_ids, sequence_numbers = outcome.shard_ids, outcome.sequence_numbers
    else:
        codes, shard_ids, sequence_numbers = {}, (), ()
    whole_code = outcome.code if isinstance(outcome, CallFailed) else ""
    for part in request.parts:
        pv = PartVerdict(part)
        verdict.parts.append(pv)
        routed = part.queue.shard.shard_id
        landed_elsewhere = 0
        for position in range(part.start, part.stop):
            members = request.members(position)
            code = codes.get(position, whole_code)
            if decision.split or position in resend or position in hold:
                for m in members:
                    m.attempts -= 1  # a refusal of the stream or of a neighbour is no attempt of this record
                (pv.hold if position in hold else pv.resend).extend(members)
                pv.codes[code] += position in hold
                continue
            if position in rejected:
                verdict.failed.extend((m, REASON_PUT_REJECTED, rejected[position]) for m in members)
                continue
            if position in retry:
                pv.codes[code] += 1
                if code in THROTTLING_ERROR_CODES:
                    pv.throttled += len(members)
                for m in members:
                    m.last_error = code
                    if budget.exhausted(m, now):
                        verdict.failed.append((m, REASON_RETRIES_EXHAUSTED, _exhausted(m, now)))
                    else:
                        pv.retry.append(m)
                continue
            pv.accepted += 1
            landing = shard_ids[position] if position < len(shard_ids) else None
            sequence = sequence_numbers[position] if position < len(sequence_numbers) else None
            for m in members:
                m.shard_id, m.sequence_number = landing, sequence
            if landing is not None and routed != UNKNOWN_SHARD_ID and landing != routed:
                landed_elsewhere += 1
                if request.aggregated:
                    verdict.misrouted_aggregates.append((members, landing))
                    continue
            verdict.sent.extend(members)
        if landed_elsewhere:
            verdict.misrouted.append((_first_landing(request, part, shard_ids, routed), routed, landed_elsewhere))
    return verdict


def _all_accepted(request: Request, outcome: PutResponse) -> Verdict:
    """The common case, kept to C-speed loops: every entry taken, each where it was routed."""
    entries: list[KinesisEntry] = request.records  # type: ignore[assignment]
    shard_ids, sequence_numbers = outcome.shard_ids, outcome.sequence_numbers
    verdict = Verdict(sent=entries)
    if len(shard_ids) == len(entries) == len(sequence_numbers):
        for entry, shard_id, sequence in zip(entries, shard_ids, sequence_numbers, strict=True):
            entry.shard_id, entry.sequence_number = shard_id, sequence
    for part in request.parts:
        routed = part.queue.shard.shard_id
        verdict.parts.append(PartVerdict(part, accepted=part.stop - part.start))
        landed = shard_ids[part.start : part.stop]
        elsewhere = len(landed) - landed.count(routed) - landed.count(None)
        if routed != UNKNOWN_SHARD_ID and elsewhere:
            verdict.misrouted.append((_first_landing(request, part, shard_ids, routed), routed, elsewhere))
    return verdict


def _first_landing(request: Request, part: Part, shard_ids: tuple[str | None, ...], routed: str) -> str:
    for position in range(part.start, part.stop):
        landing = shard_ids[position] if position < len(shard_ids) else None
        if landing is not None and landing != routed:
            return landing
    return routed


def _exhausted(entry: KinesisEntry, now: float) -> str:
    age = now - entry.first_attempt_at
    return f"not accepted after {entry.attempts} attempts in {age:.1f}s (last: {entry.last_error})"


def report_request(events: SinkEvents, outcome: PutOutcome, decision: Decision, records: int) -> None:
    """put_requested for the request, put_failed per error code (in Kinesis records)."""
    not_taken = records if decision.split else len(decision.retry) + len(decision.hold) + len(decision.reject) + len(
        decision.resend
    )
    events.put_requested(result=decision.result, records=records, accepted=records - not_taken, latency_s=outcome.latency_s)
    if isinstance(outcome, CallFailed):
        detail = f"{outcome.kind.value}: {outcome.message}"
        for code, count in decision.codes.items():
            events.put_failed(code=code, records=count, detail=detail)
        return
    messages = {f.code: f.message for f in reversed(outcome.failures)}  # the first message of each code
    for code, count in sorted(decision.codes.items()):
        events.put_failed(code=code, records=count, detail=f"entries refused in a partial response: {messages[code]}")


def report_outcomes(
    events: SinkEvents,
    completion: Completion[KinesisEntry],
    verdict: Verdict,
    unsent: list[KinesisEntry],
    announcements: list[tuple[int, int, float, str]],
    throttles: list[tuple[str, int]],
    in_flight: int,
) -> None:
    """One settled request's completions and events (per request and shard, never per record)."""
    events.requests_in_flight(count=in_flight)
    for shard_id, records in throttles:
        events.shard_throttled(shard_id=shard_id, records=records)
    for records, attempt, delay, reason in announcements:
        events.records_retried(records=records, attempt=attempt, delay_s=delay, reason=reason)
    if verdict.sent:
        completion.sent(verdict.sent)
    if verdict.failed:
        completion.failed(verdict.failed)
    if verdict.sent or verdict.failed:
        attempts = Counter(map(_attempts, verdict.sent))
        attempts.update(e.attempts for e, _, _ in verdict.failed)
        events.records_settled(attempts=attempts)
    if unsent:
        completion.unsent(unsent, UNSENT_AT_SHUTDOWN)
