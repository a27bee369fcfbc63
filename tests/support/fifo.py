"""A backup whose bytes come through a named pipe, as from a hung network mount."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

from preskool_dr.core.storage import checksum
from preskool_dr.core.storage.layout import meta_path
from tests.support.cli import HANG_GUARD


class FifoBackup:
    """A backup whose bytes come through a named pipe, as from a hung network mount: each
    reader gets the whole file, except while `hold()` is on, when the bytes stop half way
    until `let_go()`. Sidecar and meta are ordinary files beside it."""

    def __init__(self, source: Path, folder: Path) -> None:
        self.data = source.read_bytes()
        self.path = folder / source.name
        for attr in (checksum.sidecar_path(source), meta_path(source)):
            if attr.exists():
                shutil.copy(attr, folder / attr.name)
        os.mkfifo(self.path)
        self.holding = threading.Event()  # set: the next reader is held half way
        self.held = threading.Event()  # set while a reader waits half way
        self.idle = threading.Event()  # set while no reader has the pipe open
        self._go = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def hold(self) -> None:
        self._go.clear()
        self.holding.set()

    def let_go(self) -> None:
        self.holding.clear()
        self._go.set()

    def reopen(self) -> None:
        """After a reader was killed half way: let go and wait until the pipe is closed, so
        the next reader does not get the bytes the dead one left in it."""
        self.let_go()
        if not self.idle.wait(HANG_GUARD):
            raise AssertionError("the FIFO writer never closed the pipe")

    def _serve(self) -> None:
        while not self._stop.is_set():
            self.idle.set()
            try:
                fd = os.open(self.path, os.O_WRONLY)  # blocks until a reader opens it
            except OSError:
                return
            self.idle.clear()
            if self._stop.is_set():
                os.close(fd)
                return
            # A fresh pipe for whoever opens next: this reader keeps the old one to its EOF.
            # Renamed into place, so a reader opening now finds one pipe or the other, never
            # no file at all (an unlink then mkfifo left that gap).
            fresh = self.path.with_name(self.path.name + ".next")
            os.mkfifo(fresh)
            os.replace(fresh, self.path)
            try:
                half = len(self.data) // 2
                if self.holding.is_set():
                    _write_all(fd, self.data[:half])
                    self.held.set()
                    self._go.wait(HANG_GUARD)
                    self.held.clear()
                    _write_all(fd, self.data[half:])
                else:
                    _write_all(fd, self.data)
            except OSError:
                pass  # the reader died (SIGKILL): serve the next one
            finally:
                os.close(fd)

    def stop(self) -> None:
        self._stop.set()
        self.let_go()
        # Wake a writer blocked in open(): again until it is gone, since one that had not
        # yet reached its open() when we knocked would block there after all.
        deadline = time.monotonic() + 10
        while self._thread.is_alive() and time.monotonic() < deadline:
            try:
                fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
                os.close(fd)
            except OSError:
                pass
            self._thread.join(timeout=0.05)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
