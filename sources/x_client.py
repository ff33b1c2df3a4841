"""Source `x`, the HTTP side: a TwitterAPI client pointed at `api_url`, the token exchange, rule sync, Connections API.

Every call goes through TwitterAPI 2.8.2 (auth header, URL building, requests with proxies from the
environment). Two things it lacks are added here: a base URL (it builds `https://api.twitter.com/2/...` from
module constants, so `_prepare_url` is overridden) and a query string on a POST whose params it sends as the
JSON body (rules `dry_run=true`: `_get_endpoint` keeps the query on the path). Failures become `XFailure`
values naming a class (network / HTTP / rate limit / auth) that the source maps onto X's reconnect rules.
"""

from __future__ import annotations

import base64
import logging
import os
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import requests
from TwitterAPI import TwitterAPI, TwitterConnectionError
from TwitterAPI.constants import ENDPOINTS

# X's Connections API (not in TwitterAPI's table, which predates it): clears a connection a crashed run left
# open, which would otherwise answer the next connect with TooManyConnections.
CONNECTIONS_ALL = "connections/all"
ENDPOINTS.setdefault(CONNECTIONS_ALL, ("DELETE", "api"))


class _DropTwitterApiErrorLogs(logging.Filter):
    """TwitterAPI logs every connection error on the root logger, unthrottled, from its exception constructors;
    the source reports each failure itself (counted, rate-limited), so those duplicate lines are dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return f"{os.sep}TwitterAPI{os.sep}" not in record.pathname


if not any(isinstance(f, _DropTwitterApiErrorLogs) for f in logging.getLogger().filters):
    logging.getLogger().addFilter(_DropTwitterApiErrorLogs())

RULES = "tweets/search/stream/rules"
FILTERED_STREAM = "tweets/search/stream"
SAMPLE_STREAM = "tweets/sample/stream"
TOKEN_PATH = "oauth2/token"  # noqa: S105 - a URL path
# Error bodies are quoted in logs; X's are a few hundred bytes.
MAX_ERROR_DETAIL_CHARS = 300

KIND_NETWORK = "network"
KIND_HTTP = "http"
KIND_RATE_LIMITED = "rate_limited"
KIND_AUTH = "auth"
_AUTH_STATUSES = {
    401: "the token was refused (401 Unauthorized): check X_BEARER_TOKEN / the app key and secret",
    403: "access refused (403 Forbidden): the app's X access level does not include this stream",
}


def user_agent() -> str:
    """`tweet-producer/<version>`: X asks clients to name themselves with a versioned User-Agent."""
    try:
        version = metadata.version("tweet-producer")
    except metadata.PackageNotFoundError:
        version = "0"
    return f"tweet-producer/{version}"


@dataclass(eq=False)
class XFailure(Exception):
    """A call failed: `kind` picks the backoff schedule, `reason` labels the reconnect metric."""

    kind: str
    reason: str
    detail: str

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"


class Scrubber:
    """Removes the secrets from any text that may reach a log, a metric or an error (exception texts, bodies)."""

    def __init__(self, *secrets: str) -> None:
        self._secrets = [s for s in secrets if s]

    def add(self, secret: str) -> None:
        if secret:
            self._secrets.append(secret)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text[:MAX_ERROR_DETAIL_CHARS]


class _XApi(TwitterAPI):  # type: ignore[misc]  # TwitterAPI ships no type hints
    """TwitterAPI with a base URL of our choosing and a User-Agent of ours."""

    USER_AGENT = user_agent()

    def __init__(self, base_url: str, token: str, connect_timeout_s: float, rest_timeout_s: float, read_timeout_s: float) -> None:
        # oAuth2User only stores the token (oAuth2 would fetch one over the network right here).
        super().__init__(auth_type="oAuth2User", oauth2_access_token=token, api_version="2")
        self._base_url = base_url.rstrip("/")
        # Instance attributes shadow TwitterAPI's class-wide timeouts (read by `request` through self).
        self.CONNECTION_TIMEOUT = connect_timeout_s
        self.REST_TIMEOUT = rest_timeout_s
        self.STREAMING_TIMEOUT = read_timeout_s

    def _prepare_url(self, subdomain: str, path: str) -> str:
        return f"{self._base_url}/2/{path}"

    def _get_endpoint(self, resource: str) -> tuple[str, str]:
        # "rules?dry_run=true": the query stays on the URL, the table lookup uses the bare path.
        path = resource.partition("?")[0]
        return resource, path


def _body_detail(response: requests.Response, scrub: Scrubber) -> str:
    try:
        body = response.json()
    except ValueError:
        return scrub(response.text.strip() or response.reason or "")
    if isinstance(body, dict):
        errors = body.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            first = errors[0]
            return scrub("; ".join(str(first[k]) for k in ("title", "message", "detail") if first.get(k)))
        parts = [str(body[k]) for k in ("title", "detail", "error") if body.get(k)]
        if parts:
            return scrub("; ".join(parts))
    return scrub(str(body))


def http_failure(response: requests.Response, scrub: Scrubber, what: str) -> XFailure:
    """The failure a non-2xx answer means, classified by status as X's reconnect rules do."""
    status = response.status_code
    detail = f"{what}: HTTP {status}: {_body_detail(response, scrub)}"
    if status in _AUTH_STATUSES:
        return XFailure(KIND_AUTH, f"http_{status}", f"{_AUTH_STATUSES[status]}; {detail}")
    if status == 429:
        return XFailure(KIND_RATE_LIMITED, "http_429", detail)
    return XFailure(KIND_HTTP, f"http_{status}", detail)


