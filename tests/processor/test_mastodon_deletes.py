"""Mastodon delete records: mapped to a Deletion, applied to the table as DeleteRequests, retried like puts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processor import telemetry
from processor.errors import PermanentFailure
from processor.handler import handler
from processor.items import MAX_PARTITION_KEY_BYTES, build_key
from processor.mappings import Deletion, GenericPaths, Post, map_deletion, map_event
from tests.fakes import FakeAwsServer, Handler
from tests.processor.conftest import ARRIVAL, FakeContext, MotoStack, kinesis_event, kinesis_record

TABLE = "fake-EventData"
HOST = "mastodon.example"
PATHS = GenericPaths()


def toot(status_id: str, acct: str = "alice@remote.example") -> dict[str, Any]:
    return {
        "id": status_id,
        "created_at": "2026-12-01T12:00:00.000Z",
        "content": f"<p>toot {status_id}</p>",
        "account": {"id": "77", "acct": acct},
    }


def delete(status_id: str, acct: str | None = "alice@remote.example") -> dict[str, Any]:
    record: dict[str, Any] = {"event": "delete", "id": status_id, "instance": HOST}
    return record | ({"acct": acct} if acct is not None else {})


def test_delete_records_map_to_deletions_and_statuses_still_to_posts() -> None:
    """A delete record is a Deletion (author when named, else None); anything else is not, and a status stays a Post."""
    assert map_deletion(delete("5")) == Deletion("mastodon", "alice@remote.example", "5")
    assert map_deletion(delete("6", acct=None)) == Deletion("mastodon", None, "6")
    assert map_deletion(delete("7", acct="")) == Deletion("mastodon", None, "7")
    assert map_deletion(toot("5")) is None
    assert map_deletion(["not", "a", "dict"]) is None
    assert isinstance(map_event(toot("5"), PATHS), Post)
    with pytest.raises(PermanentFailure, match="missing or empty id"):
        map_deletion({"event": "delete", "id": "", "instance": HOST})


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["event", "id", "instance", "acct", "content"]), json_values), st.booleans())
def test_any_delete_shaped_payload_is_a_key_a_count_or_a_permanent_failure(event: dict[str, Any], force: bool) -> None:
    """Whatever a delete-like payload holds: a Deletion with a valid key, an authorless one, not a delete, or PermanentFailure."""
    if force:
        event = event | {"event": "delete", "instance": HOST}
    try:
        deletion = map_deletion(event)
        if deletion is not None and deletion.username is not None:
            key = build_key(deletion)
            assert key["Username"]["S"] == deletion.username and key["Id"]["S"] == deletion.id
    except PermanentFailure as failure:
        assert failure.reason in ("unmappable", "invalid_text", "key_too_large")


def test_a_delete_with_an_oversize_author_is_a_key_failure() -> None:
    """A username over DynamoDB's partition key limit fails as key_too_large (the handler dead-letters it)."""
    deletion = map_deletion(delete("5", acct="a" * (MAX_PARTITION_KEY_BYTES + 1)))
    assert deletion is not None
    with pytest.raises(PermanentFailure, match="key_too_large"):
        build_key(deletion)


@pytest.mark.slow
def test_a_delete_removes_the_stored_status(moto_stack: MotoStack, context: FakeContext) -> None:
    """A status stored by one batch is gone after a later batch carries its delete; other statuses stay."""
    assert handler(kinesis_event(kinesis_record(toot("5")), kinesis_record(toot("6"))), context) == {"batchItemFailures": []}
    assert [i["Id"] for i in moto_stack.items()] == ["5", "6"]
    before = telemetry.totals().get(telemetry.ITEMS_DELETED, 0)
    assert handler(kinesis_event(kinesis_record(delete("5"), arrival=ARRIVAL + 1)), context) == {"batchItemFailures": []}
    assert [i["Id"] for i in moto_stack.items()] == ["6"]
    assert telemetry.totals()[telemetry.ITEMS_DELETED] == before + 1
    assert moto_stack.dead_letters() == []


@pytest.mark.slow
def test_a_status_and_its_delete_in_one_batch_leave_no_item(moto_stack: MotoStack, context: FakeContext) -> None:
    """Put then delete of one key in a batch collapse to the delete (the later one), so nothing is stored."""
    event = kinesis_event(kinesis_record(toot("5")), kinesis_record(delete("5")), kinesis_record(toot("8")))
    assert handler(event, context) == {"batchItemFailures": []}
    assert [i["Id"] for i in moto_stack.items()] == ["8"]


@pytest.mark.slow
def test_a_delete_without_author_is_counted_not_dead_lettered(moto_stack: MotoStack, context: FakeContext) -> None:
    """A delete naming no author cannot find its item: counted as DeletesWithoutAuthor, no failure, no dead letter."""
    handler(kinesis_event(kinesis_record(toot("5"))), context)
    before = telemetry.totals().get(telemetry.DELETES_WITHOUT_AUTHOR, 0)
    assert handler(kinesis_event(kinesis_record(delete("5", acct=None))), context) == {"batchItemFailures": []}
    assert [i["Id"] for i in moto_stack.items()] == ["5"]
    assert telemetry.totals()[telemetry.DELETES_WITHOUT_AUTHOR] == before + 1
    assert moto_stack.dead_letters() == []


@pytest.mark.slow
def test_unprocessed_deletes_are_retried(fake_dynamodb: Callable[[Handler], FakeAwsServer], context: FakeContext) -> None:
    """A DeleteRequest left in UnprocessedItems is sent again (and only it), like an unprocessed put."""
    bodies: list[dict[str, Any]] = []

    def answer(operation: str, body: dict[str, Any]) -> dict[str, Any]:
        bodies.append(body)
        requests = body["RequestItems"][TABLE]
        left = [r for r in requests if "DeleteRequest" in r] if len(bodies) == 1 else []
        return {"UnprocessedItems": {TABLE: left} if left else {}}

    fake_dynamodb(answer)
    response = handler(kinesis_event(kinesis_record(toot("5")), kinesis_record(delete("9"))), context)
    assert response == {"batchItemFailures": []}
    assert len(bodies) == 2
    assert bodies[1]["RequestItems"][TABLE] == [
        {"DeleteRequest": {"Key": {"Username": {"S": "alice@remote.example"}, "Id": {"S": "9"}}}}
    ]
