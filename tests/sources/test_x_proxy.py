"""Source `x` through an HTTPS proxy (CONNECT) to a TLS fake X whose self-signed CA comes from REQUESTS_CA_BUNDLE."""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.fake_x import FakeX, Send, StreamScript, tweet_line
from tests.sources.test_x_support import make_source, run_until_stopped, x_context

_PIPE_BYTES = 65536


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 signed by its own key (it is its own CA), as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake-x.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


class ConnectProxy:
    """A minimal HTTPS proxy: answers CONNECT host:port, then pipes bytes both ways; remembers the targets."""

    def __init__(self) -> None:
        self.targets: list[str] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._tunnel, args=(client,), daemon=True).start()

    def _tunnel(self, client: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            data = client.recv(4096)
            if not data:
                client.close()
                return
            head += data
        method, target, _ = head.split(b"\r\n", 1)[0].decode().split(" ", 2)
        if method != "CONNECT":
            client.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            client.close()
            return
        self.targets.append(target)
        host, port = target.rsplit(":", 1)
        upstream = socket.create_connection((host, int(port)))
        client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        for src, dst in ((client, upstream), (upstream, client)):
            threading.Thread(target=_pipe, args=(src, dst), daemon=True).start()

    def close(self) -> None:
        self._listener.close()


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(_PIPE_BYTES):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def tls_fake(tmp_path: Path) -> Iterator[tuple[FakeX, Path]]:
    cert, key = self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server = FakeX(tls=context).start()
    yield server, cert
    server.stop()


@pytest.fixture
def proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[ConnectProxy]:
    server = ConnectProxy()
    for name in ("NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{server.port}")
    yield server
    server.close()


def test_stream_through_an_https_proxy_with_a_custom_ca_bundle(
    tls_fake: tuple[FakeX, Path], proxy: ConnectProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTPS_PROXY + REQUESTS_CA_BUNDLE: rules and stream go through the proxy's CONNECT tunnel, TLS verified by that CA."""
    fake, cert = tls_fake
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
    fake.scripts = [StreamScript(steps=[Send(tweet_line(1) + b"\r\n")])]
    ctx = x_context(stop_after_emits=1)
    run_until_stopped(make_source(fake), ctx)
    assert [d for d, _, _ in ctx.emitted] == [tweet_line(1)]
    assert proxy.targets and set(proxy.targets) == {f"127.0.0.1:{fake.port}"}
    assert len(proxy.targets) >= 2  # the rules calls and the stream each opened a tunnel


def test_without_the_ca_bundle_the_self_signed_server_is_refused(
    tls_fake: tuple[FakeX, Path], proxy: ConnectProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without REQUESTS_CA_BUNDLE the certificate is not trusted: a network failure, no record."""
    fake, _ = tls_fake
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    ctx = x_context(stop_after_reconnects=1)
    run_until_stopped(make_source(fake), ctx)
    assert ctx.reconnects[0][0] == "network" and "CERTIFICATE_VERIFY_FAILED" in ctx.reconnects[0][2]
    assert ctx.emitted == [] and proxy.targets
