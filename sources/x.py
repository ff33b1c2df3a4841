"""Source `x`: X (Twitter) API v2 filtered or sample stream, reconnecting exactly as X documents it.

Records are the stream's lines as X sends them (`data`, `includes`, `matching_rules`), byte for byte;
keep-alive newlines are not records, and bad lines are dead-lettered with origin `x:<stream>`. At start the
configured rules are synchronised (validated with a dry run first: a rule X rejects stops the source with
its index, value and X's reason, and nothing changes on the server). Reconnect rules (X's docs):

- a connection that delivered tweets and then dropped (closed, reset, stalled, in-band disconnect) is
  retried once at once;
- TCP/IP errors back off linearly by 250 ms up to 16 s; HTTP errors exponentially from 5 s up to 320 s;
  429 exponentially from 60 s; 401/403 from 60 s up to 15 min, with a message naming the cause;
- no byte (keep-alives included; X sends one every 20 s) for `stall_timeout` seconds is a stall.

Secrets are `SecretStr`s and are scrubbed from every detail the source reports.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from sources.backoff import Backoff, exponential, linear
from sources.base import Source, SourceConfig, SourceContext, SpoolSettings, register_source
from sources.parsing import Rejection, parse_json_record
from sources.x_client import (
    FILTERED_STREAM,
    KIND_AUTH,
    KIND_HTTP,
    KIND_NETWORK,
    KIND_RATE_LIMITED,
    SAMPLE_STREAM,
    RuleRejected,
    Scrubber,
    XClient,
    XFailure,
)
from sources.x_stream import LineSplitter, StreamEnd, StreamReader

TOKEN_ENV = "X_BEARER_TOKEN"  # noqa: S105 - the name of the variable, not a token
# Under systemd, `LoadCredential=x-bearer-token:/etc/tweet-producer/x-bearer-token` puts the token in this file
# of $CREDENTIALS_DIRECTORY (readable by the service alone), when $X_BEARER_TOKEN is not set.
TOKEN_CREDENTIAL = "x-bearer-token"  # noqa: S105 - a file name, not a token
CREDENTIALS_DIRECTORY_ENV = "CREDENTIALS_DIRECTORY"
DEFAULT_API_URL = "https://api.x.com"
# X sends a keep-alive every 20 s; a little grace for the network before calling it a stall.
DEFAULT_STALL_TIMEOUT_S = 22.0
DEFAULT_MAX_LINE_BYTES = 1024 * 1024
MAX_RULES = 1000  # pay-per-use and Pro allow 1,000 rules
MAX_RULE_CHARS = 1024
# X's reconnect schedules.
NETWORK_STEP_S, NETWORK_MAX_S = 0.25, 16.0
HTTP_INITIAL_S, HTTP_MAX_S = 5.0, 320.0
RATE_LIMIT_INITIAL_S, RATE_LIMIT_MAX_S = 60.0, 960.0
AUTH_INITIAL_S, AUTH_MAX_S = 60.0, 900.0
# Every blocking wait is sliced so a stop is noticed within this (the daemon joins sources after 5 s).
STOP_POLL_S = 1.0
# The socket's own read timeout, a backstop behind the source's stall clock.
_READ_TIMEOUT_MARGIN_S = 5.0
REASON_TRUNCATED = "truncated_line"
REASON_UNSENT = "unsent"
REASON_NOT_AN_OBJECT = "not_an_object"
T = TypeVar("T")
_KIND_NAME = re.compile(r"[^A-Za-z0-9_]+")
_MAX_KIND_CHARS = 40
DEFAULT_EXPANSIONS = ["author_id"]
DEFAULT_TWEET_FIELDS = ["created_at", "author_id", "lang", "conversation_id", "entities", "public_metrics"]
DEFAULT_USER_FIELDS = ["username", "name"]


class XRule(BaseModel):
    """One filtered-stream rule."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    value: str = Field(min_length=1, max_length=MAX_RULE_CHARS, description="The rule's query (X's rule syntax).")
    tag: str | None = Field(default=None, description="A label X returns in `matching_rules`.")


