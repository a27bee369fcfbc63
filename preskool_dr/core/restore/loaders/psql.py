"""psql as the loaders' child: the threads that read its output, and the `\\restrict` key
its input starts with (psql then refuses every meta-command a backup might carry).

Used by the serial stream (stream.py) and the parallel loader's sessions.
"""

from __future__ import annotations

import functools
import re
import secrets
import subprocess
import threading
from collections import deque
from typing import IO

from preskool_dr.core.base.events import EventSink, LogLine, Notice, ignore_events
from preskool_dr.core.base.procs import redact, run_command

MAX_LOG_LINE = 4096  # bytes of one psql output line kept
MAX_PENDING_LINES = 2000  # psql output lines waiting for the loading thread

# The first minor release of each major whose psql has `\restrict` (CVE-2025-8714); 18 has it.
RESTRICT_SINCE = {13: 22, 14: 19, 15: 14, 16: 10, 17: 6}
_PSQL_VERSION = re.compile(r"\(PostgreSQL\) (\d+)(?:\.(\d+))?")


class PsqlOutput:
    """Reads psql's stdout and stderr in threads; the loading thread drains the lines, so
    the event sink is only ever called from one thread. `arrived` is set after every line
    and at the end of either stream, so a reader waiting for one line need not poll."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.pending: deque[str] = deque(maxlen=MAX_PENDING_LINES)
        self.stderr_tail: deque[str] = deque(maxlen=200)
        self.arrived = threading.Event()
        assert proc.stdout is not None and proc.stderr is not None
        self._threads = [
            threading.Thread(target=self._pump, args=(proc.stdout, False), daemon=True),
            threading.Thread(target=self._pump, args=(proc.stderr, True), daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _pump(self, stream: IO[bytes], is_stderr: bool) -> None:
        while raw := stream.readline(MAX_LOG_LINE):
            text = redact(raw.decode("utf-8", "replace").rstrip("\r\n"))
            self.pending.append(text)
            if is_stderr:
                self.stderr_tail.append(text)
            self.arrived.set()
        self.arrived.set()

    def drain(self, on_event: EventSink, step_id: str) -> None:
        while self.pending:
            on_event(LogLine("psql", self.pending.popleft(), step_id))

    def join(self) -> None:
        for thread in self._threads:
            thread.join(timeout=5)


@functools.cache
def psql_restricts() -> bool:
    """Whether psql on PATH has `\\restrict`. A version it does not print is assumed to have
    it: a psql without it then stops at once, which is safe and says why."""
    result = run_command(["psql", "--version"], timeout=60)
    match = _PSQL_VERSION.search(result.output)
    if match is None:
        return True
    major, minor = int(match[1]), int(match[2] or 0)
    return major >= 18 or minor >= RESTRICT_SINCE.get(major, 1 << 30)


def restrict_line(on_event: EventSink = ignore_events, step_id: str | None = None) -> bytes:
    """`\\restrict KEY\\n` with a fresh random KEY, for the first line of a psql's input:
    psql then refuses every meta-command (the backup cannot know KEY to `\\unrestrict`).
    The key goes through the pipe, never argv. b"" (and a warning) when psql is too old: the
    loaders' own scan of backslash lines is then the only guard."""
    if psql_restricts():
        return f"\\restrict {secrets.token_hex(32)}\n".encode()
    on_event(
        Notice(
            "warn",
            "psql on PATH has no \\restrict (PostgreSQL client 15.14/16.10/17.6 or later has "
            "it): backslash commands a backup might carry are stopped only by preskool-dr's "
            "own line scan; upgrade the PostgreSQL client tools",
            step_id,
        )
    )
    return b""
