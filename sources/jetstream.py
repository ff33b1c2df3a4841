"""Source `jetstream`: Bluesky's Jetstream firehose over a websocket, resumable by its `time_us` cursor.

What becomes what:
- `commit` events that create or update a record: records, shipped as the exact bytes Jetstream sent
  (processor/mappings/bluesky.py maps `app.bsky.feed.post` ones to table items);
- `commit` deletes, `identity` and `account` events, and kinds this code does not know: protocol messages
  (counted by kind: `commit_delete`, `identity`, `account`, `unknown_kind`), not records: they carry no post;
- payloads that are not one JSON object of Jetstream's shape (bad UTF-8, bad JSON, over `max_message_size_bytes`,
  no `did`/`time_us`/`kind`, a commit without its fields): dead-lettered with the instance and cursor as origin.

Resume: `position()` is the highest `time_us` handled so far (emitted or counted as a notice); a reconnect
asks for `cursor = position - rewind` and drops events it already handled (`_Seen`, bounded), so a disconnect
leaves neither a gap nor a duplicate. Compression (`compress=true`, zstd with Jetstream's dictionary) is not
implemented; the client offers only permessage-deflate, which Jetstream accepts without `compress`.

Checkpoint (`checkpoint`, default on): emitted records, and rejected events with a `time_us`, carry the token
`(None, time_us)`; the state is `{"format": 1, "cursor": time_us or null}`; a restart connects with `cursor =
saved - rewind` as a reconnect does, over the configured `cursor`, and sends the events of that window again.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Mapping
from typing import Any, Literal, TypeGuard
from urllib.parse import urlencode, urlsplit

from pydantic import Field, field_validator
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.frames import CloseCode
from websockets.sync.client import ClientConnection, connect

from sources.backoff import Backoff, exponential
from sources.base import CheckpointUnusable, Source, SourceConfig, SourceContext, register_source
from sources.parsing import Rejection, parse_json_record, safe_detail

# Bluesky's public instances (their README); cursors are wall-clock microseconds, valid on every instance.
DEFAULT_INSTANCES = (
    "wss://jetstream1.us-east.bsky.network/subscribe",
    "wss://jetstream2.us-east.bsky.network/subscribe",
    "wss://jetstream1.us-west.bsky.network/subscribe",
    "wss://jetstream2.us-west.bsky.network/subscribe",
)
DEFAULT_COLLECTIONS = ("app.bsky.feed.post",)
# Jetstream's own limits on the subscribe query.
MAX_WANTED_COLLECTIONS = 100
MAX_WANTED_DIDS = 10_000
# Kinesis takes 1 MiB records by default: larger messages could not be shipped anyway.
DEFAULT_MAX_MESSAGE_BYTES = 1024 * 1024
MAX_MESSAGE_BYTES_LIMIT = 10 * 1024 * 1024
# The websocket accepts more than the limit asked of the server, so a message just over it arrives and is
# dead-lettered with its bytes instead of failing the connection (websockets closes with 1009 beyond max_size).
_CLIENT_MAX_SIZE_FACTOR = 2
# recv() returns at least this often, so a stop is noticed within about a second.
RECV_SLICE_S = 0.5
# Opening (TCP, TLS, HTTP upgrade) must finish well inside the daemon's 5 s source stop timeout.
OPEN_TIMEOUT_S = 3.0
CLOSE_TIMEOUT_S = 1.0
# Events handled within this many microseconds before the newest are remembered for de-duplication; the
# rewind on reconnect must stay inside it (validated), with room for slightly out-of-order events.
_SEEN_MARGIN_US = 5_000_000
# Bounded memory whatever the rate: at the full firehose (~2,000 events/s) this covers minutes.
MAX_SEEN_EVENTS = 200_000
_MICROSECONDS = 1_000_000
_USER_AGENT = "tweet-producer-jetstream/1"
STATE_FORMAT = 1

_RECORD_OPERATIONS = ("create", "update")
_NOTICE_KINDS = ("identity", "account")
REASON_UNEXPECTED_SHAPE = "unexpected_shape"
KIND_DUPLICATE = "duplicate"
REASON_MESSAGE_TOO_LARGE = "message_too_large"


class JetstreamSourceConfig(SourceConfig):
    """Subscribe to a Jetstream instance (failing over along the list)."""

    type: Literal["jetstream"] = "jetstream"
    instances: list[str] = Field(
        default=list(DEFAULT_INSTANCES),
        min_length=1,
        description="Subscribe URLs (ws:// or wss://, path /subscribe), tried in order; the next after repeated failures.",
    )
    wanted_collections: list[str] = Field(
        default=list(DEFAULT_COLLECTIONS),
        max_length=MAX_WANTED_COLLECTIONS,
        description="Collection NSIDs (or `prefix.*`) to receive (`wantedCollections`); empty = all.",
    )
    wanted_dids: list[str] = Field(
        default_factory=list, max_length=MAX_WANTED_DIDS, description="Only these accounts (`wantedDids`); empty = all."
    )
    max_message_size_bytes: int = Field(
        default=DEFAULT_MAX_MESSAGE_BYTES,
        gt=0,
        le=MAX_MESSAGE_BYTES_LIMIT,
        description="Asked of the server (`maxMessageSizeBytes`); larger messages that still arrive are dead-lettered.",
    )
    cursor: int | None = Field(
        default=None, ge=0, description="`time_us` (unix microseconds) to start from; default: live, from now."
    )
    rewind: float = Field(
        default=3.0, ge=0, le=60, description="Seconds before the last event a reconnect resumes from (duplicates are dropped)."
    )
    stall_timeout: float = Field(
        default=60.0, gt=0, description="Seconds without any message after which the connection is dropped and renewed."
    )
    failover_after: int = Field(
        default=3, ge=1, description="Failed connections in a row to one instance before moving to the next."
    )
    initial_backoff: float = Field(default=1.0, ge=0, description="Seconds before the first reconnect (doubling, jittered).")
    max_backoff: float = Field(default=60.0, gt=0, description="Longest delay between reconnects, in seconds.")
    checkpoint: bool = Field(default=True, description="Save the delivered cursor; a restart resumes there, less `rewind`.")

    @field_validator("instances")
    @classmethod
    def _websocket_urls(cls, value: list[str]) -> list[str]:
        for url in value:
            parts = urlsplit(url)
            if parts.scheme not in ("ws", "wss") or not parts.hostname:
                raise ValueError(f"{url!r} is not a ws:// or wss:// URL")
            if parts.query:
                raise ValueError(f"{url!r}: give filters as keys (wanted_collections, ...), not in the URL")
        return value

    @field_validator("wanted_collections", "wanted_dids")
    @classmethod
    def _no_blanks(cls, value: list[str]) -> list[str]:
        if any(not item.strip() for item in value):
            raise ValueError("entries must not be empty")
        return value


class _Seen:
    """Keys of events handled within the last window of `time_us`, at most `limit` of them (oldest dropped)."""

    def __init__(self, window_us: int, limit: int = MAX_SEEN_EVENTS) -> None:
        self.window_us = window_us
        self.limit = limit
        self._order: deque[tuple[int, tuple[Any, ...]]] = deque()
        self._keys: set[tuple[Any, ...]] = set()
        self.newest = 0

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def add(self, time_us: int, key: tuple[Any, ...]) -> bool:
        """Remember `key`; False when it was already there (a replayed duplicate)."""
        if key in self._keys:
            return False
        self._keys.add(key)
        self._order.append((time_us, key))
        self.newest = max(self.newest, time_us)
        while self._order and (len(self._order) > self.limit or self._order[0][0] < self.newest - self.window_us):
            self._keys.discard(self._order.popleft()[1])
        return True


class _Closed(Exception):
    """The connection ended: `reason` is the reconnect label, `detail` says what happened."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@register_source
