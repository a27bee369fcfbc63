"""MD5 sidecars and the one-pass integrity check (MD5 + full gzip decompression).

A sidecar is exactly what `md5sum F > F.md5` writes (`<32 hex>  <basename>\\n`), so an
operator without this tool can still run `md5sum --check F.md5` inside the folder.
The verify pass reads the backup once: every chunk feeds both the MD5 and a gzip
decompressor, because a 20 GB dump read twice doubles the slowest part of an outage.
For a logical backup the same pass also checks that the decompressed text starts and ends
like pg_dump's plain output: a valid gzip of something else (or of a dump cut short at a
line boundary) restored with `--mode drop` would lose the database it replaces.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path

from preskool_dr.core.errors import Cancelled, DrError, NotFoundError, VerificationError
from preskool_dr.core.events import EventSink, ProgressMeter, ignore_events

CHUNK = 1024 * 1024
SIDECAR_SUFFIX = ".md5"
# Decompressed output is thrown away; capping it keeps memory flat on highly compressible dumps.
_MAX_INFLATE = 8 * CHUNK
GZIP_WBITS = 16 + zlib.MAX_WBITS  # gzip header and trailer, no zlib/raw guessing
_GZIP_MAGIC = b"\x1f\x8b"
_GZIP_HEADER_MIN = 10  # a member shorter than its fixed header is not a gzip member at all
_MD5_RE = re.compile(r"^[0-9a-fA-F]{32}$")
# GNU text/binary form `<hex>  <name>` / `<hex> *<name>`, and the BSD `--tag` form.
_GNU_LINE = re.compile(r"^(?P<md5>[0-9a-fA-F]{32}) [ *](?P<name>.+)$")
_BSD_LINE = re.compile(r"^MD5 \((?P<name>.+)\) = (?P<md5>[0-9a-fA-F]{32})$")
# pg_dump's plain format opens with this banner and closes with the "complete" one, which it
# writes only after the last object; since PostgreSQL 17.6/16.10/15.14 a `\unrestrict KEY`
# line may follow it. Only the head and a small tail of the text are kept while streaming.
DUMP_HEAD = b"--\n-- PostgreSQL database dump\n--\n"
DUMP_COMPLETE = b"\n-- PostgreSQL database dump complete\n"
_DUMP_TAIL_KEEP = 1024


@dataclass(frozen=True)
class Sidecar:
    md5: str  # 32 lowercase hex
    filename: str  # the basename the sidecar names


def sidecar_path(backup: Path) -> Path:
    """`F.md5` beside `F`."""
    return backup.with_name(backup.name + SIDECAR_SUFFIX)


def md5_hasher() -> hashlib._Hash:
    # MD5 here is an integrity check the runbook and md5sum share, not a security control.
    return hashlib.md5(usedforsecurity=False)


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write `data` to `path` via temp file + fsync + rename, so readers never see half a file.

    mkstemp creates the temp file with O_CREAT|O_EXCL|O_NOFOLLOW, and its mode is set
    through the descriptor: a symlink swapped in under the temp name is never followed."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    """Make a rename durable: the directory entry must reach the disk too."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_sidecar(backup: Path, md5: str) -> Path:
    """Write `<md5>  <basename>\\n` atomically (temp + fsync + rename); returns its path."""
    if not _MD5_RE.match(md5):
        raise ValueError(f"not an MD5 digest: {md5!r}")
    path = sidecar_path(backup)
    try:
        atomic_write(path, f"{md5.lower()}  {backup.name}\n".encode())
    except OSError as exc:
        raise DrError(f"cannot write checksum file {path}: {exc.strerror or exc}") from None
    return path


def read_sidecar(path: Path, expected_name: str | None = None) -> Sidecar:
    """Parse a sidecar; VerificationError when malformed or naming another file."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise VerificationError(
            f"checksum file {path} is missing: the backup cannot be verified; "
            "fetch the .md5 beside it (it is uploaded with every backup)"
        ) from None
    except OSError as exc:
        raise VerificationError(
            f"cannot read checksum file {path}: {exc.strerror or exc}"
        ) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise VerificationError(f"checksum file {path} is not text: it is damaged") from None
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) != 1:
        raise VerificationError(
            f"checksum file {path} must hold exactly one `<md5>  <file name>` line, "
            f"found {len(lines)}"
        )
    match = _GNU_LINE.match(lines[0].rstrip("\r")) or _BSD_LINE.match(lines[0].rstrip("\r"))
    if match is None:
        raise VerificationError(
            f"checksum file {path} is malformed: expected `<32 hex digits>  <file name>`"
        )
    sidecar = Sidecar(md5=match["md5"].lower(), filename=match["name"])
    if expected_name is not None and sidecar.filename != expected_name:
        raise VerificationError(
            f"checksum file {path} is for {sidecar.filename!r}, not {expected_name!r}: "
            "it belongs to another backup"
        )
    return sidecar


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
        if not self.gzip_checked:
            return "Gzip not checked (not a gzip file)"
        if self.gzip_ok:
            return "Gzip integrity check passed"
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
    several concatenated members accepted, anything after the last member rejected."""

    def __init__(self) -> None:
        self._inflater = zlib.decompressobj(GZIP_WBITS)
        self._members = 1
        self._member_head = b""  # the first bytes of the current member, for the magic check
        self._member_bytes = 0  # compressed bytes fed to the current member
        self._offset = 0  # compressed bytes consumed so far
        self.error: str | None = None
        self.head = b""  # the first bytes of the decompressed text
        self.tail = b""  # its last bytes
        self.text_bytes = 0  # decompressed bytes so far

    def _keep(self, text: bytes) -> None:
        self.text_bytes += len(text)
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
                self._inflater = zlib.decompressobj(GZIP_WBITS)
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
            except zlib.error as exc:
                self.error = f"corrupt gzip data after byte {self._offset}: {exc}"
                return
            inflater = self._inflater
            rest = inflater.unused_data if inflater.eof else inflater.unconsumed_tail
            consumed = len(data) - len(rest)
            self._member_bytes += consumed
            self._offset += consumed
            data = rest

    def finish(self) -> str | None:
        """The error, or None when the stream ended exactly at the end of a member."""
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


