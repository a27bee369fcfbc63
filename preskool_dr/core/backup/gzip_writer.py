"""The backup's writer: pg_dump's output gzipped on threads (optionally encrypted with
age), written under its `.part` name and hashed, while a reader checks what reached the
disk (MD5 and a full decompression): used by logical.py."""

from __future__ import annotations

import os
import subprocess
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from preskool_dr.core.backup.common import STEP_ID
from preskool_dr.core.base import age, deflate, procs
from preskool_dr.core.base.errors import Cancelled, VerificationError
from preskool_dr.core.base.events import EventSink, ProgressMeter
from preskool_dr.core.storage import checksum

# gzip threads: compression is the slow part; more threads than cores only queue
COMPRESS_THREADS = max(1, min(8, os.cpu_count() or 1))


class GzipWriter:
    """Reads pg_dump's stdout in 1 MiB chunks, gzips, writes and hashes the compressed bytes,
    while a ReadBack checks what reached the file; it raises VerificationError when that is
    not what was written.

    With `recipients` the compressed bytes go through an age Encryptor before they reach
    the file (clear text never touches the disk): the MD5 and the read-back are over the
    encrypted bytes, and the gzip check is made on the compressed stream before encryption
    (reading it back would need the identity, which the database host should not hold)."""

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        fd: int,
        part: Path,
        level: int,
        on_event: EventSink,
        cancel: threading.Event | None,
        recipients: list[object] | None = None,
    ) -> None:
        self.proc = proc
        self.recipients = recipients
        self.compressed = 0  # gzip bytes produced (before any encryption)
        self.fd = fd
        self.part = part
        self.level = level
        self.on_event = on_event
        self.cancel = cancel
        self.size = 0
        self.md5 = ""
        self.error: BaseException | None = None
        self._digest = checksum.md5_hasher()

    def run(self) -> None:
        try:
            self._copy()
        except BaseException as exc:
            self.error = exc
            procs.terminate(self.proc)  # or pg_dump blocks forever on a full pipe
        finally:
            os.close(self.fd)

    def _copy(self) -> None:
        """Each chunk of pg_dump's output becomes one gzip member, compressed on a pool of
        threads (zlib lets go of the GIL) and written in order: gzip is the slow part of a
        backup, and `gunzip` reads concatenated members as one stream."""
        assert self.proc.stdout is not None
        meter = ProgressMeter(self.on_event, STEP_ID, "dump", None)  # counts pg_dump's bytes
        encrypt = self.recipients is not None
        check = ReadBack(self.part, self.on_event, check_gzip=not encrypt)
        clear = checksum.GzipChecker() if encrypt else None
        encryptor = (
            age.Encryptor(self.recipients or [], lambda data: self._write_file(data, check))
            if encrypt
            else None
        )
        complete = False
        pending: deque[Future[bytes]] = deque()

        def write(data: bytes) -> None:
            self.compressed += len(data)
            if encryptor is None:
                self._write_file(data, check)
                return
            assert clear is not None
            clear.feed(data)
            encryptor.write(data)

        try:
            with ThreadPoolExecutor(COMPRESS_THREADS, "backup-gzip") as pool:
                while chunk := self.proc.stdout.read(checksum.CHUNK):
                    if self.cancel is not None and self.cancel.is_set():
                        raise Cancelled("backup cancelled: the partial file was removed")
                    pending.append(pool.submit(deflate.compress, chunk, self.level))
                    meter.add(len(chunk))
                    if len(pending) > 2 * COMPRESS_THREADS:  # bounded memory
                        write(pending.popleft().result())
                while pending:
                    write(pending.popleft().result())
            if self.compressed == 0:  # no output at all: still one (empty) gzip member
                write(deflate.compress(b"", self.level))
            if encryptor is not None:
                encryptor.close()
                encryptor = None
            os.fsync(self.fd)
            meter.finish()
            complete = True
        finally:
            if encryptor is not None:  # failed before the end: the part is thrown away
                encryptor.abort()
            check.end(complete)
        self.md5 = self._digest.hexdigest()
        problem = check.problem(meter.done)
        if problem is None and clear is not None:
            problem = _clear_problem(clear, meter.done)
        if problem is not None:
            raise VerificationError(
                f"reading {self.part.name} back failed the gzip check ({problem}); "
                "check the disk and run the backup again"
            )
        if check.md5 != self.md5:
            raise VerificationError(
                f"reading {self.part.name} back gave a different MD5 ({check.md5}, written "
                f"{self.md5}): the disk returned other bytes than were written; check it "
                "(dmesg) and run the backup again"
            )

    def _write_file(self, data: bytes, check: ReadBack) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]
        if data:
            self._digest.update(data)
            self.size += len(data)
            check.written(self.size)


