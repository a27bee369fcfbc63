"""The one-pass integrity check (MD5 + full gzip decompression); the MD5 sidecars
themselves are in core/storage/sidecar.py.

The verify pass reads the backup once: every chunk feeds both the MD5 and a gzip
decompressor, because a 20 GB dump read twice doubles the slowest part of an outage.
For a logical backup the same pass also checks that the decompressed text starts and ends
like pg_dump's plain output: a valid gzip of something else (or of a dump cut short at a
line boundary) restored with `--mode drop` would lose the database it replaces. And it
scans the text for psql meta-commands (core/storage/dumptext.py): a backup that would run a shell
command, write a file or switch databases on the host that restores it fails verification.
"""

from __future__ import annotations

import gzip
import os
import stat
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from preskool_dr.core.base import age, deflate
from preskool_dr.core.base.errors import Cancelled, DrError, NotFoundError, VerificationError
from preskool_dr.core.base.events import EventSink, ProgressMeter, ignore_events
from preskool_dr.core.storage.background import Background, BackgroundDigest
from preskool_dr.core.storage.dumptext import (
    DUMP_HEAD,
    DumpText,
    dump_shape_error,
    meta_command_error,
)
from preskool_dr.core.storage.sidecar import (
    SIDECAR_SUFFIX,
    Sidecar,
    create_sidecar,
    expected_md5,
    md5_hasher,
    read_sidecar,
    sidecar_path,
    write_sidecar,
)

# The sidecar's names stay importable from here, where most callers look for them.
__all__ = [
    "SIDECAR_SUFFIX",
    "Sidecar",
    "create_sidecar",
    "expected_md5",
    "md5_hasher",
    "read_sidecar",
    "sidecar_path",
    "write_sidecar",
]

CHUNK = 1024 * 1024
# Decompressed output is thrown away; capping it keeps memory flat on highly compressible dumps.
_MAX_INFLATE = 8 * CHUNK
_GZIP_MAGIC = b"\x1f\x8b"
_GZIP_HEADER_MIN = 10  # a member shorter than its fixed header is not a gzip member at all
# Only the head and a small tail of the text are kept while streaming (dump_shape_error).
_DUMP_TAIL_KEEP = 1024


@dataclass(frozen=True)
class FileIdentity:
    """Which file, in which state: what the verify gate compares (core/restore/pinned.py). Any
    write changes ctime, which no unprivileged process can set back; a file renamed into
    place has another inode."""

    dev: int
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileIdentity:
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    @classmethod
    def at(cls, path: Path, *, follow_symlinks: bool = True) -> FileIdentity | None:
        """What `path` names now; None when it names nothing that can be stat'ed."""
        try:
            return cls.of(os.stat(path, follow_symlinks=follow_symlinks))
        except OSError:
            return None


@dataclass(frozen=True)
class VerifyResult:
    path: Path
    size: int
    expected_md5: str | None  # None: no sidecar
    actual_md5: str
    gzip_ok: bool
    gzip_error: str | None
    sidecar_error: str | None = None  # why there is no usable expected digest
    gzip_checked: bool = True  # False for members that are not gzip (e.g. a plain .tar)
    dump_checked: bool = False  # True when the text was checked to be whole pg_dump output
    dump_error: str | None = None  # why it is not (None when unchecked or fine)
    # the file that was read, as it was when the read ended; None when it changed while it
    # was read (the digest then vouches for no state the file was ever in) or is not a
    # regular file (a pipe gives its next reader other bytes)
    identity: FileIdentity | None = None
    # age-encrypted (`.age`): the MD5 is over the encrypted bytes; gzip and content were
    # checked only when an identity decrypted it in the same pass (gzip_checked)
    encrypted: bool = False
    # why the caller read only the MD5 (gzip_checked False): e.g. restore step 4 when step 6
    # loads the custom-format companion, not this file
    skipped: str | None = None

    @property
    def md5_ok(self) -> bool:
        return self.expected_md5 is not None and self.expected_md5 == self.actual_md5

    @property
    def dump_ok(self) -> bool:
        return self.dump_error is None

    @property
    def ok(self) -> bool:
        return self.md5_ok and self.gzip_ok and self.dump_ok

    def md5_text(self) -> str:
        """What the operator reads about the digest."""
        if self.expected_md5 is None:
            reason = self.sidecar_error or "no checksum sidecar"
            return f"MD5: {self.actual_md5} cannot be checked: {reason}"
        if self.md5_ok:
            return f"MD5: {self.actual_md5} matches the sidecar"
        return f"MD5 mismatch: expected {self.expected_md5} (sidecar), actual {self.actual_md5}"

    def gzip_text(self) -> str:
        if not self.gzip_checked and self.encrypted:
            return (
                "Gzip and content not checked: the backup is encrypted and no identity was "
                f"given ({age.HOW_TO_PASS} to decrypt and check them in the same read)"
            )
        if not self.gzip_checked and self.skipped:
            return f"Gzip and content not read: {self.skipped}"
        if not self.gzip_checked:
            return "Gzip not checked (not a gzip file)"
        if self.gzip_ok:
            return ("Decrypted; g" if self.encrypted else "G") + "zip integrity check passed"
        return f"Gzip integrity check failed: {self.gzip_error}"

    def dump_text(self) -> str:
        if not self.dump_checked:
            return "Content not checked (not a pg_dump backup)"
        if self.dump_ok:
            return "Content is complete pg_dump output"
        return f"Content check failed: {self.dump_error}"

    def findings(self) -> str:
        """Expected vs actual digest, gzip state, and the content's when it was checked and
        the gzip was intact (a broken stream says nothing of its text)."""
        line = f"{self.md5_text()}; {self.gzip_text()}"
        return f"{line}; {self.dump_text()}" if self.dump_checked and self.gzip_ok else line

    def describe(self) -> str:
        """One line: the verdict, the file and its findings."""
        return f"{'OK' if self.ok else 'BAD'} {self.path.name}: {self.findings()}"


