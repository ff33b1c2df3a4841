"""A minimal local Kinesis endpoint that accepts every PutRecord(s) at once: isolates the producer's own cost."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FastKinesis:
    def __init__(self) -> None:
        self.records = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FastKinesis:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in separate writes: without this, delayed ACKs add ~40 ms a request.
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                operation = self.headers.get("X-Amz-Target", "").rsplit(".", 1)[-1]
                if operation == "PutRecords":
                    count = len(body["Records"])
                    answer = {
                        "FailedRecordCount": 0,
                        "Records": [{"SequenceNumber": "1", "ShardId": "shardId-000000000000"}] * count,
                    }
                else:
                    count = 1
                    answer = {"SequenceNumber": "1", "ShardId": "shardId-000000000000"}
                with owner._lock:
                    owner.records += count
                data = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-amz-json-1.1")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
