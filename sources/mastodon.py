"""Source `mastodon`: a Mastodon server's public, local or hashtag timeline over its streaming API (SSE).

- `update` events (new statuses) and `status.update` events (edits: the same status id, so the stored item
  is overwritten) are records: the status JSON exactly as the server sent it (processor/mappings/mastodon.py).
- `delete` events become records of their own: `{"event": "delete", "id", "instance", "acct"?}`; `acct` (the
  author) is there when this run saw the status, which the processor needs to find the item to delete.
- Every other event kind (`notification`, `filters_changed`, `announcement`, ...) is counted as a protocol
  message by name; comments (`:thump` heartbeats every ~15 s) only reset the stall clock.
- Payloads that are not a readable status (bad UTF-8, bad JSON, oversize, no id) are dead-lettered with
  the origin `mastodon:<host>:<timeline>:<n>` (n counts events received this run) and the reason.
- The streaming host comes from `GET /api/v2/instance` (`configuration.urls.streaming`), else the instance.
- Reconnects: network errors, 5xx, a clean end of stream and stalls back off exponentially with jitter;
  401/403 (bad or missing token) from `auth_backoff`, 429 after Retry-After (or from `rate_limit_backoff`).
- On each connection after a status was seen, the gap is refilled from `/api/v1/timelines/...?min_id=<last id
  seen>` (deduplicated); the last id lives in memory, so a daemon restart does not refill.

The access token is sent as a bearer header only; it never appears in logs, errors, metrics or dead letters.
"""

from __future__ import annotations

import contextlib
import json
import queue
import random
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import urllib3
from urllib3.exceptions import ReadTimeoutError

from sources.backoff import exponential
from sources.base import Source, SourceContext, register_source
from sources.mastodon_api import BACKFILL_PAGE_STATUSES, ApiError, discover_streaming, fetch_timeline, retry_after_s, safe_error
from sources.mastodon_config import AUTH_BACKOFF_MAX_S, RATE_LIMIT_BACKOFF_MAX_S, MastodonSourceConfig
from sources.mastodon_sse import Chunk, Ended, Opened, SseComment, SseParser, StreamReader
from sources.parsing import REASON_LINE_TOO_LONG, Rejection, parse_json_record

__all__ = ["MastodonSource", "MastodonSourceConfig"]

# The socket's own read timeout is a backstop a little behind the stall clock, which names the stall clearly.
SOCKET_GRACE_S = 1.0
# How often the loop looks at the stop flag and the stall clock while no data arrives.
POLL_INTERVAL_S = 0.2
# Status ids remembered for deduplication and for the author of a later delete.
SEEN_STATUSES = 100_000
# Event kinds counted under their own name; anything else is `event_other` (bounded metric labels).
KNOWN_OTHER_EVENTS = frozenset(
    {
        "notification",
        "conversation",
        "filters_changed",
        "announcement",
        "announcement.reaction",
        "announcement.delete",
        "encrypted_message",
        "notifications_merged",
        "message",
    }
)
RECORD_EVENTS = frozenset({"update", "status.update"})
REASON_INVALID_STATUS = "invalid_status"
REASON_INVALID_DELETE = "invalid_delete"
# Ids of Mastodon (numeric) and of compatible servers (Pleroma/Akkoma flake ids): short tokens.
_STATUS_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_STREAM_PATHS = {"public": "/api/v1/streaming/public", "local": "/api/v1/streaming/public/local"}


