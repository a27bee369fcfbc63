"""A real local webhook receiver for notifications (Apprise's `json://` URLs post to it)."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOKEN = "hook-TOKEN-5d1e9b"  # a marker: never in any output


@dataclass
class Receiver:
    """A webhook endpoint: records every POST; paths containing `fail` answer 500."""

    port: int
    posts: list[tuple[str, dict]] = field(default_factory=list)

    def url(self, path: str = "hook") -> str:
        return f"json://127.0.0.1:{self.port}/{path}/{TOKEN}"

    def titles(self) -> list[str]:
        return [body["title"] for _, body in self.posts]

    def of(self, event: str) -> list[dict]:
        return [body for _, body in self.posts if f"event: {event}\n" in body["message"]]


@contextlib.contextmanager
def webhook_receiver() -> Iterator[Receiver]:
    """A Receiver listening on 127.0.0.1 (a free port) until the block ends."""
    posts: list[tuple[str, dict]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            posts.append((self.path, json.loads(self.rfile.read(length))))
            self.send_response(500 if "fail" in self.path else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Receiver(server.server_address[1], posts)
    finally:
        server.shutdown()
        server.server_close()
