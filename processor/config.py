"""The processor's settings, read from its environment at the start of each invocation.

Variables (the first four are set by the CDK stack; the embedded stack passes the same mapping to
`from_environ(mapping)` rather than through its environment; their names duplicate infra/settings.py's
ENV_* constants because this package deploys without infra/, and a test keeps the two in step):

    TABLE_NAME              required: the DynamoDB table to write
    DEAD_LETTER_QUEUE_URL   optional: SQS queue for records that can never be stored
    TTL_ATTRIBUTE           the table's TTL attribute name (default "ExpiresAt")
    TTL_DAYS                days an item lives after its record reached the stream; 0 = forever (default)
    DEAD_LETTER_FILE        optional, used only without a queue: append dead letters to this JSON-lines file
    GENERIC_*_PATH          key paths of the generic mapping (processor/mappings/generic.py)

Without a queue or a file, dead letters are logged at ERROR level (and counted): never dropped silently.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from processor.errors import ConfigurationError
from processor.mappings import GenericPaths

ENV_TABLE_NAME = "TABLE_NAME"
ENV_DEAD_LETTER_QUEUE_URL = "DEAD_LETTER_QUEUE_URL"
ENV_TTL_ATTRIBUTE = "TTL_ATTRIBUTE"
ENV_TTL_DAYS = "TTL_DAYS"
ENV_DEAD_LETTER_FILE = "DEAD_LETTER_FILE"

DEFAULT_TTL_ATTRIBUTE = "ExpiresAt"
# DynamoDB TTL ignores items whose timestamp is more than five years in the past; keep days sane.
MAX_TTL_DAYS = 36_500


@dataclass(frozen=True)
class ProcessorSettings:
    table_name: str
    dead_letter_queue_url: str | None = None
    dead_letter_file: str | None = None
    ttl_attribute: str = DEFAULT_TTL_ATTRIBUTE
    ttl_days: int = 0
    generic: GenericPaths = field(default_factory=GenericPaths)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> ProcessorSettings:
        """Read the variables above from `environ` (default: this process's environment, as in Lambda)."""
        env = os.environ if environ is None else environ
        table = env.get(ENV_TABLE_NAME, "").strip()
        if not table:
            raise ConfigurationError(f"{ENV_TABLE_NAME} is not set: the processor needs the name of the table to write")
        raw_days = env.get(ENV_TTL_DAYS, "0").strip() or "0"
        try:
            ttl_days = int(raw_days)
        except ValueError:
            raise ConfigurationError(f"{ENV_TTL_DAYS}={raw_days!r} must be a whole number of days (0 = no expiry)") from None
        if not 0 <= ttl_days <= MAX_TTL_DAYS:
            raise ConfigurationError(f"{ENV_TTL_DAYS}={ttl_days} must be between 0 and {MAX_TTL_DAYS}")
        ttl_attribute = env.get(ENV_TTL_ATTRIBUTE, "").strip() or DEFAULT_TTL_ATTRIBUTE
        return cls(
            table_name=table,
            dead_letter_queue_url=env.get(ENV_DEAD_LETTER_QUEUE_URL, "").strip() or None,
            dead_letter_file=env.get(ENV_DEAD_LETTER_FILE, "").strip() or None,
            ttl_attribute=ttl_attribute,
            ttl_days=ttl_days,
            generic=GenericPaths.from_environ(env),
        )
