"""Where records that can never be stored go: an SQS queue, a JSON-lines file, or (failing both) the log.

Each entry carries the shard, the sequence number (and sub-sequence number inside a KPL aggregate), the
reason, and the payload in base64. When the entry would exceed SQS's message size limit, the payload is
replaced by a pointer (stream ARN, shard, sequence number, size and SHA-256): the record stays readable in
the stream for its retention period. The same limit applies to every destination so entries look alike.
A destination that refuses an entry raises DeadLetterUnavailable: the caller reports the record as a
batch item failure, so it is retried, never dropped. Retries can therefore dead-letter a record twice.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from processor.config import ProcessorSettings
from processor.decoding import UserRecord
from processor.errors import DeadLetterUnavailable, PermanentFailure
from processor.items import format_time
from processor.telemetry import logger

# SQS's maximum message size (256 KiB); the body is ASCII JSON so characters equal bytes.
SQS_MAX_MESSAGE_BYTES = 256 * 1024
# Longest failure detail kept (details can quote payload fragments).
MAX_DETAIL_CHARS = 1000


def dead_letter_entry(record: UserRecord, failure: PermanentFailure) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "reason": failure.reason,
        "detail": failure.detail[:MAX_DETAIL_CHARS],
        "shardId": record.shard_id,
        "sequenceNumber": record.sequence_number,
        "partitionKey": record.partition_key,
        "eventSourceARN": record.event_source_arn,
        "approximateArrivalTimestamp": format_time(record.arrival) if record.arrival else None,
        "deadLetteredAt": format_time(datetime.now(UTC)),
        "payloadBytes": len(record.data),
        "payloadSha256": hashlib.sha256(record.data).hexdigest(),
    }
    if record.sub_sequence_number is not None:
        entry["subSequenceNumber"] = record.sub_sequence_number
    entry["payloadBase64"] = base64.b64encode(record.data).decode("ascii")
    if len(_serialize(entry)) > SQS_MAX_MESSAGE_BYTES:
        del entry["payloadBase64"]
        entry["payloadPointer"] = {
            "stream": record.event_source_arn,
            "shardId": record.shard_id,
            "sequenceNumber": record.sequence_number,
            "subSequenceNumber": record.sub_sequence_number,
        }
    return entry


def _serialize(entry: dict[str, Any]) -> str:
    # ASCII keeps the body within SQS's allowed characters whatever the detail quotes.
    return json.dumps(entry, ensure_ascii=True, separators=(",", ":"))


class DeadLetterDestination(Protocol):
    description: str

    def send(self, entry: dict[str, Any]) -> None:
        """Store one entry durably or raise DeadLetterUnavailable."""


class SqsDeadLetters:
    def __init__(self, queue_url: str, sqs: Callable[[], Any]) -> None:
        self.queue_url = queue_url
        self._sqs = sqs  # asked for on first send: a batch without dead letters needs no SQS client
        self.description = f"SQS queue {queue_url}"

    def send(self, entry: dict[str, Any]) -> None:
        try:
            self._sqs().send_message(QueueUrl=self.queue_url, MessageBody=_serialize(entry))
        except (ClientError, BotoCoreError) as exc:
            raise DeadLetterUnavailable(f"{self.description} refused the dead letter: {exc}") from exc


_file_locks: dict[str, threading.Lock] = {}
_file_locks_guard = threading.Lock()


class FileDeadLetters:
    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.description = f"dead-letter file {path}"
        with _file_locks_guard:
            self._lock = _file_locks.setdefault(str(self.path.resolve()), threading.Lock())

    def send(self, entry: dict[str, Any]) -> None:
        line = _serialize(entry) + "\n"
        try:
            with self._lock, self.path.open("a", encoding="ascii") as out:
                out.write(line)
                out.flush()
        except OSError as exc:
            raise DeadLetterUnavailable(f"cannot append to {self.description}: {exc}") from exc


class LogDeadLetters:
    """No destination configured: the entry is logged at ERROR level, in full, and counted."""

    description = "the log (set DEAD_LETTER_QUEUE_URL or DEAD_LETTER_FILE to keep dead letters)"

    def send(self, entry: dict[str, Any]) -> None:
        logger.error("dead letter (no dead-letter queue or file configured)", extra={"dead_letter": entry})


def destination(settings: ProcessorSettings, sqs: Callable[[], Any]) -> DeadLetterDestination:
    """The destination the settings name; `sqs` gives the SQS client when the queue is used."""
    if settings.dead_letter_queue_url:
        return SqsDeadLetters(settings.dead_letter_queue_url, sqs)
    if settings.dead_letter_file:
        return FileDeadLetters(settings.dead_letter_file)
    return LogDeadLetters()
