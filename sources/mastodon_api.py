"""The REST calls of the `mastodon` source (instance discovery, gap refill) and their error texts.

Each call runs in a helper thread while the source's thread waits in slices of POLL_INTERVAL_S, so a stop is
noticed on time even while a server is slow to answer (the call itself is bounded by its timeouts).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import urllib3

from sources.base import SourceContext
from sources.parsing import safe_detail

# Mastodon's largest timeline page.
BACKFILL_PAGE_STATUSES = 40
# A timeline page of 40 statuses is some 100-200 KiB; anything far larger is not a page.
MAX_API_BODY_BYTES = 16 * 1024 * 1024
# How long one REST call may take to answer, on top of connecting.
API_READ_TIMEOUT_S = 15.0
# How often the waiting source thread looks at the stop flag.
POLL_INTERVAL_S = 0.2
# Retry-After values beyond this are treated as this (a misconfigured server must not park the source for days).
RETRY_AFTER_MAX_S = 3600.0
_ERROR_TEXT_CHARS = 200
T = TypeVar("T")


class ApiError(Exception):
    """A REST call failed; the message names the status or error and never holds the token."""


def safe_error(body: bytes | str, token: str) -> str:
    """A short, printable error text from a response body or exception text, with the token masked."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    try:
        parsed = json.loads(text)
        if isinstance(parsed, dict) and isinstance(parsed.get("error"), str):
            text = parsed["error"]
    except ValueError:
        pass
    if token:
        text = text.replace(token, "<token>")
    return safe_detail(" ".join(text.split())[:_ERROR_TEXT_CHARS])


def retry_after_s(value: str | None, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> float | None:
    """Seconds a Retry-After header asks for (delta-seconds or an HTTP date), within [0, RETRY_AFTER_MAX_S]."""
    if not value or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            seconds = (parsedate_to_datetime(text) - now()).total_seconds()
        except (TypeError, ValueError, IndexError):
            return None
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), RETRY_AFTER_MAX_S)


def interruptible(ctx: SourceContext, call: Callable[[], T]) -> T | None:
    """`call()` in a helper thread; None as soon as the daemon is stopping. Its exception is re-raised."""
    outcome: list[Any] = []
    done = threading.Event()

    def target() -> None:
        try:
            outcome.append((True, call()))
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            outcome.append((False, exc))
        finally:
            done.set()

    threading.Thread(target=target, name="mastodon-api", daemon=True).start()
    while not done.wait(POLL_INTERVAL_S):
        if ctx.stopping:
            return None
    ok, value = outcome[0]
    if not ok:
        raise value
    result: T = value
    return result


def _get_json(
    pool: urllib3.PoolManager, url: str, fields: dict[str, str], headers: dict[str, str], connect_s: float, token: str
) -> Any:
    try:
        response = pool.request(
            "GET",
            url,
            fields=fields,
            headers=headers,
            retries=False,
            redirect=False,
            preload_content=False,
            timeout=urllib3.Timeout(connect=connect_s, read=API_READ_TIMEOUT_S),
        )
        try:
            body = response.read(MAX_API_BODY_BYTES + 1)
        finally:
            response.release_conn()
    except Exception as exc:  # noqa: BLE001 - any transport failure is one ApiError
        raise ApiError(safe_error(f"{type(exc).__name__}: {exc}", token)) from None
    if response.status != 200:
        raise ApiError(f"HTTP {response.status}: {safe_error(body[: _ERROR_TEXT_CHARS * 4], token)}")
    if len(body) > MAX_API_BODY_BYTES:
        raise ApiError(f"response larger than {MAX_API_BODY_BYTES} bytes")
    try:
        return json.loads(body)
    except ValueError as exc:
        raise ApiError(safe_detail(f"response is not JSON: {exc}")) from None


def discover_streaming(
    ctx: SourceContext, pool: urllib3.PoolManager, instance: str, headers: dict[str, str], connect_s: float, token: str
) -> str | None:
    """The streaming base URL from `/api/v2/instance`, else `instance` (counted as a protocol message); None if stopping."""
    try:
        info = interruptible(ctx, lambda: _get_json(pool, instance + "/api/v2/instance", {}, headers, connect_s, token))
    except ApiError as exc:
        ctx.protocol_message("instance_discovery_failed", f"{instance}/api/v2/instance: {exc}; streaming from the instance")
        return None if ctx.stopping else instance
    if info is None:
        return None
    urls = info.get("configuration", {}).get("urls", {}) if isinstance(info, dict) else {}
    streaming = urls.get("streaming") if isinstance(urls, dict) else None
    if not isinstance(streaming, str) or not streaming.strip():
        ctx.protocol_message(
            "instance_discovery_failed", f"{instance}/api/v2/instance names no streaming URL; using the instance"
        )
        return instance
    url = streaming.strip().rstrip("/")
    for websocket, http in (("wss://", "https://"), ("ws://", "http://")):
        if url.startswith(websocket):
            url = http + url[len(websocket) :]
    if not url.startswith(("https://", "http://")):
        ctx.protocol_message(
            "instance_discovery_failed", f"unusable streaming URL {safe_detail(url[:100])!r}; using the instance"
        )
        return instance
    return url


def fetch_timeline(
    ctx: SourceContext,
    pool: urllib3.PoolManager,
    url: str,
    query: dict[str, str],
    headers: dict[str, str],
    connect_s: float,
    token: str,
) -> list[tuple[bytes, Any]] | None:
    """One page of statuses as (bytes to ship, parsed status); None if stopping. Raises ApiError."""
    page = interruptible(
        ctx, lambda: _get_json(pool, url, query | {"limit": str(BACKFILL_PAGE_STATUSES)}, headers, connect_s, token)
    )
    if page is None:
        return None
    if not isinstance(page, list):
        raise ApiError(f"timeline is a JSON {type(page).__name__}, not a list")
    # The stream sends each status as compact JSON; the page's items are shipped the same way (an item that
    # is not a status is handed over too, and the source rejects it).
    return [(json.dumps(s, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "backslashreplace"), s) for s in page]
