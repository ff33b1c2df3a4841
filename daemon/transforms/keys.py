"""The key `redact` hashes with (HMAC-SHA256): never in config.yaml, never logged or counted.

Found like the X source's bearer token: the environment variable first ($TWEET_PRODUCER_REDACT_KEY, or the
one `key_env` names), then `key_file` when configured, then the systemd credential
`$CREDENTIALS_DIRECTORY/<key_credential>` (`LoadCredential=redact-key:/etc/tweet-producer/redact-key`). A file
must be readable by its owner alone (mode 0600 or 0400): a key others can read is no secret. Surrounding
whitespace is stripped (a trailing newline from `echo` must not change every hash).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path

DEFAULT_KEY_ENV = "TWEET_PRODUCER_REDACT_KEY"
DEFAULT_KEY_CREDENTIAL = "redact-key"
CREDENTIALS_DIRECTORY_ENV = "CREDENTIALS_DIRECTORY"
# A short key makes the hashes guessable by trying keys; 16 bytes is HMAC's usual floor (RFC 2104 section 3).
MIN_KEY_BYTES = 16
# Permission bits that let anyone but the owner at the file.
_NOT_OWNER_BITS = stat.S_IRWXG | stat.S_IRWXO


class KeyUnavailable(Exception):
    """No usable hash key; the message says where it was looked for (never what it holds)."""


def load_key(key_env: str, key_file: Path | None, key_credential: str, environ: Mapping[str, str] | None = None) -> bytes:
    """The hash key as bytes; raises KeyUnavailable naming the places looked at."""
    env = os.environ if environ is None else environ
    text = env.get(key_env, "").strip()
    where = f"${key_env}"
    if not text and key_file is not None:
        text, where = _read_private(key_file), str(key_file)
    if not text:
        directory = env.get(CREDENTIALS_DIRECTORY_ENV)
        if directory:
            credential = Path(directory) / key_credential
            if credential.exists():
                text, where = _read_private(credential), str(credential)
    if not text:
        places = [f"${key_env}"] + ([f"key_file {key_file}"] if key_file is not None else [])
        places.append(f"the systemd credential {key_credential} ($CREDENTIALS_DIRECTORY)")
        raise KeyUnavailable(f"no hash key: set {', '.join(places[:-1])} or {places[-1]}")
    key = text.encode("utf-8")
    if len(key) < MIN_KEY_BYTES:
        raise KeyUnavailable(f"the hash key from {where} is {len(key)} bytes; at least {MIN_KEY_BYTES} are needed")
    return key


def _read_private(path: Path) -> str:
    try:
        mode = path.stat().st_mode
        if mode & _NOT_OWNER_BITS:
            raise KeyUnavailable(
                f"{path} is mode {stat.S_IMODE(mode):04o}; a key file must be readable by its owner alone (chmod 600)"
            )
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise KeyUnavailable(f"cannot read the hash key file {path}: {exc.strerror or type(exc).__name__}") from None
    except UnicodeDecodeError:
        raise KeyUnavailable(f"the hash key file {path} is not UTF-8 text") from None
