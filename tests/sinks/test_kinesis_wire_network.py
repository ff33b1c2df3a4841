"""PutRecordsClient when the network fails: each failure is NETWORK, says whether Kinesis may have taken the
request (only once the whole body was handed over), drops the broken connection, and the next request works."""

from __future__ import annotations

import base64
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from urllib3.exceptions import InsecureRequestWarning

from sinks.kinesis.service import CallFailed, FailureKind, PutResponse
from sinks.kinesis.wire import PutRecordsClient
from tests.conftest import free_port
from tests.sinks.conftest import STREAM
from tests.sinks.test_kinesis_wire import Rec, client_for, entries, server
from tests.sinks.wire_server import Answer, WireServer
from tests.sources.test_x_proxy import ConnectProxy, self_signed

__all__ = ["client_for", "server"]  # fixtures shared with the main wire tests

SHORT_TIMEOUT_S = 0.3  # a connect or read that fails does so quickly
# Bigger than loopback socket buffers on both ends can hold (a few MiB each): the send must still be going
# when the server resets, so the client sees its body refused part-way.
BIG_RECORDS, BIG_RECORD_BYTES = 500, 20_000
THREADS, REQUESTS_PER_THREAD = 4, 50
FILL_ATTEMPTS = 16  # connects tried to fill a listen backlog
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy",
                   "AWS_CA_BUNDLE")


@pytest.fixture(autouse=True)
def no_proxy_or_bundle_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests reach 127.0.0.1 directly unless they set a proxy or CA bundle themselves."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def _assert_network(outcome: object, code: str, maybe_delivered: bool) -> None:
    assert isinstance(outcome, CallFailed), outcome
    assert (outcome.code, outcome.kind, outcome.maybe_delivered) == (code, FailureKind.NETWORK, maybe_delivered)
    assert outcome.latency_s is not None and outcome.latency_s >= 0


def test_connection_refused_is_not_delivered(client_for: Callable[..., PutRecordsClient]) -> None:
    """Nothing listening: EndpointConnectionError, NETWORK, not delivered."""
    client = client_for(f"http://127.0.0.1:{free_port()}")
    _assert_network(client.put_records(STREAM, entries(2)), "EndpointConnectionError", maybe_delivered=False)


