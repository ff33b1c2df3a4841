"""The redact hash key: from the environment, a 0600 file or a systemd credential; never from looser files."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.transforms.keys import DEFAULT_KEY_CREDENTIAL, DEFAULT_KEY_ENV, MIN_KEY_BYTES, KeyUnavailable, load_key

SECRET = "s3cret-key-for-the-hashes"  # noqa: S105 - a test key, hashed nothing real


def private(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return path


def test_the_environment_variable_wins() -> None:
    """$TWEET_PRODUCER_REDACT_KEY, stripped, is the key even when a file is configured."""
    env = {DEFAULT_KEY_ENV: SECRET + "\n"}
    assert load_key(DEFAULT_KEY_ENV, Path("/nonexistent"), DEFAULT_KEY_CREDENTIAL, env) == SECRET.encode()


def test_a_private_key_file_is_read(tmp_path: Path) -> None:
    """Without the variable, key_file (mode 0600) gives the key, its trailing newline stripped."""
    key_file = private(tmp_path / "key", SECRET + "\n")
    assert load_key(DEFAULT_KEY_ENV, key_file, DEFAULT_KEY_CREDENTIAL, {}) == SECRET.encode()


def test_a_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    """A key file readable by group or others is refused, and the message never shows the key."""
    key_file = private(tmp_path / "key", SECRET, 0o644)
    with pytest.raises(KeyUnavailable, match="0644") as refused:
        load_key(DEFAULT_KEY_ENV, key_file, DEFAULT_KEY_CREDENTIAL, {})
    assert SECRET not in str(refused.value)


def test_the_systemd_credential_is_read(tmp_path: Path) -> None:
    """$CREDENTIALS_DIRECTORY/redact-key gives the key when neither variable nor file does."""
    private(tmp_path / DEFAULT_KEY_CREDENTIAL, SECRET, 0o400)
    env = {"CREDENTIALS_DIRECTORY": str(tmp_path)}
    assert load_key(DEFAULT_KEY_ENV, None, DEFAULT_KEY_CREDENTIAL, env) == SECRET.encode()


def test_no_key_names_every_place_looked_at(tmp_path: Path) -> None:
    """Without any key the error names the variable and the credential; a configured file that is absent is named."""
    with pytest.raises(KeyUnavailable) as missing:
        load_key("MY_KEY", None, "my-cred", {"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert "$MY_KEY" in str(missing.value) and "my-cred" in str(missing.value)
    with pytest.raises(KeyUnavailable, match="absent"):
        load_key("MY_KEY", tmp_path / "absent", "my-cred", {})


def test_a_short_key_is_refused() -> None:
    """A key shorter than MIN_KEY_BYTES would make the hashes guessable: refused."""
    with pytest.raises(KeyUnavailable, match=f"at least {MIN_KEY_BYTES}"):
        load_key(DEFAULT_KEY_ENV, None, DEFAULT_KEY_CREDENTIAL, {DEFAULT_KEY_ENV: "short"})
