"""Signature Version 4 checking for tests/fake_kinesis.py (``FakeKinesis(credentials={key: secret})``).

Written from the published algorithm, not from botocore, so a request signed by hand (the wire client) is
checked by an independent implementation: canonical request -> string to sign -> HMAC chain -> compare.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from urllib.parse import quote

from tests.fake_kinesis_types import KinesisError

ALGORITHM = "AWS4-HMAC-SHA256"
SERVICE = "kinesis"
# AWS refuses a request whose X-Amz-Date is further than this from its clock.
MAX_CLOCK_SKEW_S = 5 * 60
_AMZ_DATE_FORMAT = "%Y%m%dT%H%M%SZ"
_AUTHORIZATION = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key>[^/,\s]+)/(?P<date>\d{8})/(?P<region>[^/]+)/(?P<service>[^/]+)/aws4_request,"
    r"\s*SignedHeaders=(?P<headers>[a-z0-9;-]+),\s*Signature=(?P<signature>[0-9a-f]{64})"
)
_SPACES = re.compile(r"\s+")


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).digest()


def _canonical_query(query: str) -> str:
    pairs = sorted(tuple(part.split("=", 1)) if "=" in part else (part, "") for part in query.split("&") if part)
    return "&".join(f"{name}={value}" for name, value in pairs)


def signature_of(secret: str, *, method: str, path: str, query: str, headers: Mapping[str, str], signed: list[str],
                 body: bytes, amz_date: str, region: str, service: str = SERVICE) -> str:
    """The hex SigV4 signature of a request: ``headers`` keyed by lower-case name, ``signed`` in order."""
    canonical_headers = "".join(f"{name}:{_SPACES.sub(' ', headers.get(name, '').strip())}\n" for name in signed)
    payload_hash = headers.get("x-amz-content-sha256") or hashlib.sha256(body).hexdigest()
    canonical = "\n".join([method, quote(path or "/", safe="/~"), _canonical_query(query), canonical_headers,
                           ";".join(signed), payload_hash])
    scope = f"{amz_date[:8]}/{region}/{service}/aws4_request"
    to_sign = "\n".join([ALGORITHM, amz_date, scope, hashlib.sha256(canonical.encode("utf-8")).hexdigest()])
    key = _hmac(_hmac(_hmac(_hmac(f"AWS4{secret}".encode(), amz_date[:8]), region), service), "aws4_request")
    return hmac.new(key, to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


def check_signature(credentials: Mapping[str, str], region: str, *, method: str, target_path: str,
                    headers: Mapping[str, str], body: bytes, now: float | None = None) -> None:
    """Raises the KinesisError AWS would answer unless the request is signed by one of ``credentials``
    (access key id -> secret) for ``region`` and this service, within the allowed clock skew."""
    authorization = headers.get("authorization")
    if not authorization:
        raise KinesisError("MissingAuthenticationTokenException", "Missing Authentication Token")
    match = _AUTHORIZATION.fullmatch(authorization.strip())
    if match is None:
        raise KinesisError("IncompleteSignatureException", f"Authorization header is not SigV4: {authorization[:80]!r}")
    secret = credentials.get(match["key"])
    if secret is None:
        raise KinesisError("UnrecognizedClientException", "The security token included in the request is invalid.")
    if match["region"] != region or match["service"] != SERVICE:
        raise KinesisError("InvalidSignatureException",
                           f"Credential should be scoped to region {region!r} and service {SERVICE!r}.")
    amz_date = headers.get("x-amz-date", "")
    try:
        signed_at = datetime.strptime(amz_date, _AMZ_DATE_FORMAT).replace(tzinfo=UTC).timestamp()
    except ValueError:
        raise KinesisError("IncompleteSignatureException", f"X-Amz-Date {amz_date!r} is not a SigV4 date") from None
    if amz_date[:8] != match["date"]:
        raise KinesisError("InvalidSignatureException", "The credential date does not match X-Amz-Date.")
    if abs((time.time() if now is None else now) - signed_at) > MAX_CLOCK_SKEW_S:
        raise KinesisError("InvalidSignatureException", f"Signature expired: {amz_date} is too far from now.")
    signed = match["headers"].split(";")
    if "host" not in signed:
        raise KinesisError("InvalidSignatureException", "The host header must be signed.")
    path, _, query = target_path.partition("?")
    expected = signature_of(secret, method=method, path=path, query=query, headers=headers, signed=signed, body=body,
                            amz_date=amz_date, region=match["region"], service=match["service"])
    if not hmac.compare_digest(expected, match["signature"]):
        raise KinesisError("InvalidSignatureException",
                           "The request signature we calculated does not match the signature you provided.")