class XSourceConfig(SourceConfig):
    """X API v2 stream."""

    type: Literal["x"] = "x"
    stream: Literal["filtered", "sample"] = Field(
        default="filtered", description="`filtered` (rules) or `sample` (1 % sample, needs Enterprise access)."
    )
    rules: list[XRule] = Field(default_factory=list, max_length=MAX_RULES, description="Filtered-stream rules `{value, tag}`.")
    bearer_token: SecretStr | None = Field(default=None, description="App bearer token; default: $X_BEARER_TOKEN.")
    consumer_key: SecretStr | None = Field(default=None, description="App key, exchanged with the secret for a token.")
    consumer_secret: SecretStr | None = Field(default=None, description="App secret (with consumer_key).")
    tweet_fields: list[str] = Field(default_factory=lambda: list(DEFAULT_TWEET_FIELDS), description="`tweet.fields`.")
    expansions: list[str] = Field(default_factory=lambda: list(DEFAULT_EXPANSIONS), description="`expansions`.")
    user_fields: list[str] = Field(default_factory=lambda: list(DEFAULT_USER_FIELDS), description="`user.fields`.")
    backfill_minutes: int = Field(default=0, ge=0, le=5, description="Enterprise: re-deliver up to 5 minutes after a reconnect.")
    spool: SpoolSettings = Field(default_factory=SpoolSettings, description="The durable spool (X cannot replay a stream).")
    api_url: str = Field(default=DEFAULT_API_URL, pattern=r"^https?://\S+$", description="Base URL of the X API.")
    stall_timeout: float = Field(default=DEFAULT_STALL_TIMEOUT_S, gt=0, le=300, description="Seconds without a byte = stall.")
    connect_timeout: float = Field(default=5.0, gt=0, le=120, description="Seconds to connect.")
    request_timeout: float = Field(default=10.0, gt=0, le=120, description="Seconds per rules / token request.")
    clear_stale_connections: bool = Field(default=False, description="DELETE /2/connections/all at start.")
    max_line_bytes: int = Field(
        default=DEFAULT_MAX_LINE_BYTES, gt=0, le=10 * 1024 * 1024, description="Longer lines are rejected."
    )

    @model_validator(mode="before")
    @classmethod
    def _token_from_environment(cls, data: Any) -> Any:
        # Read when the config is built (not as a default argument): an unset key means $X_BEARER_TOKEN.
        if isinstance(data, dict) and not data.get("bearer_token") and not data.get("consumer_key"):
            token = os.environ.get(TOKEN_ENV, "") or _credential(TOKEN_CREDENTIAL)
            if token:
                return {**data, "bearer_token": token}
        return data

    @model_validator(mode="after")
    def _credentials(self) -> XSourceConfig:
        app = (self.consumer_key is not None, self.consumer_secret is not None)
        if app[0] != app[1]:
            raise ValueError("consumer_key and consumer_secret go together")
        if self.bearer_token is None and not all(app):
            raise ValueError(f"no credentials: set {TOKEN_ENV} (bearer_token: ${{{TOKEN_ENV}}}) or consumer_key/consumer_secret")
        if self.bearer_token is not None and all(app):
            raise ValueError("give either bearer_token or consumer_key/consumer_secret, not both")
        if self.stream == "sample" and self.rules:
            raise ValueError("rules apply to the filtered stream only")
        values = [rule.value for rule in self.rules]
        duplicates = sorted({v for v in values if values.count(v) > 1})
        if duplicates:
            raise ValueError(f"rules: each value once (X refuses duplicates): {duplicates}")
        return self


def _credential(name: str) -> str:
    """A systemd credential (`LoadCredential=NAME:/path` in the unit): `$CREDENTIALS_DIRECTORY/NAME`, stripped;
    empty when there is none."""
    directory = os.environ.get(CREDENTIALS_DIRECTORY_ENV)
    if not directory:
        return ""
    try:
        return (Path(directory) / name).read_text(encoding="utf-8").strip()
    except OSError:
        return ""


class _Schedules:
    """X's four schedules plus the one immediate retry a connection that worked earns."""

    def __init__(self) -> None:
        self.by_kind: dict[str, Backoff] = {
            KIND_NETWORK: linear(NETWORK_STEP_S, NETWORK_MAX_S),
            KIND_HTTP: exponential(HTTP_INITIAL_S, HTTP_MAX_S),
            KIND_RATE_LIMITED: exponential(RATE_LIMIT_INITIAL_S, RATE_LIMIT_MAX_S),
            KIND_AUTH: exponential(AUTH_INITIAL_S, AUTH_MAX_S),
        }
        self.immediate = False

    def worked(self) -> None:
        for schedule in self.by_kind.values():
            schedule.reset()
        self.immediate = True

    def delay(self, kind: str, dropped: bool) -> float:
        if dropped and self.immediate:
            self.immediate = False
            return 0.0
        self.immediate = False
        return self.by_kind[kind].next()


def _close(value: object) -> None:
    close = getattr(value, "close", None)
    if callable(close):
        close()