def dump_shape_error(head: bytes, tail: bytes) -> str | None:
    """Why a text whose first and last bytes are `head` and `tail` is not whole pg_dump plain
    output, or None when it is."""
    if not head.startswith(DUMP_HEAD):
        return (
            "the text does not start with pg_dump's `-- PostgreSQL database dump` banner: "
            "this is not a pg_dump backup"
        )
    at = tail.rfind(DUMP_COMPLETE)
    after = tail[at + len(DUMP_COMPLETE) :].splitlines() if at >= 0 else None
    if after is None or not all(
        line.strip() in (b"", b"--") or line.startswith(b"\\unrestrict ") for line in after
    ):
        return (
            "the text does not end with pg_dump's `-- PostgreSQL database dump complete` "
            "line: the dump was cut short (pg_dump stopped early, or the text was cut and "
            "compressed again)"
        )
    return None


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
) -> VerifyResult:
    """Read `path` once: MD5 of the bytes and a full gzip decompression, with Progress events
    (phase "verify", at most ~10 a second). Raises Cancelled when `cancel` is set.
    `check_dump` (a logical backup: gzip of pg_dump plain output) also checks that the text
    starts and ends like pg_dump's, from the same decompression."""
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        raise NotFoundError(f"{path}: no such backup file; run `preskool-dr list`") from None
    except OSError as exc:
        raise DrError(f"cannot read {path}: {exc.strerror or exc}") from None
    digest = md5_hasher()
    checker = GzipChecker() if check_gzip else None
    with handle:
        meter = ProgressMeter(on_event, step_id, "verify", os.fstat(handle.fileno()).st_size)
        while chunk := handle.read(CHUNK):
            if cancel is not None and cancel.is_set():
                raise Cancelled(f"verification of {path.name} cancelled; run it again to verify")
            digest.update(chunk)
            if checker is not None:
                checker.feed(chunk)
            meter.add(len(chunk))
        meter.finish()
    gzip_error = checker.finish() if checker is not None else None
    dump_checked = check_dump and checker is not None
    dump_error = None
    if dump_checked and checker is not None and gzip_error is None:
        dump_error = dump_shape_error(checker.head, checker.tail)
    return VerifyResult(
        path=path,
        size=meter.done,
        expected_md5=expected_md5.lower() if expected_md5 else None,
        actual_md5=digest.hexdigest(),
        gzip_ok=gzip_error is None,
        gzip_error=gzip_error,
        sidecar_error=sidecar_error,
        gzip_checked=check_gzip,
        dump_checked=dump_checked,
        dump_error=dump_error,
    )


def verify_with_sidecar(
    path: Path,
    *,
    on_event: EventSink = ignore_events,
    step_id: str = "verify",
    cancel: threading.Event | None = None,
    check_gzip: bool = True,
    check_dump: bool = False,
) -> VerifyResult:
    """Verify `path` against `path.md5`. A missing, malformed or foreign sidecar does not stop
    the gzip check: the operator learns both facts from one read."""
    try:
        expected: str | None = read_sidecar(sidecar_path(path), expected_name=path.name).md5
        problem = None
    except VerificationError as exc:
        expected, problem = None, str(exc)
    return verify_file(
        path,
        expected,
        on_event=on_event,
        step_id=step_id,
        cancel=cancel,
        check_gzip=check_gzip,
        check_dump=check_dump,
        sidecar_error=problem,
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
) -> list[VerifyResult]:
    """`verify_with_sidecar` for a logical backup file (gzip of pg_dump output, content checked
    too) or every member of a directory backup (gzip checked for `.gz` members)."""
    if not path.is_dir():
        return [
            verify_with_sidecar(
                path, on_event=on_event, step_id=step_id, cancel=cancel, check_dump=True
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
