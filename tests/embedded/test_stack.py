"""The embedded stack as the daemon runs it: the environment left alone, its own keys, a clean failed start."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import embedded.endpoint
from embedded import stack as stack_module
from embedded.endpoint import EMBEDDED_ACCESS_KEY_ID, embedded_client
from embedded.stack import EmbeddedStack
from infra.settings import StackSettings

pytestmark = pytest.mark.slow

REGION = "eu-west-3"
# Generous for a loaded 2-core machine; the pipeline usually lands items within two batching windows.
LAND_TIMEOUT_S = 30.0
POLL_S = 0.05
USER_KEY_ID = "AKIAUSERPROFILEKEY01"
# Thread names of everything the stack starts: endpoint, progress reporter, poller readers and lanes.
STACK_THREAD_PREFIXES = ("embedded-", "esm-")
TWEETS = 5


def _tweet(index: int) -> bytes:
    return json.dumps(
        {
            "data": {"id": f"7{index:03d}", "text": f"embedded {index}", "author_id": "42", "created_at": "2026-01-01T00:00:00Z"},
            "includes": {"users": [{"id": "42", "username": "embedded_user"}]},
        }
    ).encode()


@pytest.fixture
def users_aws_setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A user's AWS setup in the environment: a profile with real-looking keys, other keys, a foreign endpoint."""
    (tmp_path / "credentials").write_text(
        f"[user-profile]\naws_access_key_id = {USER_KEY_ID}\naws_secret_access_key = user-secret\n", encoding="ascii"
    )
    (tmp_path / "config").write_text("[profile user-profile]\nregion = ap-south-1\nmax_attempts = 9\n", encoding="ascii")
    setup = {
        "AWS_PROFILE": "user-profile",
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "credentials"),
        "AWS_CONFIG_FILE": str(tmp_path / "config"),
        "AWS_ACCESS_KEY_ID": "AKIAUSERENVIRONMENT1",
        "AWS_SECRET_ACCESS_KEY": "user-env-secret",
        "AWS_DEFAULT_REGION": "ap-south-1",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",  # would send every request nowhere
    }
    for name in ("AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_REGION", "TABLE_NAME", "DEAD_LETTER_QUEUE_URL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in setup.items():
        monkeypatch.setenv(name, value)
    return setup


@dataclass
class SignedBy:
    """The access key id and service of every request the endpoint received (from the SigV4 header)."""

    requests: list[tuple[str, str]]

    def keys(self) -> set[str]:
        return {key for key, _ in self.requests}

    def services(self) -> set[str]:
        return {service for _, service in self.requests}


@pytest.fixture
def signed_by(monkeypatch: pytest.MonkeyPatch) -> SignedBy:
    """Record, at the endpoint's WSGI app, which key signed each request (Credential=KEY/date/region/service/...)."""
    seen = SignedBy([])
    lock = threading.Lock()
    real_app = embedded.endpoint.DomainDispatcherApplication

    def recording_app(*args: Any, **kwargs: Any) -> Callable[..., Any]:
        app = real_app(*args, **kwargs)

        def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
            authorization = environ.get("HTTP_AUTHORIZATION", "")
            credential = authorization.split("Credential=", 1)[-1].split(",", 1)[0].split("/")
            with lock:
                seen.requests.append((credential[0], credential[3] if len(credential) > 3 else "?"))
            return app(environ, start_response)

        return wrapped

    monkeypatch.setattr(embedded.endpoint, "DomainDispatcherApplication", recording_app)
    return seen


def _stack() -> EmbeddedStack:
    return EmbeddedStack(StackSettings(name=f"s{uuid.uuid4().hex[:10]}"), "127.0.0.1", 0, REGION)


def _stack_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(STACK_THREAD_PREFIXES)]


def _wait_for_items(stack: EmbeddedStack, count: int) -> list[dict[str, Any]]:
    dynamodb = stack.client("dynamodb")
    give_up = time.monotonic() + LAND_TIMEOUT_S
    while True:
        items: list[dict[str, Any]] = dynamodb.scan(TableName=stack.settings.table_name)["Items"]
        if len(items) >= count or time.monotonic() > give_up:
            return items
        time.sleep(POLL_S)


@pytest.fixture
def stacks() -> Iterator[Callable[[], EmbeddedStack]]:
    """Makes stacks with unique names; whatever a test leaves running is stopped at teardown."""
    made: list[EmbeddedStack] = []

    def make() -> EmbeddedStack:
        made.append(_stack())
        return made[-1]

    yield make
    for stack in made:
        stack.stop()