class GzipChecker:
    """Incremental `gunzip -t`: every member decompressed (CRC and length checked by zlib),
    several concatenated members accepted, anything after the last member rejected.
    `scan_text`: the decompressed text is also followed by a DumpText (meta-commands)."""

    def __init__(self, *, scan_text: bool = False) -> None:
        self._inflater = deflate.decompressor()
        self._members = 1
        self._member_head = b""  # the first bytes of the current member, for the magic check
        self._member_bytes = 0  # compressed bytes fed to the current member
        self._offset = 0  # compressed bytes consumed so far
        self.error: str | None = None
        self.head = b""  # the first bytes of the decompressed text
        self.tail = b""  # its last bytes
        self.text_bytes = 0  # decompressed bytes so far
        # a finding's line is counted afterwards (text_line_at): an error path
        self.text = DumpText(count_lines=False) if scan_text else None
        # the scan runs beside the inflating (two cores); at most 2 chunks of 8 MiB wait
        self._scan = Background(self.text.feed, "verify-scan", 2) if self.text else None

    def _keep(self, text: bytes) -> None:
        self.text_bytes += len(text)
        if self._scan is not None:
            self._scan.update(text)
        if len(self.head) < len(DUMP_HEAD):
            self.head += text[: len(DUMP_HEAD) - len(self.head)]
        # slice before joining: an 8 MiB output must not be copied to keep 1 KiB of it
        if len(text) >= _DUMP_TAIL_KEEP:
            self.tail = text[-_DUMP_TAIL_KEEP:]
        else:
            self.tail = (self.tail + text)[-_DUMP_TAIL_KEEP:]

    @property
    def _member_start(self) -> int:
        return self._offset - self._member_bytes

    def feed(self, data: bytes) -> None:
        while data and self.error is None:
            if self._inflater.eof:
                self._inflater = deflate.decompressor()
                self._members += 1
                self._member_head = b""
                self._member_bytes = 0
            if len(self._member_head) < len(_GZIP_MAGIC):
                self._member_head = (self._member_head + data)[: len(_GZIP_MAGIC)]
                if not _GZIP_MAGIC.startswith(self._member_head):
                    self.error = (
                        f"trailing garbage after the gzip data (at byte {self._member_start})"
                        if self._members > 1
                        else "not gzip data (no gzip header)"
                    )
                    return
            try:
                self._keep(self._inflater.decompress(data, _MAX_INFLATE))
            except deflate.error as exc:
                self.error = f"corrupt gzip data after byte {self._offset}: {exc}"
                return
            inflater = self._inflater
            rest = inflater.unused_data if inflater.eof else inflater.unconsumed_tail
            consumed = len(data) - len(rest)
            self._member_bytes += consumed
            self._offset += consumed
            data = rest

    def close(self) -> None:
        """Wait for the text scan to catch up (`text` is complete after it)."""
        if self._scan is not None:
            self._scan.close()

    def finish(self) -> str | None:
        """The error, or None when the stream ended exactly at the end of a member."""
        self.close()
        if self.error is not None:
            return self.error
        if self._inflater.eof:
            return None
        if self._offset == 0:
            return "empty file: not gzip data"
        if self._members > 1 and self._member_bytes < _GZIP_HEADER_MIN:
            return f"trailing garbage after the gzip data (at byte {self._member_start})"
        return (
            f"truncated: the gzip stream ends after {self._offset} bytes without its end marker "
            "(an interrupted copy or a full disk?)"
        )

    def dump_error(
        self, path: Path, gzip_error: str | None, identities: Sequence[Any] | None = None
    ) -> str | None:
        """Once the whole stream is fed (and `finish`ed into `gzip_error`): why the text is
        not whole pg_dump output, or None (also when it was not scanned, or the gzip is too
        damaged to tell). A finding's line is counted by reading `path` again (an error path)."""
        if self.text is None:
            return None
        self.close()  # the scan thread has seen every byte
        self.text.finish()
        found = self.text.found
        if gzip_error is not None:
            return None
        if found is not None and found.line == 0:
            found = replace(found, line=text_line_at(path, found.offset, identities))
        # the shape first: text that is not pg_dump output at all is named as such, even
        # when its bytes happen to hold a line that starts with a backslash
        return dump_shape_error(self.head, self.tail) or (
            meta_command_error(found) if found is not None else None
        )