class _Retry(Exception):
    """Why the current connection ended and how long to wait before the next one."""

    def __init__(self, reason: str, delay_s: float, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.delay_s, self.detail = reason, delay_s, detail


@register_source
class MastodonSource(Source):
    config_model = MastodonSourceConfig
    config: MastodonSourceConfig

    def __init__(
        self, config: MastodonSourceConfig, *, rng: random.Random | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__(config)
        self._rng = rng or random.Random()
        self._clock = clock
        self._pool = urllib3.PoolManager(num_pools=4, maxsize=4)
        self._host = urlsplit(config.instance).netloc
        self._tag = (config.hashtag or "").lstrip("#")
        self._timeline = f"hashtag:{self._tag}" if config.timeline == "hashtag" else config.timeline
        self._seen: OrderedDict[str, str] = OrderedDict()  # status id -> author acct ("" when unknown)
        self._last_id: str | None = None
        self._received = 0
        self._connected = False
        self._network = exponential(
            config.reconnect_initial, max(config.reconnect_initial, config.reconnect_max), True, self._rng
        )
        self._auth = exponential(config.auth_backoff, AUTH_BACKOFF_MAX_S, True, self._rng)
        self._rate = exponential(config.rate_limit_backoff, RATE_LIMIT_BACKOFF_MAX_S, True, self._rng)

    @property
    def _token(self) -> str:
        return self.config.access_token.get_secret_value()

    def _headers(self, accept: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}", "Accept": accept, "User-Agent": "tweet-producer"}

    def run(self, ctx: SourceContext) -> None:
        base = self.config.streaming_url or discover_streaming(
            ctx, self._pool, self.config.instance, self._headers("application/json"), self.config.connect_timeout, self._token
        )
        if base is None:
            return  # stopping
        url = base + self._stream_path()
        while not ctx.stopping:
            try:
                # Each connection refills the gap since the last status seen, if any (also after a restart).
                self._session(ctx, url)
                return  # stopping
            except _Retry as retry:
                if self._connected:  # reported once per lost connection; failed attempts are counted as reconnects
                    self._connected = False
                    ctx.connection(False, retry.detail)
                ctx.reconnecting(retry.reason, retry.delay_s, retry.detail)
                if ctx.wait(retry.delay_s):
                    return

    def _stream_path(self) -> str:
        if self.config.timeline == "hashtag":
            return "/api/v1/streaming/hashtag?" + urlencode({"tag": self._tag})
        path = _STREAM_PATHS[self.config.timeline]
        return path + ("?only_media=true" if self.config.only_media else "")

    def _session(self, ctx: SourceContext, url: str) -> None:
        """One connection, until stopping (returns) or it fails (raises _Retry)."""
        reader = StreamReader(
            self._pool,
            url,
            self._headers("text/event-stream"),
            self.config.connect_timeout,
            self.config.stall_timeout + SOCKET_GRACE_S,
        )
        reader.start()
        try:
            self._consume(ctx, reader, url)
        finally:
            reader.close()

    def _consume(self, ctx: SourceContext, reader: StreamReader, url: str) -> None:
        parser = SseParser(self.config.max_event_bytes)
        host = urlsplit(url).netloc
        opened = False
        last_data = self._clock()
        # Until the server answers, the connect timeout bounds the wait (plus one stall period for the headers).
        limit = self.config.connect_timeout + self.config.stall_timeout
        while not ctx.stopping:
            try:
                item = reader.items.get(timeout=POLL_INTERVAL_S)
            except queue.Empty:
                if self._clock() - last_data > limit:
                    phase = "data or heartbeat" if opened else "a response"
                    raise self._network_retry("stall", f"no {phase} from {host} for {limit:.1f}s") from None
                continue
            if isinstance(item, Opened):
                self._opened(ctx, item, host)
                opened, limit = True, self.config.stall_timeout
                self._backfill(ctx)
            elif isinstance(item, Chunk):
                if not self._chunk(ctx, parser, item.data):
                    return
            else:
                self._ended(item, host)
            # Counted from the end of handling: time spent in a refill or blocked on a full buffer (the
            # reader queues meanwhile) is not the server's silence.
            last_data = self._clock()

    def _opened(self, ctx: SourceContext, opened: Opened, host: str) -> None:
        status = opened.status
        if status == 200:
            self._connected = True
            ctx.connection(True, f"{host} {self._timeline}")
            return
        message = safe_error(opened.body, self._token)
        detail = f"HTTP {status} from {host}{': ' + message if message else ''}"
        if status in (401, 403):
            raise _Retry(
                f"http_{status}",
                self._auth.next(),
                f"{detail}: the access token was refused (Mastodon >= 4.2 needs a valid user token for every stream)",
            )
        if status == 429:
            after = retry_after_s(opened.headers.get("retry-after"))
            raise _Retry("http_429", after if after is not None else self._rate.next(), detail)
        if status >= 500:
            raise self._network_retry(f"http_{status}", detail)
        # Other 4xx: a wrong path or tag, or streaming disabled on this server; retrying fast cannot help.
        raise _Retry(f"http_{status}", self._auth.next(), detail)

    def _ended(self, ended: Ended, host: str) -> None:
        if ended.error is None:
            raise self._network_retry("closed", f"{host} closed the stream")
        if isinstance(ended.error, TimeoutError | ReadTimeoutError):
            raise self._network_retry("stall", f"timed out reading from {host}")
        raise self._network_retry("network", safe_error(f"{type(ended.error).__name__}: {ended.error}", self._token))

    def _network_retry(self, reason: str, detail: str) -> _Retry:
        return _Retry(reason, self._network.next(), detail)

    def _chunk(self, ctx: SourceContext, parser: SseParser, data: bytes) -> bool:
        """Handle the events `data` completes; False when the daemon is stopping."""
        for item in parser.feed(data):
            self._backoffs_reset()
            if isinstance(item, SseComment):
                continue
            self._received += 1
            origin = f"mastodon:{self._host}:{self._timeline}:{self._received}"
            if item.oversize:
                ctx.reject(
                    item.data, origin, REASON_LINE_TOO_LONG, f"{item.name} event larger than {self.config.max_event_bytes} bytes"
                )
            elif item.name in RECORD_EVENTS:
                if not self._status(ctx, item.data, origin, edit=item.name != "update"):
                    return False
            elif item.name == "delete":
                if not self._delete(ctx, item.data, origin):
                    return False
            else:
                kind = item.name if item.name in KNOWN_OTHER_EVENTS else "other"
                ctx.protocol_message(f"event_{kind}", f"{item.name} event from {self._host} ({len(item.data)} bytes)")
        return True

    def _backoffs_reset(self) -> None:
        """The server speaks to us: the next failure starts every schedule over."""
        self._network.reset()
        self._auth.reset()
        self._rate.reset()

    def _status(self, ctx: SourceContext, data: bytes, origin: str, *, edit: bool) -> bool:
        parsed = parse_json_record(data, self.config.max_event_bytes)
        if isinstance(parsed, Rejection):
            ctx.reject(data, origin, parsed.reason, parsed.detail)
            return True
        status_id = parsed.get("id") if isinstance(parsed, dict) else None
        if not isinstance(status_id, str) or not _STATUS_ID.fullmatch(status_id):
            ctx.reject(data, origin, REASON_INVALID_STATUS, "not a status object with a string id")
            return True
        if status_id in self._seen and not edit:
            ctx.protocol_message("duplicate_status", f"status {status_id} was already sent (gap refill overlap)")
            return True
        if not ctx.emit(data, parsed, f"{origin}:{status_id}"):
            return False
        self._remember(status_id, parsed)
        return True

    def _remember(self, status_id: str, status: dict[str, Any]) -> None:
        account = status.get("account")
        acct = account.get("acct") if isinstance(account, dict) else None
        self._seen[status_id] = acct if isinstance(acct, str) else ""
        self._seen.move_to_end(status_id)
        while len(self._seen) > SEEN_STATUSES:
            self._seen.popitem(last=False)
        if self._last_id is None or _id_order(status_id) > _id_order(self._last_id):
            self._last_id = status_id

    def _delete(self, ctx: SourceContext, data: bytes, origin: str) -> bool:
        text = data.decode("utf-8", "replace").strip()
        if text.startswith('"'):  # some servers send the id as a JSON string
            with contextlib.suppress(ValueError):
                text = str(json.loads(text))
        if not _STATUS_ID.fullmatch(text):
            ctx.reject(data, origin, REASON_INVALID_DELETE, "delete event without a status id")
            return True
        record: dict[str, Any] = {"event": "delete", "id": text, "instance": self._host}
        acct = self._seen.get(text)
        if acct:
            record["acct"] = acct
        encoded = json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        return ctx.emit(encoded, record, f"{origin}:delete:{text}")

    def _backfill(self, ctx: SourceContext) -> None:
        """Refill the gap since the last status seen; failures are counted and the stream goes on."""
        if self._last_id is None or not self.config.backfill_pages:
            return
        if self.config.timeline == "hashtag":
            path, query = f"/api/v1/timelines/tag/{quote(self._tag)}", {}
        else:
            path = "/api/v1/timelines/public"
            query = {"local": "true"} if self.config.timeline == "local" else {}
            if self.config.only_media:
                query["only_media"] = "true"
        for page in range(self.config.backfill_pages):
            since = self._last_id
            try:
                statuses = fetch_timeline(
                    ctx,
                    self._pool,
                    self.config.instance + path,
                    query | {"min_id": since},
                    self._headers("application/json"),
                    self.config.connect_timeout,
                    self._token,
                )
            except ApiError as exc:
                ctx.protocol_message("backfill_failed", f"gap refill from {self._host} after status {since}: {exc}")
                return
            if statuses is None:
                return  # stopping
            for raw, _status in sorted(statuses, key=_page_order):
                origin = f"mastodon:{self._host}:{self._timeline}:backfill:{page + 1}"
                if not self._status(ctx, raw, origin, edit=False):
                    return
            if len(statuses) < BACKFILL_PAGE_STATUSES or self._last_id == since:
                return


def _page_order(entry: tuple[bytes, Any]) -> tuple[int, str]:
    """A timeline page lists the newest first; the gap is refilled oldest first."""
    status = entry[1]
    return _id_order(str(status.get("id", ""))) if isinstance(status, dict) else (0, "")


def _id_order(status_id: str) -> tuple[int, str]:
    """Mastodon ids are growing integers written as text: longer is newer, then by text."""
    return len(status_id), status_id