def _clear_problem(clear: checksum.GzipChecker, sql_bytes: int) -> str | None:
    """Why the compressed stream that went into the encryptor is not whole gzip data of
    `sql_bytes` bytes of SQL."""
    if (error := clear.finish()) is not None:
        return error
    if clear.text_bytes != sql_bytes:
        return f"it holds {clear.text_bytes:,} bytes of SQL, pg_dump wrote {sql_bytes:,}"
    return None


class ReadBack:
    """Reads a file back through its own descriptor while it is written, up to what the
    writer has handed to the kernel: MD5 of the bytes and a full decompression (CRC and
    length checked by zlib), so that the check costs no second pass after the dump. Once the
    writer is done it reports `verify` progress for what is left."""

    def __init__(self, path: Path, on_event: EventSink, *, check_gzip: bool = True) -> None:
        self._fd = os.open(path, os.O_RDONLY)
        self._check_gzip = check_gzip
        self._on_event = on_event
        self._cond = threading.Condition()
        self._written = 0
        self._read = 0  # bytes read back (only this thread writes it)
        self._complete: bool | None = None  # the writer's end: True all written, False failed
        self._digest = checksum.md5_hasher()
        self._gzip = checksum.GzipChecker()
        self._error: str | None = None
        self._thread = threading.Thread(target=self._run, name="backup-read-back", daemon=True)
        self._thread.start()

    @property
    def md5(self) -> str:
        return self._digest.hexdigest()

    def written(self, size: int) -> None:
        with self._cond:
            self._written = size
            if size - self._read >= checksum.CHUNK:
                self._cond.notify()

    def end(self, complete: bool) -> None:
        """The writer is done (or failed): read the rest, or stop at once."""
        with self._cond:
            self._complete = complete
            self._cond.notify()
        self._thread.join()
        os.close(self._fd)

    def problem(self, sql_bytes: int) -> str | None:
        """Why the bytes read back are not whole gzip data of `sql_bytes` bytes of SQL."""
        if self._error is not None:
            return self._error
        if not self._check_gzip:  # encrypted bytes: only the MD5 is compared
            return None
        if (error := self._gzip.finish()) is not None:
            return error
        if self._gzip.text_bytes != sql_bytes:
            return f"it holds {self._gzip.text_bytes:,} bytes of SQL, pg_dump wrote {sql_bytes:,}"
        return None

    def _run(self) -> None:
        meter: ProgressMeter | None = None
        try:
            while True:
                with self._cond:
                    # whole chunks: a wake-up per compressed write would cost the writer
                    while self._written - self._read < checksum.CHUNK and self._complete is None:
                        self._cond.wait()
                    if self._complete is False:
                        return
                    limit, complete = self._written, self._complete
                if complete and meter is None:
                    meter = ProgressMeter(self._on_event, STEP_ID, "verify", limit, self._read)
                if self._read >= limit:  # only once complete: else a whole chunk waits
                    break
                data = os.pread(self._fd, min(checksum.CHUNK, limit - self._read), self._read)
                if not data:
                    self._error = f"the file ends at byte {self._read:,}, {limit:,} were written"
                    return
                self._read += len(data)
                self._digest.update(data)
                if self._check_gzip:
                    self._gzip.feed(data)
                if meter is not None:
                    meter.add(len(data))
            assert meter is not None
            meter.finish()
        except OSError as exc:
            self._error = f"cannot read it: {exc.strerror or exc}"
