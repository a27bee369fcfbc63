"""Chunks handed to a thread of their own, so that two kinds of work on one stream run on
two cores: hashlib and zlib release the GIL while they work, `bytes.find` does not. Verify
inflates on its own thread while the MD5 and the meta-command scan (dumptext.py) run
on theirs, and costs about the slowest of them instead of their sum."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

from preskool_dr.core.storage.sidecar import md5_hasher


class Background:
    """`consume(chunk)` for every chunk given to `update`, in order, on its own thread. At
    most `queued` chunks wait (memory stays flat). An exception in `consume` is raised
    again by `close`; the chunks after it are dropped, never left to block the caller."""

    def __init__(self, consume: Callable[[bytes], object], name: str, queued: int = 8) -> None:
        self._consume = consume
        self._chunks: queue.Queue[bytes | None] = queue.Queue(queued)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (chunk := self._chunks.get()) is not None:
            if self._error is not None:
                continue  # drain: the producer must never wait on a dead consumer
            try:
                self._consume(chunk)
            except BaseException as exc:  # handed to the caller by close()
                self._error = exc

    def update(self, chunk: bytes) -> None:
        self._chunks.put(chunk)

    def close(self) -> None:
        """Wait until every chunk given so far is consumed (idempotent)."""
        if self._thread.is_alive():
            self._chunks.put(None)
            self._thread.join()
        if self._error is not None:
            error, self._error = self._error, None
            raise error


class BackgroundDigest(Background):
    """An MD5 computed on its own thread."""

    def __init__(self) -> None:
        self._digest = md5_hasher()
        super().__init__(self._digest.update, "verify-md5")

    def hexdigest(self) -> str:
        self.close()
        return self._digest.hexdigest()
