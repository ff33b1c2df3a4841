"""The processor maps what the producer's transforms ship: projected X v2 tweets and enveloped records.

The records are made by the daemon's own chain (daemon/transforms), so a change there that the processor
cannot read fails here. The processor itself imports nothing of the daemon.
"""

from __future__ import annotations

from typing import Any

import pytest

from daemon.transforms import SourceTransforms, compile_chain
from daemon.transforms.config import AddSpec, AddStep, FieldsStep
from processor.handler import PRODUCER_SOURCE, RECEIVED_AT, handler
from processor.mappings import unwrap_envelope
from tests.daemon.transforms.tweets import line, tweet
from tests.processor.conftest import FakeContext, MotoStack, kinesis_event, kinesis_record

PROJECTION = FieldsStep(fields=("data.id", "data.text", "data.author_id", "data.created_at", "includes.users"))


def shipped(*steps: Any, event: dict[str, Any]) -> bytes:
    """The bytes the daemon ships for `event` through these steps."""
    result = compile_chain(SourceTransforms(steps=steps), "x-ja").apply(line(event), event)
    assert result is not None
    return result[0]


def test_unwrap_envelope_takes_only_the_producers_envelope() -> None:
    """Exactly {source, received_at, payload} with text is an envelope; a post with a payload field is not."""
    payload, wrapped = unwrap_envelope({"source": "x", "received_at": "2026-12-02T15:20:45.123Z", "payload": {"a": 1}})
    assert payload == {"a": 1} and wrapped is not None and wrapped.source == "x"
    post = {"source": "x", "received_at": 5, "payload": {"a": 1}}
    assert unwrap_envelope(post) == (post, None)
    assert unwrap_envelope({"payload": 1}) == ({"payload": 1}, None)


@pytest.mark.slow  # against moto's server, like tests/processor/test_handler.py
def test_projected_and_enveloped_tweets_become_items(moto_stack: MotoStack, context: FakeContext) -> None:
    """A projected tweet maps as before (non-Latin text intact); an enveloped one maps its payload and keeps the
    envelope's source and receive time as attributes."""
    projected = tweet(1, text="東京で新しいリリース 🎉")
    enveloped = tweet(2, text="مرحبا بالعالم")
    records = [
        kinesis_record(shipped(PROJECTION, event=projected)),
        kinesis_record(shipped(PROJECTION, AddStep(add=AddSpec(envelope=True)), event=enveloped)),
    ]
    assert handler(kinesis_event(*records), context) == {"batchItemFailures": []}
    items = {item["Id"]: item for item in moto_stack.items()}
    first, second = items[projected["data"]["id"]], items[enveloped["data"]["id"]]
    assert first["Message"] == "東京で新しいリリース 🎉" and first["Username"] == "user_1"
    assert PRODUCER_SOURCE not in first
    assert second["Message"] == "مرحبا بالعالم" and second["Username"] == "user_2" and second["Source"] == "x-v2"
    assert second[PRODUCER_SOURCE] == "x-ja" and second[RECEIVED_AT].endswith("Z")
    assert moto_stack.dead_letters() == []