@pytest.fixture
def full_backlog() -> Iterator[str]:
    """An endpoint whose listen backlog is full: a new connection is never accepted, its connect times out."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    held: list[socket.socket] = []
    try:
        for _ in range(FILL_ATTEMPTS):
            probe = socket.socket()
            probe.settimeout(SHORT_TIMEOUT_S)
            held.append(probe)
            try:
                probe.connect(listener.getsockname())
            except TimeoutError:
                break
        else:
            pytest.fail(f"the backlog did not fill after {FILL_ATTEMPTS} connections")
        host, port = listener.getsockname()
        yield f"http://{host}:{port}"
    finally:
        for probe in held:
            probe.close()
        listener.close()


def test_connect_timeout_is_not_delivered(full_backlog: str, client_for: Callable[..., PutRecordsClient]) -> None:
    """A connect that never completes: ConnectTimeoutError after connect_timeout, not delivered."""
    client = client_for(full_backlog, connect_timeout=SHORT_TIMEOUT_S)
    _assert_network(client.put_records(STREAM, entries(2)), "ConnectTimeoutError", maybe_delivered=False)


def _next_request_works_on_a_new_connection(client: PutRecordsClient, server: WireServer) -> None:
    before = server.connections
    assert isinstance(client.put_records(STREAM, entries(1, "after")), PutResponse)
    assert server.connections == before + 1 and server.received[-1].connection == before + 1


def test_read_timeout_may_have_been_delivered(server: WireServer, client_for: Callable[..., PutRecordsClient]) -> None:
    """The request arrived but no answer within read_timeout: ReadTimeoutError, maybe delivered; the stalled
    connection is dropped and the next request opens another."""
    server.script.append(Answer(action="stall"))
    client = client_for(server.endpoint_url, read_timeout=SHORT_TIMEOUT_S)
    _assert_network(client.put_records(STREAM, entries(2)), "ReadTimeoutError", maybe_delivered=True)
    assert len(server.received) == 1
    server.release.set()
    _next_request_works_on_a_new_connection(client, server)


def test_reset_after_the_request_arrived_may_have_been_delivered(
    server: WireServer, client_for: Callable[..., PutRecordsClient]
) -> None:
    """The server read the whole request, then reset the connection: ConnectionClosedError, maybe delivered."""
    server.script.append(Answer(action="reset"))
    client = client_for(server.endpoint_url)
    _assert_network(client.put_records(STREAM, entries(2)), "ConnectionClosedError", maybe_delivered=True)
    assert len(server.received) == 1
    _next_request_works_on_a_new_connection(client, server)


def test_a_truncated_answer_may_have_been_delivered(server: WireServer, client_for: Callable[..., PutRecordsClient]) -> None:
    """An answer cut short of its Content-Length: ConnectionClosedError, maybe delivered (never a parse of half)."""
    server.script.append(Answer(action="truncate"))
    client = client_for(server.endpoint_url)
    _assert_network(client.put_records(STREAM, entries(5)), "ConnectionClosedError", maybe_delivered=True)
    _next_request_works_on_a_new_connection(client, server)


def test_reset_while_the_body_is_sent_is_not_delivered(server: WireServer, client_for: Callable[..., PutRecordsClient]) -> None:
    """The server resets before reading the body (larger than the socket buffers): the body never got through
    whole, so Kinesis cannot have taken it: not delivered."""
    server.script.append(Answer(action="reset_unread"))
    client = client_for(server.endpoint_url)
    big = [Rec(bytes([i % 256]) * BIG_RECORD_BYTES, f"k{i}") for i in range(BIG_RECORDS)]
    _assert_network(client.put_records(STREAM, big), "ConnectionClosedError", maybe_delivered=False)
    assert server.received == []
    _next_request_works_on_a_new_connection(client, server)


def test_reset_after_the_answer_keeps_the_answer(server: WireServer, client_for: Callable[..., PutRecordsClient]) -> None:
    """A full answer followed by a reset is an answer; the dead connection is not reused for the next request."""
    server.script.append(Answer(action="answer_then_reset"))
    client = client_for(server.endpoint_url)
    outcome = client.put_records(STREAM, entries(3))
    assert isinstance(outcome, PutResponse) and outcome.failures == () and len(outcome.sequence_numbers) == 3
    # The answer can reach the client before the server resets: the next request races the RST unless it waits.
    assert server.reset_after_answer.wait(5.0), "the server never reset the connection"
    _next_request_works_on_a_new_connection(client, server)


def test_concurrent_senders_each_get_their_own_answer(server: WireServer, client_for: Callable[..., PutRecordsClient]) -> None:
    """4 threads x 50 requests on 4 pooled connections: every answer carries exactly its request's entries
    (the server echoes each entry's data as its sequence number), and no more than 4 connections are opened."""
    client = client_for(server.endpoint_url, max_connections=THREADS)
    problems: list[str] = []
    start = threading.Barrier(THREADS)

    def sender(thread: int) -> None:
        start.wait()
        for request in range(REQUESTS_PER_THREAD):
            batch = entries(1 + request % 7, f"t{thread}-q{request}")
            outcome = client.put_records(STREAM, batch)
            expected = tuple(base64.b64encode(e.data).decode() for e in batch)
            if not isinstance(outcome, PutResponse) or outcome.sequence_numbers != expected:
                problems.append(f"thread {thread} request {request}: {outcome}")

    threads = [threading.Thread(target=sender, args=(t,)) for t in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert problems == []
    assert len(server.received) == THREADS * REQUESTS_PER_THREAD
    assert 1 <= server.connections <= THREADS


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[WireServer, Path]]:
    """An HTTPS endpoint with a self-signed certificate for 127.0.0.1, and that certificate's PEM file."""
    cert, key = self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    fake = WireServer(tls=context).start()
    yield fake, cert
    fake.stop()


def test_https_verifies_against_the_given_bundle(
    tls_server: tuple[WireServer, Path], client_for: Callable[..., PutRecordsClient]
) -> None:
    """verify=<bundle>: the endpoint's certificate is checked against it and requests go through (keep-alive)."""
    fake, cert = tls_server
    client = client_for(fake.endpoint_url, verify=str(cert))
    for _ in range(3):
        assert isinstance(client.put_records(STREAM, entries(2)), PutResponse)
    assert len(fake.received) == 3 and fake.connections == 1


def test_https_refuses_a_certificate_the_default_bundle_does_not_trust(
    tls_server: tuple[WireServer, Path], client_for: Callable[..., PutRecordsClient]
) -> None:
    """verify=True uses botocore's CA bundle, which does not hold the self-signed certificate: SSLError,
    NETWORK, not delivered, and nothing reached the server."""
    fake, _ = tls_server
    _assert_network(client_for(fake.endpoint_url).put_records(STREAM, entries(2)), "SSLError", maybe_delivered=False)
    assert fake.received == []


def test_https_without_verification_accepts_any_certificate(
    tls_server: tuple[WireServer, Path], client_for: Callable[..., PutRecordsClient]
) -> None:
    """verify=False: the self-signed certificate is accepted (urllib3 warns that verification is off)."""
    fake, _ = tls_server
    with pytest.warns(InsecureRequestWarning):
        assert isinstance(client_for(fake.endpoint_url, verify=False).put_records(STREAM, entries(2)), PutResponse)
    assert len(fake.received) == 1


def test_the_sessions_ca_bundle_is_used_by_default(
    tls_server: tuple[WireServer, Path], client_for: Callable[..., PutRecordsClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    """verify left at its default takes the session's CA bundle (AWS_CA_BUNDLE), as a boto3 client would."""
    fake, cert = tls_server
    monkeypatch.setenv("AWS_CA_BUNDLE", str(cert))
    assert isinstance(client_for(fake.endpoint_url).put_records(STREAM, entries(1)), PutResponse)


@pytest.fixture
def proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[ConnectProxy]:
    """A CONNECT proxy on 127.0.0.1, named by HTTPS_PROXY."""
    tunnel = ConnectProxy()
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{tunnel.port}")
    yield tunnel
    tunnel.close()


def test_https_goes_through_the_environments_proxy(
    tls_server: tuple[WireServer, Path], proxy: ConnectProxy, client_for: Callable[..., PutRecordsClient]
) -> None:
    """With HTTPS_PROXY set, requests tunnel through it (one CONNECT for several kept-alive requests), the
    certificate still verified end to end."""
    fake, cert = tls_server
    client = client_for(fake.endpoint_url, verify=str(cert))
    for _ in range(3):
        assert isinstance(client.put_records(STREAM, entries(2)), PutResponse)
    assert proxy.targets == [fake.endpoint_url.removeprefix("https://")]
    assert len(fake.received) == 3


def test_no_proxy_bypasses_the_proxy_and_a_dead_proxy_is_not_delivered(
    tls_server: tuple[WireServer, Path], client_for: Callable[..., PutRecordsClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A proxy nobody listens on fails as ProxyConnectionError, not delivered; NO_PROXY naming the endpoint's
    host sends directly instead."""
    fake, cert = tls_server
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{free_port()}")
    outcome = client_for(fake.endpoint_url, verify=str(cert)).put_records(STREAM, entries(1))
    _assert_network(outcome, "ProxyConnectionError", maybe_delivered=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    assert isinstance(client_for(fake.endpoint_url, verify=str(cert)).put_records(STREAM, entries(1)), PutResponse)
    assert len(fake.received) == 1
