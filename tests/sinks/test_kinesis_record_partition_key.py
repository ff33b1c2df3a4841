"""A record's own partition key (set by a source's `partition_key` transform) wins over the configured paths,
under the same rules: a key Kinesis would refuse becomes its SHA-256 digest; none falls back to the paths."""

from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st

from sinks.base import Record
from sinks.kinesis.records import MAX_PARTITION_KEY_CHARS, EntryBuilder, key_fits

EVENT = {"data": {"author_id": "from-the-path"}}
BUILDER = EntryBuilder(["data.author_id"], 1024 * 1024)


def key_of(partition_key: str | None) -> str:
    return BUILDER.build(Record(b"{}", EVENT, "s", "s:1", partition_key=partition_key)).partition_key


def test_the_records_key_wins_over_the_paths() -> None:
    """A record carrying a key is routed by it, not by data.author_id."""
    assert key_of("conversation-7") == "conversation-7"


def test_no_key_or_an_empty_one_falls_back_to_the_paths() -> None:
    """None and "" leave the configured paths to decide."""
    assert key_of(None) == key_of("") == "from-the-path"


def test_a_key_kinesis_would_refuse_is_hashed_like_any_other() -> None:
    """Over 256 characters: the SHA-256 hex digest of the whole key, as for a key read from the paths."""
    long_key = "東" * (MAX_PARTITION_KEY_CHARS + 1)
    assert key_of(long_key) == hashlib.sha256(long_key.encode("utf-8")).hexdigest()


@given(st.text(st.characters(codec=None), max_size=400))
def test_any_key_text_gives_a_key_kinesis_takes(text: str) -> None:
    """Whatever text a transform chose, the entry's key fits Kinesis, and is the text itself when that fits."""
    key = key_of(text)
    assert key_fits(key)
    if text and key_fits(text):
        assert key == text