def _interruptible(ctx: SourceContext, call: Callable[[], T], on_abandon: Callable[[T], None] | None = None) -> T:
    """`call()` in a thread of its own, waited for in slices: a stop is noticed within STOP_POLL_S even while a
    connect, a header read or a rules request blocks for its timeout. Raises `_Stopped` then; the abandoned
    call ends by its own timeout, and `on_abandon` disposes of a result that arrives after all."""
    done = threading.Event()
    outcome: list[tuple[bool, Any]] = []
    abandoned = threading.Event()

    def work() -> None:
        try:
            outcome.append((True, call()))
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread, which raises it
            outcome.append((False, exc))
        finally:
            done.set()
            if abandoned.is_set() and outcome and outcome[0][0] and on_abandon is not None:
                on_abandon(outcome[0][1])

    threading.Thread(target=work, name="x-request", daemon=True).start()
    while not done.wait(STOP_POLL_S):
        if ctx.stopping:
            abandoned.set()
            if done.is_set() and outcome and outcome[0][0] and on_abandon is not None:
                on_abandon(outcome[0][1])  # it finished just now: `work` may have missed the flag
            raise _Stopped
    ok, value = outcome[0]
    if not ok:
        raise value
    result: T = value
    return result


def _kind_label(text: object) -> str:
    return _KIND_NAME.sub("_", str(text))[:_MAX_KIND_CHARS] or "unknown"


class _Stopped(Exception):
    """The daemon stopped while a request was still waiting for its answer."""


class _Dropped(Exception):
    """An established connection ended: `kind` picks the schedule once the immediate retry is used."""

    def __init__(self, reason: str, detail: str, kind: str = KIND_NETWORK, at_once: bool = True) -> None:
        super().__init__(detail)
        self.reason, self.detail, self.kind, self.at_once = reason, detail, kind, at_once


