"""Batched, parallel, deadline-bounded writes of items to the table (BatchWriteItem).

- Requests with the same key are collapsed first (the last one wins, so a put followed by a delete of the
  same item deletes it): DynamoDB rejects a BatchWriteItem holding two requests for one key.
- Chunks of 25 requests are written by a small thread pool.
- UnprocessedItems, throttling, 5xx and connection errors are retried with exponential backoff and full
  jitter while the deadline allows; the first attempt of each chunk is always made.
- What is still unwritten at the deadline comes back as `unwritten` (transient: the caller reports it to
  Lambda as batch item failures). An item DynamoDB rejects as invalid, isolated in a call of its own,
  comes back as `rejected` (permanent: the caller dead-letters it).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from processor.items import Item, item_key

# BatchWriteItem takes at most 25 put/delete requests (16 MB; 25 items of <= 400 KB always fit).
MAX_BATCH_WRITE_ITEMS = 25
# Parallel BatchWriteItem calls per invocation: enough to hide latency, small enough not to self-throttle.
WRITE_CONCURRENCY = 4
# Backoff before retry n: uniform(0, min(cap, base * 2**(n-1))) seconds ("full jitter").
BACKOFF_BASE_S = 0.05
BACKOFF_CAP_S = 2.0
RETRYABLE_ERROR_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "InternalServerError",
        "ServiceUnavailable",
        "LimitExceededException",
    }
)
_SERVER_ERROR_STATUS = 500
UNPROCESSED = "UnprocessedItems"

T = TypeVar("T")


@dataclass(frozen=True)
class PutItem(Generic[T]):
    """One item to put (or, with `delete`, the key of one to delete), and the caller's reference to where it came from."""

    item: Item
    ref: T
    delete: bool = False

    def request(self) -> dict[str, Any]:
        """This write as one BatchWriteItem request."""
        return {"DeleteRequest": {"Key": self.item}} if self.delete else {"PutRequest": {"Item": self.item}}

    @property
    def key(self) -> tuple[str, str]:
        return item_key(self.item)


@dataclass
class WriteReport(Generic[T]):
    """The fate of every PutItem given to `write`: each is in exactly one list."""

    written: list[PutItem[T]] = field(default_factory=list)
    unwritten: list[tuple[PutItem[T], str]] = field(default_factory=list)  # (put, last error): transient
    rejected: list[tuple[PutItem[T], str]] = field(default_factory=list)  # (put, DynamoDB's message): permanent
    duplicates_collapsed: int = 0
    calls: int = 0


def _request_key(request: dict[str, Any]) -> tuple[str, str]:
    """The key of an unprocessed request, a put or a delete."""
    if "DeleteRequest" in request:
        return item_key(request["DeleteRequest"]["Key"])
    return item_key(request["PutRequest"]["Item"])


def _backoff(retry: int) -> float:
    return random.uniform(0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** (retry - 1)))


class TableWriter:
    """Writes items to one table through a boto3 DynamoDB client (botocore retries off: see clients.py)."""

    def __init__(
        self,
        client: Any,
        table_name: str,
        *,
        concurrency: int = WRITE_CONCURRENCY,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client
        self.table_name = table_name
        self.concurrency = concurrency
        self._clock = clock
        self._sleep = sleep

    def write(self, puts: Sequence[PutItem[T]], deadline: float) -> WriteReport[T]:
        """Write every item, giving up on retries at `deadline` (a `clock()` value)."""
        groups: dict[tuple[str, str], list[PutItem[T]]] = {}
        for put in puts:
            groups.setdefault(put.key, []).append(put)
        winners = [group[-1] for group in groups.values()]
        chunks = [winners[i : i + MAX_BATCH_WRITE_ITEMS] for i in range(0, len(winners), MAX_BATCH_WRITE_ITEMS)]
        if len(chunks) <= 1:
            results = [self._write_chunk(chunk, deadline, always_try=True) for chunk in chunks]
        else:
            with ThreadPoolExecutor(max_workers=min(self.concurrency, len(chunks)), thread_name_prefix="table-writer") as pool:
                results = list(pool.map(lambda chunk: self._write_chunk(chunk, deadline, always_try=True), chunks))
        report: WriteReport[T] = WriteReport(duplicates_collapsed=len(puts) - len(winners))
        for result in results:
            report.calls += result.calls
            # Collapsed requests share the fate of the one that was sent.
            report.written.extend(p for w in result.written for p in groups[w.key])
            report.unwritten.extend((p, why) for w, why in result.unwritten for p in groups[w.key])
            report.rejected.extend((p, why) for w, why in result.rejected for p in groups[w.key])
        return report

    def _write_chunk(self, chunk: list[PutItem[T]], deadline: float, *, always_try: bool) -> WriteReport[T]:
        result: WriteReport[T] = WriteReport()
        pending = {put.key: put for put in chunk}
        retry = 0
        last_error = "deadline reached before the first attempt"
        while pending:
            if retry or not always_try:
                delay = _backoff(retry) if retry else 0.0
                if self._clock() + delay >= deadline:
                    break
                self._sleep(delay)
            retry += 1
            result.calls += 1
            try:
                response = self.client.batch_write_item(
                    RequestItems={self.table_name: [put.request() for put in pending.values()]}
                )
            except ClientError as exc:
                error = exc.response.get("Error", {})
                code = str(error.get("Code", "ClientError"))
                last_error = f"{code}: {error.get('Message', '')}"
                if code == "ValidationException":
                    self._isolate(pending, deadline, result, last_error)
                    return result
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
                if code in RETRYABLE_ERROR_CODES or status >= _SERVER_ERROR_STATUS:
                    continue
                break  # e.g. ResourceNotFound, AccessDenied: retrying now cannot help; Lambda retries later
            except BotoCoreError as exc:  # connection errors, timeouts
                last_error = f"{type(exc).__name__}: {exc}"
                continue
            left = {_request_key(request) for request in response.get(UNPROCESSED, {}).get(self.table_name, [])}
            result.written.extend(put for key, put in pending.items() if key not in left)
            pending = {key: put for key, put in pending.items() if key in left}
            last_error = UNPROCESSED
        result.unwritten.extend((put, last_error) for put in pending.values())
        return result

    def _isolate(self, pending: dict[tuple[str, str], PutItem[T]], deadline: float, result: WriteReport[T], error: str) -> None:
        """A ValidationException names no item: retry each alone to find the one(s) DynamoDB rejects."""
        if len(pending) == 1:
            result.rejected.extend((put, error) for put in pending.values())
            return
        for put in pending.values():
            single = self._write_chunk([put], deadline, always_try=False)
            result.calls += single.calls
            result.written.extend(single.written)
            result.unwritten.extend(single.unwritten)
            result.rejected.extend(single.rejected)
