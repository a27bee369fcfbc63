"""Step 9's poll reports every try (for the TUI's `try 12/30 · 503 · gives up in 18 s`)."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from preskool_dr.core.restore.appctl import HealthTry, check_health


@pytest.fixture
def answers_503_twice() -> Iterator[str]:
    """A health URL that answers 503, 503, then 200."""
    codes = [503, 503]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            code = codes.pop(0) if codes else 200
            self.send_response(code)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    yield f"http://{host!s}:{port}/health"
    server.shutdown()
    server.server_close()
    thread.join()


def test_every_try_is_reported_with_the_time_left(answers_503_twice: str) -> None:
    tries: list[HealthTry] = []
    result = check_health(answers_503_twice, wait_seconds=5, interval=0.2, on_try=tries.append)
    assert result.ok and result.attempts == 3
    assert [t.attempt for t in tries] == [1, 2]  # the 200 ends the poll: no try after it
    assert [t.answer for t in tries] == ["503", "503"]
    first = tries[0]
    assert 4 < first.seconds_left <= 5
    assert first.most == 1 + int(first.seconds_left // 0.2)  # the tries the deadline allows
