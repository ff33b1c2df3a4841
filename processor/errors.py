"""The processor's exceptions and the reasons it gives for records it cannot store."""

from __future__ import annotations

# Reasons a record is dead-lettered (permanent: retrying cannot help). They name metrics and DLQ entries.
INVALID_BASE64 = "invalid_base64"
INVALID_AGGREGATE = "invalid_aggregate"
INVALID_UTF8 = "invalid_utf8"
INVALID_JSON = "invalid_json"
UNMAPPABLE = "unmappable"
INVALID_TEXT = "invalid_text"
KEY_TOO_LARGE = "key_too_large"
ITEM_TOO_LARGE = "item_too_large"
REJECTED_BY_TABLE = "rejected_by_table"
# An unexpected error while decoding or mapping one payload. It would recur on every retry and stall the
# shard, so the payload is dead-lettered (replayable once the bug is fixed) and the error logged in full.
PROCESSING_ERROR = "processing_error"


class PermanentFailure(Exception):
    """A record that can never be stored as it is; it goes to the dead-letter destination.

    The detail may quote payload text; lone surrogates in it are escaped (`\\ud800`) so that logs and
    dead-letter destinations can always encode it.
    """

    def __init__(self, reason: str, detail: str) -> None:
        detail = detail.encode("utf-8", "backslashreplace").decode("utf-8")
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class DeadLetterUnavailable(Exception):
    """The dead-letter destination refused an entry: the record must be retried, never dropped."""


class ConfigurationError(Exception):
    """The function's environment is wrong; the message names the variable and what it must hold."""