class JetstreamSource(Source):
    config_model = JetstreamSourceConfig
    config: JetstreamSourceConfig

    def __init__(
        self,
        config: JetstreamSourceConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(config)
        self._clock = clock
        self._backoff: Backoff = exponential(config.initial_backoff, max(config.max_backoff, config.initial_backoff), True, rng)
        rewind_us = round(config.rewind * _MICROSECONDS)
        self._rewind_us = rewind_us
        self._seen = _Seen(rewind_us + _SEEN_MARGIN_US)
        self._cursor: int | None = None  # highest time_us handled; None before the first event
        self._saved: int | None = None  # the cursor a checkpoint restored
        self._instance = 0
        self._failures = 0  # failed connections in a row to the current instance

    def position(self) -> int | None:
        """The resume cursor: the highest `time_us` handed over as a record or counted as a notice so far."""
        return self._cursor

    def checkpoints(self) -> bool:
        return self.config.checkpoint

    def resume(self, state: Mapping[str, Any]) -> None:
        """Start from a saved cursor (minus the rewind, as a reconnect does) instead of the configured one."""
        if not isinstance(state, Mapping) or state.get("format") != STATE_FORMAT or isinstance(state.get("format"), bool):
            raise CheckpointUnusable(f"not a format {STATE_FORMAT} jetstream checkpoint")
        cursor = state.get("cursor")
        if cursor is not None and not _is_time_us(cursor):
            raise CheckpointUnusable(f"cursor: not a time_us (non-negative integer): {str(cursor)[:60]!r}")
        self._saved = cursor
        if cursor is not None and self._cursor is None:
            self._cursor = cursor

    def checkpoint_state(self, committed: Mapping[Hashable, Any]) -> dict[str, Any]:
        """The acknowledged prefix's cursor, or the restored one until this run passes it (the replay before it was delivered)."""
        cursor = committed.get(None)
        if self._saved is not None:
            cursor = self._saved if cursor is None else max(cursor, self._saved)
        return {"format": STATE_FORMAT, "cursor": cursor}

    def subscribe_url(self) -> str:
        """The current instance's URL with the filters and the cursor to resume from."""
        params: list[tuple[str, str]] = [("wantedCollections", c) for c in self.config.wanted_collections]
        params += [("wantedDids", d) for d in self.config.wanted_dids]
        params.append(("maxMessageSizeBytes", str(self.config.max_message_size_bytes)))
        if self._cursor is not None:
            params.append(("cursor", str(max(0, self._cursor - self._rewind_us))))
        elif self.config.cursor is not None:
            params.append(("cursor", str(self.config.cursor)))
        return f"{self.config.instances[self._instance]}?{urlencode(params)}"

    def run(self, ctx: SourceContext) -> None:
        while not ctx.stopping:
            url = self.subscribe_url()
            host = urlsplit(url).netloc
            opened = self._open(url, host, ctx)
            if opened is None:
                return  # stopping
            closed = opened if isinstance(opened, _Closed) else self._session(opened, host, ctx)
            if ctx.stopping:
                return
            self._schedule_reconnect(closed, ctx)

    def _open(self, url: str, host: str, ctx: SourceContext) -> ClientConnection | _Closed | None:
        """The connection, why it failed, or None when the daemon stops meanwhile.

        DNS, TCP, TLS and the upgrade block for up to OPEN_TIMEOUT_S, longer than a stop may wait: they run
        in a helper thread, which an abandoned attempt leaves to finish (and close what it opened) by itself.
        """
        outcome: list[ClientConnection | _Closed] = []
        abandoned = threading.Event()

        def attempt() -> None:
            try:
                conn = connect(
                    url,
                    open_timeout=OPEN_TIMEOUT_S,
                    close_timeout=CLOSE_TIMEOUT_S,
                    max_size=self.config.max_message_size_bytes * _CLIENT_MAX_SIZE_FACTOR,
                    user_agent_header=_USER_AGENT,
                )
            except InvalidStatus as exc:
                outcome.append(_Closed(f"http_{exc.response.status_code}", f"{host} refused the subscription: {exc}"))
            except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
                outcome.append(_Closed("network", f"{host}: {type(exc).__name__}: {exc}"))
            except Exception as exc:  # noqa: BLE001 - whatever the client library raises, the source reconnects
                outcome.append(_Closed("connect_error", f"{host}: {type(exc).__name__}: {safe_detail(str(exc))}"))
            else:
                outcome.append(conn)
                if abandoned.is_set():
                    _discard(conn)

        thread = threading.Thread(target=attempt, name=f"jetstream-connect-{host}", daemon=True)
        thread.start()
        while thread.is_alive():
            thread.join(RECV_SLICE_S)
            if ctx.stopping:
                abandoned.set()
                for result in outcome:  # opened just before the flag was set: close it here
                    if not isinstance(result, _Closed):
                        _discard(result)
                return None
        return outcome[0] if outcome else _Closed("network", f"{host}: the connection attempt failed")

    def _session(self, conn: ClientConnection, host: str, ctx: SourceContext) -> _Closed:
        ctx.connection(True, host)
        received = False
        try:
            with conn:
                last_message = self._clock()
                while not ctx.stopping:
                    try:
                        message = conn.recv(timeout=RECV_SLICE_S, decode=False)
                    except TimeoutError:
                        silent = self._clock() - last_message
                        if silent >= self.config.stall_timeout:
                            return _Closed("stall", f"{host}: no message for {silent:.1f}s")
                        continue
                    last_message = self._clock()
                    if not received:
                        received = True
                        self._healthy()
                    if not self._handle(message, host, ctx):
                        break
                return _Closed("stopping", host)
        except ConnectionClosed as exc:
            return self._closed(exc, host, ctx)
        finally:
            ctx.connection(False, host)

    def _healthy(self) -> None:
        """Messages arrive: the next failure starts the schedule and the instance's failure count over."""
        self._backoff.reset()
        self._failures = 0

    def _closed(self, exc: ConnectionClosed, host: str, ctx: SourceContext) -> _Closed:
        sent, rcvd = exc.sent, exc.rcvd
        if sent is not None and sent.code == CloseCode.MESSAGE_TOO_BIG:
            # The message never reached us: dead-letter what is known of it, so it is counted, not lost unseen.
            limit = self.config.max_message_size_bytes * _CLIENT_MAX_SIZE_FACTOR
            ctx.reject(b"", self._origin(host, None), REASON_MESSAGE_TOO_LARGE, f"a message over {limit} bytes")
            return _Closed(REASON_MESSAGE_TOO_LARGE, f"{host}: a message over {limit} bytes")
        if rcvd is None:
            return _Closed("network", f"{host}: connection lost without a close frame")
        detail = f"{host} closed the connection: code {rcvd.code} {safe_detail(rcvd.reason)!r}"
        if rcvd.code in (CloseCode.NORMAL_CLOSURE, CloseCode.GOING_AWAY):
            return _Closed("server_closed", detail)
        return _Closed("server_error", detail)

    def _schedule_reconnect(self, closed: _Closed, ctx: SourceContext) -> None:
        self._failures += 1
        detail = closed.detail
        if self._failures >= self.config.failover_after and len(self.config.instances) > 1:
            self._instance = (self._instance + 1) % len(self.config.instances)
            self._failures = 0
            detail += f"; failing over to {urlsplit(self.config.instances[self._instance]).netloc}"
        delay = self._backoff.next()
        ctx.reconnecting(closed.reason, delay, detail)
        ctx.wait(delay)

    def _origin(self, host: str, time_us: Any) -> str:
        if isinstance(time_us, int) and not isinstance(time_us, bool):
            return f"jetstream:{host}:{time_us}"
        return f"jetstream:{host}:after:{self._cursor if self._cursor is not None else 'start'}"

    def _handle(self, message: bytes | str, host: str, ctx: SourceContext) -> bool:
        """Emit, dead-letter or count one message; False when the daemon is stopping."""
        data = message.encode("utf-8") if isinstance(message, str) else message
        parsed = parse_json_record(data, self.config.max_message_size_bytes)
        if isinstance(parsed, Rejection):
            ctx.reject(data, self._origin(host, None), parsed.reason, parsed.detail)
            return True
        shape = _shape(parsed)
        if isinstance(shape, str):
            time_us = parsed.get("time_us") if isinstance(parsed, dict) else None
            token = (None, time_us) if self.config.checkpoint and _is_time_us(time_us) else None
            ctx.reject(data, self._origin(host, time_us), REASON_UNEXPECTED_SHAPE, shape, token)
            return True
        time_us, key, notice = shape
        origin = self._origin(host, time_us)
        if key in self._seen:
            # Replayed by the rewind after a reconnect: handled the first time, counted here, not sent again.
            ctx.protocol_message(KIND_DUPLICATE, origin)
            return True
        if notice is not None:
            ctx.protocol_message(notice, safe_detail(f"{origin} {parsed.get('did')}"))
        elif not ctx.emit(data, parsed, origin, (None, time_us) if self.config.checkpoint else None):
            return False  # stopping; neither seen nor past the cursor, so a later run resumes with it
        # Marked seen only once handed over: if emit raised, the restarted run gets it again from the replay.
        self._seen.add(time_us, key)
        self._cursor = time_us if self._cursor is None else max(self._cursor, time_us)
        return True


def _is_time_us(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _discard(conn: ClientConnection) -> None:
    """Close a connection nobody will read (as a context manager: websockets 17 warns about bare use)."""
    with conn:
        pass


def _shape(event: Any) -> tuple[int, tuple[Any, ...], str | None] | str:
    """(time_us, de-duplication key, notice kind or None for a record), or what is wrong with the event."""
    if not isinstance(event, dict):
        return f"a JSON {type(event).__name__}, not an event object"
    did, time_us, kind = event.get("did"), event.get("time_us"), event.get("kind")
    if not isinstance(did, str) or not did:
        return "no `did` string"
    if not _is_time_us(time_us):
        return f"`time_us` is not a non-negative integer: {safe_detail(repr(time_us))[:80]}"
    if not isinstance(kind, str):
        return "no `kind` string"
    if kind != "commit":
        return time_us, (time_us, did, kind), kind if kind in _NOTICE_KINDS else "unknown_kind"
    commit = event.get("commit")
    if not isinstance(commit, dict):
        return "a commit event without a `commit` object"
    fields = [commit.get(name) for name in ("operation", "collection", "rkey")]
    if not all(isinstance(value, str) and value for value in fields):
        return "a commit without `operation`, `collection` and `rkey` strings"
    operation, collection, rkey = fields
    key = (time_us, did, collection, rkey, operation)
    if operation == "delete":
        return time_us, key, "commit_delete"
    if operation not in _RECORD_OPERATIONS:
        return time_us, key, "unknown_operation"
    if not isinstance(commit.get("record"), dict):
        return f"a {operation} commit without a `record` object"
    return time_us, key, None