@register_source
class XSource(Source):
    config_model = XSourceConfig
    config: XSourceConfig

    def __init__(self, config: XSourceConfig, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(config)
        self._clock = clock
        self._origin = f"x:{config.stream}"
        self._connected = False

    def _secrets(self) -> list[str]:
        c = self.config
        return [s.get_secret_value() for s in (c.bearer_token, c.consumer_key, c.consumer_secret) if s is not None]

    def run(self, ctx: SourceContext) -> None:
        c = self.config
        scrub = Scrubber(*self._secrets())
        client = XClient(c.api_url, c.connect_timeout, c.request_timeout, c.stall_timeout + _READ_TIMEOUT_MARGIN_S, scrub)
        schedules = _Schedules()
        ready = False
        while not ctx.stopping:
            try:
                if not ready:
                    self._start(client, ctx)
                    ready = True
                self._connect(client, ctx, schedules)
                return  # stopping
            except _Stopped:
                return
            except RuleRejected as exc:
                detail = scrub(f"source {ctx.name}: {exc}")
                ctx.protocol_message("rule_rejected", detail)
                ctx.connection(False, f"not started: {detail}; fix the rule in the config and restart")
                return
            except XFailure as exc:
                self._disconnected(ctx, exc.detail)
                delay = schedules.delay(exc.kind, dropped=False)
                ctx.reconnecting(exc.reason, delay, exc.detail)
            except _Dropped as exc:
                self._disconnected(ctx, exc.detail)
                delay = schedules.delay(exc.kind, dropped=exc.at_once)
                ctx.reconnecting(exc.reason, delay, exc.detail)
            if ctx.wait(delay):
                return

    def _disconnected(self, ctx: SourceContext, detail: str) -> None:
        # Only the change is reported (logged unthrottled); each failed attempt is counted by `reconnecting`.
        if self._connected:
            self._connected = False
            ctx.connection(False, detail)

    def _start(self, client: XClient, ctx: SourceContext) -> None:
        c = self.config
        if c.bearer_token is not None:
            token = c.bearer_token.get_secret_value()
        else:
            assert c.consumer_key is not None and c.consumer_secret is not None
            key, secret = c.consumer_key.get_secret_value(), c.consumer_secret.get_secret_value()
            token = _interruptible(ctx, lambda: client.exchange_token(key, secret))
        client.use_token(token)
        if c.clear_stale_connections:
            _interruptible(ctx, client.clear_connections)
            ctx.protocol_message("connections_cleared", "DELETE /2/connections/all")
        if c.stream == "filtered":
            wanted = [(rule.value, rule.tag or None) for rule in c.rules]
            sync = _interruptible(ctx, lambda: client.sync_rules(wanted))
            ctx.protocol_message(
                "rules_synchronised", f"added {len(sync.added)}, deleted {len(sync.deleted)}, kept {len(sync.kept)}"
            )
            if not c.rules:
                ctx.protocol_message("no_rules", "the filtered stream has no rules: it delivers nothing")

    def _params(self) -> dict[str, str]:
        c = self.config
        params = {
            "tweet.fields": ",".join(c.tweet_fields),
            "expansions": ",".join(c.expansions),
            "user.fields": ",".join(c.user_fields),
        }
        params = {k: v for k, v in params.items() if v}
        if c.backfill_minutes:
            params["backfill_minutes"] = str(c.backfill_minutes)
        return params

    def _connect(self, client: XClient, ctx: SourceContext, schedules: _Schedules) -> None:
        """One connection, until stop (returns) or its end (raises `_Dropped` / `XFailure`)."""
        resource = FILTERED_STREAM if self.config.stream == "filtered" else SAMPLE_STREAM
        params = self._params()
        response = _interruptible(ctx, lambda: client.open_stream(resource, params), on_abandon=_close)
        reader = StreamReader(response).start()
        ctx.connection(True, f"{self.config.api_url} {resource}")
        self._connected = True
        try:
            self._read(reader, ctx, schedules, client.scrub)
        finally:
            reader.close()

    def _read(self, reader: StreamReader, ctx: SourceContext, schedules: _Schedules, scrub: Scrubber) -> None:
        splitter = LineSplitter(self.config.max_line_bytes)
        stall_s = self.config.stall_timeout
        poll_s = min(STOP_POLL_S, stall_s / 20)
        last_byte_at = self._clock()
        try:
            while not ctx.stopping:
                item = reader.get(poll_s)
                if item is None:
                    if self._clock() - last_byte_at >= stall_s:
                        raise _Dropped("stall", f"no data (not even a keep-alive) for {stall_s:g} s")
                    continue
                if isinstance(item, StreamEnd):
                    if item.error is None:
                        raise _Dropped("closed", "the server closed the stream")
                    raise _Dropped("network", scrub(f"read failed: {type(item.error).__name__}: {item.error}"))
                received = splitter.feed(item)
                for n, (line, truncated) in enumerate(received):
                    if not self._line(line, truncated, ctx, schedules):
                        self._reject_unsent(received[n + 1 :], ctx)
                        return
                last_byte_at = self._clock()  # after the emits: time blocked on a full buffer is not silence
        finally:
            # However the connection ends, a line it cut short is accounted for, not dropped.
            partial = splitter.partial()
            if partial.strip(b"\r"):
                ctx.reject(partial, self._origin, REASON_TRUNCATED, "the connection ended in the middle of this line")

    def _reject_unsent(self, lines: list[tuple[bytes, bool]], ctx: SourceContext) -> None:
        """Lines already received when the daemon stopped: into the dead-letter file, as X sends nothing twice."""
        for line, _ in lines:
            if line:
                ctx.reject(line, self._origin, REASON_UNSENT, "received from X while the daemon was stopping")

    def _line(self, line: bytes, truncated: bool, ctx: SourceContext, schedules: _Schedules) -> bool:
        """Hands one line over; False when the daemon is stopping. Raises `_Dropped` on an in-band disconnect."""
        if not line and not truncated:
            return True  # keep-alive
        parsed = parse_json_record(line, self.config.max_line_bytes, truncated=truncated)
        if isinstance(parsed, Rejection):
            ctx.reject(line, self._origin, parsed.reason, parsed.detail)
            return True
        if not isinstance(parsed, dict):
            ctx.reject(line, self._origin, REASON_NOT_AN_OBJECT, f"a JSON {type(parsed).__name__}, not an object")
            return True
        if "data" in parsed:
            schedules.worked()
            return ctx.emit(line, parsed, self._origin)
        errors = parsed.get("errors")
        if isinstance(errors, list) and errors:
            self._in_band(errors, ctx)
            return True
        ctx.protocol_message("unknown_message", f"a stream line without data or errors: keys {sorted(parsed)[:10]}")
        return True

    def _in_band(self, errors: list[Any], ctx: SourceContext) -> None:
        first = errors[0] if isinstance(errors[0], dict) else {}
        disconnect = first.get("disconnect_type")
        issue = first.get("connection_issue")
        detail = "; ".join(str(first[k]) for k in ("title", "disconnect_type", "connection_issue", "detail") if first.get(k))
        kind = _kind_label(disconnect or issue or first.get("title") or "error")
        ctx.protocol_message(kind, detail or "an in-band error")
        if issue:
            # TooManyConnections: another client holds the stream; the HTTP schedule, never at once.
            raise _Dropped(
                "too_many_connections" if issue == "TooManyConnections" else "connection_issue", detail, KIND_HTTP, at_once=False
            )
        if disconnect or "operational-disconnect" in str(first.get("type", "")):
            raise _Dropped("in_band_disconnect", detail)