def text_line_at(path: Path, offset: int, identities: Sequence[Any] | None = None) -> int:
    """The line number at `offset` of the decompressed text of `path`: the scan does not
    count lines (a third of its cost), so a finding's line is counted here, reading the
    file again up to it (an error path; decrypted again in the stream when `identities`)."""
    newlines = 0
    with path.open("rb") as raw:
        source: Any = age.Decryptor(raw, identities, path.name) if identities else raw
        try:
            with gzip.GzipFile(fileobj=source, mode="rb") as text:
                while offset > 0 and (piece := text.read(min(CHUNK, offset))):
                    newlines += piece.count(b"\n")
                    offset -= len(piece)
        finally:
            if identities:
                source.close()
    return newlines + 1


def verify_file(
    path: Path,
    expected_md5: str | None,
    *,
    on_event: EventSink = ignore_events,
    step_id: str = "verify",
    cancel: threading.Event | None = None,
    check_gzip: bool = True,
    check_dump: bool = False,
    sidecar_error: str | None = None,
    encrypted: bool = False,
    identities: Sequence[Any] | None = None,
) -> VerifyResult:
    """Read `path` once: MD5 of the bytes and a full gzip decompression, with Progress events
    (phase "verify", at most ~10 a second). Raises Cancelled when `cancel` is set.
    `check_dump` (a logical backup: gzip of pg_dump plain output) also checks that the text
    starts and ends like pg_dump's, from the same decompression.

    `encrypted` (age): the MD5 is over the bytes as they are; with `identities` they are
    also decrypted in the same read and the clear text gets the gzip and content checks,
    without them those checks are left out (and said so). DecryptionError (exit 1) when
    the identities match none of the file's recipients."""
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        raise NotFoundError(f"{path}: no such backup file; run `preskool-dr list`") from None
    except OSError as exc:
        raise DrError(f"cannot read {path}: {exc.strerror or exc}") from None
    digest = BackgroundDigest()
    if encrypted and not identities:
        check_gzip = check_dump = False
    checker = GzipChecker(scan_text=check_dump) if check_gzip else None
    decrypt_error = None
    try:
        with handle:
            opened = os.fstat(handle.fileno())
            before = FileIdentity.of(opened)
            meter = ProgressMeter(on_event, step_id, "verify", before.size)
            tee = _Tee(handle, digest, meter, cancel, path.name)
            if encrypted and identities and checker is not None:
                decrypt_error = _decrypt_into(tee, identities, checker, path.name)
            while chunk := tee.read(CHUNK):  # all of it (the rest of it) for the MD5
                if checker is not None and not encrypted:
                    checker.feed(chunk)
            meter.finish()
            after = FileIdentity.of(os.fstat(handle.fileno()))
        gzip_error = decrypt_error or (checker.finish() if checker is not None else None)
        actual_md5 = digest.hexdigest()
    finally:
        digest.close()
        if checker is not None:
            checker.close()
    dump_checked = check_dump and checker is not None
    dump_error = checker.dump_error(path, gzip_error, identities) if checker is not None else None
    return VerifyResult(
        path=path,
        size=meter.done,
        expected_md5=expected_md5.lower() if expected_md5 else None,
        actual_md5=actual_md5,
        gzip_ok=gzip_error is None,
        gzip_error=gzip_error,
        sidecar_error=sidecar_error,
        gzip_checked=check_gzip,
        dump_checked=dump_checked,
        dump_error=dump_error,
        identity=after if after == before and stat.S_ISREG(opened.st_mode) else None,
        encrypted=encrypted,
    )


