"""An HTTP proxy in front of moto's S3 server (AWS_ENDPOINT_URL points at it) that injects
errors, connection resets, short bodies, stalls and delays, and records every request."""

from __future__ import annotations

import http.client
import socket
import struct
import threading
import time
import urllib.parse
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support.cli import HANG_GUARD

S3_ERROR_BODY = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}'
    "</Message><RequestId>fault-proxy</RequestId></Error>"
)
_HOP = {"connection", "keep-alive", "transfer-encoding", "expect", "proxy-connection", "te"}


@dataclass
class Fault:
    """One injected misbehaviour for requests whose method and key match.

    error: answer `status` with S3's XML error `code`; stall: send `after_bytes` of the body,
    then wait for `release()`, which sends the rest or resets the connection (RST) half way;
    cut: send `after_bytes`, then close the connection cleanly (a short body); delay: wait
    `seconds` before answering normally; hold: keep the request from S3 until `release()`,
    then pass it on (a PUT that lands later than others); norange: pass the request on
    without its Range header (a server that ignores Range). `times` < 0: every matching
    request."""

    action: str
    key_suffix: str = ""
    method: str = "GET"
    times: int = 1
    status: int = 503
    code: str = "SlowDown"
    after_bytes: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class Seen:
    method: str
    key: str
    range: str | None
    status: int


class FaultProxy:
    """An HTTP proxy in front of moto's server; AWS_ENDPOINT_URL points here."""

    def __init__(self, upstream: str) -> None:
        parts = urllib.parse.urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.faults: list[Fault] = []
        self.seen: list[Seen] = []
        self.stalled = threading.Event()  # a stall is holding a response right now
        self._release = threading.Event()
        self._reset = False
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _ProxyHandler)
        self._server.daemon_threads = True
        self._server.proxy = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def add(self, fault: Fault) -> None:
        with self._lock:
            self._release.clear()
            self.faults.append(fault)

    def release(self, *, reset: bool = False) -> None:
        """Let a stalled response go on (or reset its connection), and drop the faults not
        used up yet."""
        with self._lock:
            self.faults.clear()
            self._reset = reset
        self._release.set()

    def take(self, method: str, key: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.method == method and key.endswith(fault.key_suffix) and fault.times:
                    fault.times -= 1
                    return fault
        return None

    def gets(self, key_suffix: str) -> list[Seen]:
        return [s for s in self.seen if s.method == "GET" and s.key.endswith(key_suffix)]

    def record(self, seen: Seen) -> None:
        with self._lock:
            self.seen.append(seen)

    def stop(self) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the cases read `proxy.seen`

    def do_GET(self) -> None:
        self._proxy()

    def do_HEAD(self) -> None:
        self._proxy()

    def do_PUT(self) -> None:
        self._proxy()

    def do_POST(self) -> None:
        self._proxy()

    def do_DELETE(self) -> None:
        self._proxy()

    def _proxy(self) -> None:
        proxy: FaultProxy = self.server.proxy  # type: ignore[attr-defined]
        self.close_connection = True
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        key = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        fault = proxy.take(self.command, key)
        if fault is not None and fault.action == "hold":
            proxy.stalled.set()
            proxy._release.wait(HANG_GUARD)
            proxy.stalled.clear()
        if fault is not None and fault.action == "delay":
            time.sleep(fault.seconds)
        if fault is not None and fault.action == "error":
            proxy.record(Seen(self.command, key, self.headers.get("Range"), fault.status))
            data = S3_ERROR_BODY.format(code=fault.code, message="injected by the test").encode()
            self.send_response(fault.status)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
        if fault is not None and fault.action == "norange":
            headers = {k: v for k, v in headers.items() if k.lower() != "range"}
        upstream = http.client.HTTPConnection(*proxy.upstream, timeout=60)
        try:
            upstream.request(self.command, self.path, body=body, headers=headers)
            response = upstream.getresponse()
            data = response.read()
            answer = response.getheaders()
        finally:
            upstream.close()
        proxy.record(Seen(self.command, key, self.headers.get("Range"), response.status))
        self.send_response(response.status)
        for name, value in answer:
            if name.lower() not in _HOP | {"content-length", "date", "server"}:
                self.send_header(name, value)
        if self.command == "HEAD":
            self.send_header("Content-Length", response.getheader("Content-Length") or "0")
        else:
            self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command == "HEAD":
            return
        try:
            if fault is None or fault.action not in ("stall", "cut"):
                self.wfile.write(data)
                return
            self.wfile.write(data[: fault.after_bytes])
            self.wfile.flush()
            if fault.action == "cut":
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            proxy.stalled.set()
            proxy._release.wait(HANG_GUARD)
            proxy.stalled.clear()
            if proxy._reset:
                # SO_LINGER 0: close() sends RST, the connection is reset half way
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                self.connection.close()
                return
            self.wfile.write(data[fault.after_bytes :])
        except OSError:
            pass  # the client went away (killed): nothing to answer
