"""moto's server on a local address: the Kinesis-, DynamoDB- and SQS-compatible endpoint of the embedded stack."""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import boto3
import botocore.session
from botocore.config import Config
from botocore.configprovider import BOTOCORE_DEFAUT_SESSION_VARIABLES as SESSION_VARIABLES
from moto.core.base_backend import AccountSpecificBackend
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import BaseWSGIServer, make_server

# Credentials for the local endpoint only. moto accepts any; fixed dummies guarantee that requests to it
# are never signed with a user's real AWS credentials.
EMBEDDED_ACCESS_KEY_ID = "embedded"
EMBEDDED_SECRET_ACCESS_KEY = "embedded-not-a-secret"  # noqa: S105 - a fixed dummy for the local endpoint
# Local calls answer in milliseconds; a stuck endpoint should surface quickly rather than hang the daemon.
_CONNECT_TIMEOUT_S = 2.0
_READ_TIMEOUT_S = 30.0


class _RequestHandler(MotoRequestHandler):
    # werkzeug writes headers and body separately; with Nagle on, delayed ACKs add ~40 ms to every request.
    disable_nagle_algorithm = True


class EndpointUnavailable(Exception):
    """The endpoint's address cannot be bound (another process has it) or reached."""


class EmbeddedEndpoint:
    """moto's WSGI app served by a threaded werkzeug server, bound in the caller's thread so errors surface."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        # werkzeug logs every request at INFO: thousands of lines a second under load.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        _isolate_moto_from_the_environment()
        app = DomainDispatcherApplication(create_backend_app)
        try:
            self._server = make_server(self.host, self.port, app, threaded=True, request_handler=_RequestHandler)
        except (OSError, SystemExit) as exc:  # werkzeug exits when the port is taken
            raise EndpointUnavailable(
                f"cannot listen on {self.host}:{self.port} for the embedded stack ({exc}); "
                "stop whatever uses that port or set embedded.listen to a free address"
            ) from exc
        self.port = self._server.server_address[1]  # resolves port 0 to the bound port
        self._thread = threading.Thread(target=self._server.serve_forever, name="embedded-endpoint", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None


_session_lock = threading.Lock()  # boto3 sessions are not thread-safe while they create clients
_session: boto3.Session | None = None


def _isolated_session() -> boto3.Session:
    """The boto3 session (shared: building one loads botocore's data) that reads no AWS_* variable and no
    ~/.aws file. Call with `_session_lock` held.

    The embedded endpoint is local and takes dummy credentials: nothing of the user's AWS setup (a profile
    that may not exist, SSO, a custom endpoint, retry settings) may change how the stack's clients behave,
    and the daemon's environment is left as it is.
    """
    global _session  # one lazily built session per process
    if _session is None:
        session_vars = {
            name: (key, None, default, convert) for name, (key, _env, default, convert) in SESSION_VARIABLES.items()
        }
        session_vars["config_file"] = (None, None, os.devnull, None)
        session_vars["credentials_file"] = (None, None, os.devnull, None)
        _session = boto3.Session(botocore_session=botocore.session.Session(session_vars=session_vars))
    return _session


def _isolate_moto_from_the_environment() -> None:
    """Give moto a session that reads no AWS_* variable for the region lists of its backends.

    NOTE: moto builds those lists with a plain boto3.Session(), which raises ProfileNotFound when AWS_PROFILE
    names a profile that does not exist, so every request fails with a 500
    (https://github.com/getmoto/moto/issues/5469). The lists come from botocore's data files only.
    """
    with _session_lock:
        session = _isolated_session()
    setattr(AccountSpecificBackend, "get_session", classmethod(lambda _cls: session))  # noqa: B010 - mypy: no assigning methods


def embedded_client(service: str, endpoint_url: str, region: str, config: Config | None = None) -> Any:
    """A boto3 client for the embedded endpoint: explicit endpoint, region and dummy credentials.

    `config` adds to (and overrides) the endpoint's timeouts, e.g. the processor's retry settings.
    """
    timeouts = Config(connect_timeout=_CONNECT_TIMEOUT_S, read_timeout=_READ_TIMEOUT_S)
    with _session_lock:
        return _isolated_session().client(
            service,  # type: ignore[call-overload]
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id=EMBEDDED_ACCESS_KEY_ID,
            aws_secret_access_key=EMBEDDED_SECRET_ACCESS_KEY,
            config=timeouts.merge(config) if config is not None else timeouts,
        )
