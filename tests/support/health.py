"""Health URLs a test controls: a stub answering what the case needs, and a server that is
always healthy."""

from __future__ import annotations

import http.server
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support.cli import HANG_GUARD


class HealthStub:
    """A health URL: answers `status` (None: accepts and never answers) until `release()`,
    then 200. `asked` is set by the first request."""

    def __init__(self, status: int | None) -> None:
        self.status = status
        self.asked = threading.Event()
        self.released = threading.Event()
        self.requests = 0
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                stub.requests += 1
                stub.asked.set()
                if stub.status is None and not stub.released.is_set():
                    stub.released.wait(HANG_GUARD)
                    return  # the client gave up long ago
                code = 200 if stub.released.is_set() else int(stub.status or 200)
                data = json.dumps({"status": "ok" if code == 200 else "error"}).encode()
                self.send_response(code)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/api/v1/health"

    def release(self) -> None:
        self.released.set()

    def stop(self) -> None:
        self.released.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


class HealthServer:
    """A tiny health URL: 200 `ok` on every GET."""

    def __init__(self) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = b"ok"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}/api/v1/health"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()