@pytest.mark.usefixtures("users_aws_setup")
def test_start_and_stop_leave_the_environment_exactly_as_it_was(stacks: Callable[[], EmbeddedStack]) -> None:
    """os.environ (AWS_* included) is identical after start and after stop, and records still land in the table."""
    before = dict(os.environ)
    stack = stacks()
    stack.start()
    assert dict(os.environ) == before
    kinesis = stack.client("kinesis")
    for index in range(TWEETS):
        kinesis.put_record(StreamName=stack.settings.stream_name, PartitionKey="42", Data=_tweet(index))
    items = _wait_for_items(stack, TWEETS)
    assert sorted(item["Id"]["S"] for item in items) == [f"7{i:03d}" for i in range(TWEETS)]
    stack.stop()
    assert dict(os.environ) == before


@pytest.mark.usefixtures("users_aws_setup")
def test_every_request_is_signed_with_the_embedded_keys_not_the_users(
    stacks: Callable[[], EmbeddedStack], signed_by: SignedBy
) -> None:
    """With AWS_PROFILE and AWS keys set, the stack and its processor still sign every request with the dummy key."""
    stack = stacks()
    stack.start()
    stack.client("kinesis").put_record(StreamName=stack.settings.stream_name, PartitionKey="42", Data=_tweet(0))
    assert len(_wait_for_items(stack, 1)) == 1
    assert {"kinesis", "dynamodb", "sqs"} <= signed_by.services()  # the processor's writes are among them
    assert signed_by.keys() == {EMBEDDED_ACCESS_KEY_ID}


def test_a_missing_aws_profile_breaks_neither_the_clients_nor_the_endpoint(
    stacks: Callable[[], EmbeddedStack], monkeypatch: pytest.MonkeyPatch
) -> None:
    """AWS_PROFILE naming a profile that exists nowhere (plain boto3 and moto raise ProfileNotFound) is ignored."""
    monkeypatch.setenv("AWS_PROFILE", f"missing-{uuid.uuid4().hex[:8]}")
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    client = embedded_client("kinesis", "http://127.0.0.1:9", REGION)
    assert client.meta.region_name == REGION
    assert client._request_signer._credentials.access_key == EMBEDDED_ACCESS_KEY_ID
    stack = stacks()
    stack.start()
    stack.client("kinesis").put_record(StreamName=stack.settings.stream_name, PartitionKey="42", Data=_tweet(1))
    assert [item["Id"]["S"] for item in _wait_for_items(stack, 1)] == ["7001"]


def _assert_nothing_left(port: int) -> None:
    with socket.socket() as probe, pytest.raises(ConnectionRefusedError):
        probe.connect(("127.0.0.1", port))
    assert not _stack_threads()


def test_a_start_failing_after_the_endpoint_started_stops_the_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    """Resource creation raising: start() re-raises, and the endpoint's port is closed with no thread left behind."""

    def failing_create_resources(*_: Any, **__: Any) -> Any:
        raise RuntimeError("create_resources failed on purpose")

    monkeypatch.setattr(stack_module, "create_resources", failing_create_resources)
    stack = _stack()
    with pytest.raises(RuntimeError, match="on purpose"):
        stack.start()
    assert stack.endpoint.port != 0  # the endpoint did bind before the failure
    _assert_nothing_left(stack.endpoint.port)


def test_a_poller_failing_to_start_stops_the_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    """The event-source poller raising in start(): start() re-raises and leaves no port open, no thread running."""
    from embedded.event_source_mapping import poller

    def failing_start(self: Any) -> None:
        raise RuntimeError("poller failed on purpose")

    monkeypatch.setattr(poller.EventSourcePoller, "start", failing_start)
    stack = _stack()
    with pytest.raises(RuntimeError, match="on purpose"):
        stack.start()
    _assert_nothing_left(stack.endpoint.port)


def test_the_endpoint_stops_even_when_stopping_the_poller_fails(
    stacks: Callable[[], EmbeddedStack], monkeypatch: pytest.MonkeyPatch
) -> None:
    """stop() with a poller whose stop raises still closes the endpoint's port, then reports the error."""
    stack = stacks()
    stack.start()
    real_stop = stack.runner.stop

    def failing_stop(timeout: float) -> None:
        real_stop(timeout)  # its threads end; only the error is simulated
        raise RuntimeError("poller stop failed on purpose")

    monkeypatch.setattr(stack.runner, "stop", failing_stop)
    with pytest.raises(RuntimeError, match="on purpose"):
        stack.stop()
    _assert_nothing_left(stack.endpoint.port)