class _Tee:
    """The file as a reader (for pyrage or the plain loop): whole chunks read, hashed and
    counted once, handed out in the sizes asked for."""

    def __init__(
        self,
        handle: Any,
        digest: BackgroundDigest,
        meter: ProgressMeter,
        cancel: threading.Event | None,
        name: str,
    ) -> None:
        self._handle = handle
        self._digest = digest
        self._meter = meter
        self._cancel = cancel
        self._name = name
        self._buffer = memoryview(b"")
        self.raised: BaseException | None = None

    def read(self, size: int = -1) -> bytes:
        if not self._buffer:
            if self._cancel is not None and self._cancel.is_set():
                self.raised = Cancelled(
                    f"verification of {self._name} cancelled; run it again to verify"
                )
                raise self.raised
            chunk = self._handle.read(CHUNK)
            if not chunk:
                return b""
            self._digest.update(chunk)
            self._meter.add(len(chunk))
            if size < 0 or size >= len(chunk):
                return chunk  # the plain loop: no copy
            self._buffer = memoryview(chunk)
        if size < 0:
            size = len(self._buffer)
        out, self._buffer = self._buffer[:size], self._buffer[size:]
        return bytes(out)


def _decrypt_into(
    tee: _Tee, identities: Sequence[Any], checker: GzipChecker, name: str
) -> str | None:
    """Decrypt what `tee` reads into `checker`; why it does not decrypt, or None.
    A wrong key is no fault of the file: that DecryptionError is raised."""
    try:
        age.decrypt_to(tee, identities, checker.feed, name)
    except age.DecryptionError as exc:
        if tee.raised is not None:
            raise tee.raised from None
        if exc.wrong_key:
            raise
        return str(exc)
    except BaseException:
        if tee.raised is not None:
            raise tee.raised from None
        raise
    return None


def verify_with_sidecar(
    path: Path,
    *,
    on_event: EventSink = ignore_events,
    step_id: str = "verify",
    cancel: threading.Event | None = None,
    check_gzip: bool = True,
    check_dump: bool = False,
    identities: Sequence[Any] | None = None,
) -> VerifyResult:
    """Verify `path` against `path.md5`. A missing, malformed or foreign sidecar does not stop
    the gzip check: the operator learns both facts from one read. A `.age` file is
    decrypted in the same read when `identities` are given (verify_file)."""
    expected, problem = expected_md5(path)
    return verify_file(
        path,
        expected,
        on_event=on_event,
        step_id=step_id,
        cancel=cancel,
        check_gzip=check_gzip,
        check_dump=check_dump,
        sidecar_error=problem,
        encrypted=age.is_encrypted_name(path.name),
        identities=identities,
    )


def backup_members(path: Path) -> list[Path]:
    """The files a backup consists of: itself, or for a directory backup (e.g. a base backup)
    every file inside except sidecars and metadata."""
    if not path.is_dir():
        return [path]
    return sorted(
        p
        for p in path.rglob("*")
        if p.is_file() and not p.name.endswith((SIDECAR_SUFFIX, ".meta.json", ".part"))
    )


def verify_backup(
    path: Path,
    *,
    on_event: EventSink = ignore_events,
    step_id: str = "verify",
    cancel: threading.Event | None = None,
    identities: Sequence[Any] | None = None,
) -> list[VerifyResult]:
    """`verify_with_sidecar` for a logical backup file (gzip of pg_dump output, content checked
    too; decrypted on the way with `identities` when it is a `.age` file) or every member of
    a directory backup (gzip checked for `.gz` members)."""
    if not path.is_dir():
        return [
            verify_with_sidecar(
                path,
                on_event=on_event,
                step_id=step_id,
                cancel=cancel,
                check_dump=True,
                identities=identities,
            )
        ]
    members = backup_members(path)
    if not members:
        raise VerificationError(f"backup directory {path} holds no files: the backup is empty")
    return [
        verify_with_sidecar(
            member,
            on_event=on_event,
            step_id=step_id,
            cancel=cancel,
            check_gzip=member.name.endswith(".gz"),
        )
        for member in members
    ]
