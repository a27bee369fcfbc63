"""The scanner's side of a parallel load, in the scanner thread: the file is read once and
what the scanner makes of it is delivered - pre-data to the schema psql, data entries that
are not parallel COPY blocks to the data psql, jobs to the scheduler (under the load's
lock, waking the calling thread)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from pathlib import Path

from preskool_dr.core.base import deflate
from preskool_dr.core.restore.loaders.parallel.jobs import Job, Stopped
from preskool_dr.core.restore.loaders.parallel.pieces import inflate
from preskool_dr.core.restore.loaders.parallel.scanner import Scanner
from preskool_dr.core.restore.loaders.parallel.scheduler import Scheduler
from preskool_dr.core.restore.loaders.parallel.sessions import Psql, session_error, table_trees
from preskool_dr.core.restore.loaders.parallel.toc import Roots
from preskool_dr.core.restore.loaders.stream import RestoreError

MAX_LOOKAHEAD = 256  # COPY block starts the scanner may hold before a session takes them


class ScanFeed:
    """A scanner.ScanSink. Its flags and sessions are read by the calling thread (under
    `cond`); `start_workers` connects the loading sessions once the preamble is known."""

    def __init__(
        self,
        backup: Path,
        env: Mapping[str, str],
        token: str,
        appname: str,
        split_bytes: int,
        plan: Scheduler,
        cond: threading.Condition,
        stop: threading.Event,
        start_workers: Callable[[bytes], None],
    ) -> None:
        self.backup = backup
        self.name = backup.name
        self.env = env
        self.token = token
        self.appname = appname
        self.split_bytes = split_bytes
        self.plan = plan
        self.cond = cond
        self.stop = stop
        self._start_workers = start_workers
        self.preamble = b""  # the text before the first entry: every session replays it
        self.schema: Psql | None = None  # pre-data
        self.serial: Psql | None = None  # data entries that are not COPY blocks
        self.serial_closed = False
        self.serial_done = False
        self.data_scanned = False
        self.scan_done = False
        self.scan_offset = 0  # compressed bytes scanned
        self.sql_bytes = 0  # decompressed bytes scanned
        self.pre_data_running = False  # the scanner waits for the schema session

    def scan(self) -> None:
        """Read the whole file (raises what stops the load; Stopped when told to stop)."""
        self.schema = Psql(self.env, self.token, "schema")
        scanner = Scanner(self, self.name, self.split_bytes)
        with self.backup.open("rb") as f:
            for piece in inflate(f, deflate.decompressor(), 0, self.name, snapshots=True):
                if self.stop.is_set():
                    raise Stopped
                scanner.feed(piece)
                self.scan_offset = piece.end
                self.sql_bytes += len(piece.data)
        scanner.finish()
        with self.cond:
            self.scan_done = True
            self.data_scanned = True
            if self.serial is None:
                self.serial_done = True
            self.cond.notify_all()

    def session_error(self, session: Psql, job: Job | None) -> RestoreError:
        return session_error(session, job, self.name, schema=session is self.schema)

    # ------------------------------------------------------------ scanner.ScanSink

    def pre_data(self, data: bytes) -> None:
        assert self.schema is not None
        self.schema.write(data)

    def start_sessions(self, preamble: bytes) -> None:
        self.preamble = preamble
        self._start_workers(preamble)

    def end_pre_data(self, *, data_follows: bool) -> Roots:
        schema = self.schema
        assert schema is not None
        schema.close()
        self.pre_data_running = True
        code = schema.wait(self.stop)
        self.pre_data_running = False
        if code == -1:
            raise Stopped
        if code != 0:
            raise self.session_error(schema, None)
        return table_trees(self.env, self.appname) if data_follows else {}

    def serial_data(self, data: bytes) -> None:
        if self.serial is None:
            self.serial = Psql(self.env, self.token, "data")
            self.serial.write(self.preamble)
        self.serial.write(data)

    def add_copy(self, job: Job) -> None:
        with self.cond:
            while len(self.plan.waiting) >= MAX_LOOKAHEAD and not self.stop.is_set():
                self.cond.wait(0.5)
            if self.stop.is_set():
                raise Stopped
            self.plan.add_copy(job)
            self.cond.notify_all()

    def part_scanned(self, job: Job, offset: int) -> None:
        with self.cond:
            job.end = offset
            self.cond.notify_all()

    def block_grew(self, block: int, size: int) -> None:
        with self.cond:
            self.plan.block_grew(block, size)

    def block_closed(self, block: int) -> None:
        with self.cond:
            self.plan.block_closed(block)
            self.cond.notify_all()

    def add_post(self, job: Job) -> None:
        with self.cond:
            self.plan.add_post(job)
            self.cond.notify_all()

    def data_scanned_to_end(self) -> None:
        with self.cond:
            self.data_scanned = True
            if self.serial is None:
                self.serial_done = True
            else:
                self.serial.close()
                self.serial_closed = True
            self.cond.notify_all()

    def line_at(self, offset: int) -> int:
        """The line of the decompressed byte `offset` (read again: only for a message)."""
        lines = 1
        with self.backup.open("rb") as f:
            for piece in inflate(f, deflate.decompressor(), 0, self.name, snapshots=False):
                if offset <= len(piece.data):
                    return lines + piece.data.count(b"\n", 0, offset)
                lines += piece.data.count(b"\n")
                offset -= len(piece.data)
        return lines