def network_failure(exc: BaseException, scrub: Scrubber, what: str) -> XFailure:
    return XFailure(KIND_NETWORK, "network", scrub(f"{what}: {type(exc).__name__}: {exc}"))


@dataclass(eq=False)
class RuleRejected(Exception):
    """X refused a configured rule (dry run): a config error, not a reason to reconnect."""

    index: int
    value: str
    reason: str

    def __str__(self) -> str:
        return f"rules[{self.index}] (value {self.value!r}): rejected by X: {self.reason}"


@dataclass(frozen=True)
class RuleSync:
    """What synchronising did: rules added, deleted and kept (by value)."""

    added: list[str]
    deleted: list[str]
    kept: list[str]


class XClient:
    """The calls the source makes, each returning its result or raising `XFailure` / `RuleRejected`."""

    def __init__(
        self, base_url: str, connect_timeout_s: float, rest_timeout_s: float, read_timeout_s: float, scrub: Scrubber
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.connect_timeout_s = connect_timeout_s
        self.rest_timeout_s = rest_timeout_s
        self.read_timeout_s = read_timeout_s
        self.scrub = scrub
        self._api: _XApi | None = None

    def exchange_token(self, key: str, secret: str) -> str:
        """App key + secret -> an app-only bearer token (OAuth 2 client credentials), with our timeouts."""
        credentials = base64.b64encode(f"{key}:{secret}".encode()).decode("ascii")
        self.scrub.add(credentials)
        try:
            response = requests.post(
                f"{self.base_url}/{TOKEN_PATH}",
                data={"grant_type": "client_credentials"},
                headers={"Authorization": f"Basic {credentials}", "User-Agent": user_agent()},
                timeout=(self.connect_timeout_s, self.rest_timeout_s),
            )
        except requests.RequestException as exc:
            raise network_failure(exc, self.scrub, "token exchange") from None
        if response.status_code != 200:
            raise http_failure(response, self.scrub, "token exchange")
        try:
            token = response.json()["access_token"]
        except (ValueError, KeyError, TypeError):
            raise XFailure(KIND_HTTP, "bad_response", "token exchange: the answer holds no access_token") from None
        if not isinstance(token, str) or not token:
            raise XFailure(KIND_HTTP, "bad_response", "token exchange: the answer holds no access_token")
        self.scrub.add(token)
        return token

    def use_token(self, token: str) -> None:
        self.scrub.add(token)
        self._api = _XApi(self.base_url, token, self.connect_timeout_s, self.rest_timeout_s, self.read_timeout_s)

    def _request(
        self, what: str, resource: str, params: dict[str, Any] | None = None, method: str | None = None
    ) -> requests.Response:
        assert self._api is not None, "use_token first"
        try:
            answer = self._api.request(resource, params, method_override=method)
        except TwitterConnectionError as exc:
            raise network_failure(exc, self.scrub, what) from None
        response: requests.Response = answer.response
        return response

    def _json(
        self, what: str, resource: str, params: dict[str, Any] | None = None, method: str | None = None, refusals: bool = False
    ) -> tuple[int, Any]:
        """Status and JSON body of a 2xx answer (with `refusals`, also of a 400/422 naming what was refused)."""
        response = self._request(what, resource, params, method)
        if response.status_code // 100 != 2 and not (refusals and response.status_code in (400, 422)):
            raise http_failure(response, self.scrub, what)
        try:
            return response.status_code, response.json()
        except ValueError:
            if response.status_code // 100 != 2:
                raise http_failure(response, self.scrub, what) from None
            raise XFailure(KIND_HTTP, "bad_response", f"{what}: the answer is not JSON") from None

    def clear_connections(self) -> None:
        """DELETE /2/connections/all (X's Connections API)."""
        response = self._request("clear stale connections", CONNECTIONS_ALL)
        if response.status_code // 100 != 2:
            raise http_failure(response, self.scrub, "clear stale connections")

    def sync_rules(self, wanted: list[tuple[str, str | None]]) -> RuleSync:
        """Make the server's rules exactly `wanted` ((value, tag) pairs): validate new ones with a dry run first,
        then delete stale ones and add the missing ones. Nothing changes on the server when a rule is rejected."""
        _, listing = self._json("list rules", RULES, method="GET")
        current = listing.get("data") if isinstance(listing, dict) else None
        existing: dict[tuple[str, str | None], str] = {}
        stale: list[tuple[str, str]] = []
        for rule in current if isinstance(current, list) else []:
            if not isinstance(rule, dict) or not isinstance(rule.get("id"), str):
                continue
            key = (str(rule.get("value", "")), rule.get("tag") or None)
            if key in wanted and key not in existing:
                existing[key] = rule["id"]
            else:
                stale.append((rule["id"], key[0]))
        missing = [(i, key) for i, key in enumerate(wanted) if key not in existing]
        # X refuses a value it already holds (DuplicateRule), so a rule whose tag alone changed cannot be
        # dry-run before its old version is deleted; its value was accepted before, so only new values are.
        stale_values = {value for _, value in stale}
        new_values = [(i, key) for i, key in missing if key[0] not in stale_values]
        if new_values:
            self._add([key for _, key in new_values], [i for i, _ in new_values], dry_run=True)
        if stale:
            self._json("delete rules", RULES, {"delete": {"ids": [rule_id for rule_id, _ in stale]}})
        if missing:
            self._add([key for _, key in missing], [i for i, _ in missing], dry_run=False)
        return RuleSync(added=[k[0] for _, k in missing], deleted=[v for _, v in stale], kept=[k[0] for k in existing])

    def _add(self, rules: list[tuple[str, str | None]], indexes: list[int], dry_run: bool) -> None:
        body = {"add": [{"value": value, **({"tag": tag} if tag else {})} for value, tag in rules]}
        resource = f"{RULES}?dry_run=true" if dry_run else RULES
        status, answer = self._json("validate rules" if dry_run else "add rules", resource, body, refusals=True)
        errors = answer.get("errors") if isinstance(answer, dict) else None
        for error in errors if isinstance(errors, list) else []:
            if not isinstance(error, dict):
                continue
            value = error.get("value")
            for index, (wanted_value, _) in zip(indexes, rules, strict=True):
                if value == wanted_value:
                    raise RuleRejected(index, wanted_value, self._error_text(error))
        if status // 100 != 2:
            # A refusal that names no rule (a malformed request, too many rules): report it on the first one.
            raise RuleRejected(indexes[0], rules[0][0], self._errors_text(answer))

    def _error_text(self, error: dict[str, Any]) -> str:
        details = error.get("details")
        parts = [str(error.get("title") or "rejected")]
        if isinstance(details, list) and details:
            parts.append("; ".join(str(d) for d in details))
        elif error.get("detail") or error.get("message"):
            parts.append(str(error.get("detail") or error.get("message")))
        return self.scrub(": ".join(parts))

    def _errors_text(self, answer: Any) -> str:
        errors = answer.get("errors") if isinstance(answer, dict) else None
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            return self._error_text(errors[0])
        return self.scrub(str(answer))

    def open_stream(self, resource: str, params: dict[str, str]) -> requests.Response:
        """The stream's response, status 200, headers read and body not yet; else raises `XFailure`."""
        response = self._request("connect", resource, params)
        if response.status_code != 200:
            try:
                raise http_failure(response, self.scrub, "connect")
            finally:
                response.close()
        return response
