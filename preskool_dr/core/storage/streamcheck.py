"""verify_file's checks fed by a writer instead of a reader: a download (s3download.py)
hands every byte it appends to the `.part`, in file order, to a StreamCheck, so the backup
it leaves behind has been hashed and decompression-tested without being read again.

The MD5 is over exactly the bytes the file holds: the prefix a resumed `.part` already had
(read once, before anything is appended) and then each chunk as it is written. Whoever
uses the result still compares it with the sidecar (restore step 4 reads the sidecar
again), and the verify gate re-hashes the file before step 5, or a load started early
hashes it through its open file before it starts (core/restore/pinned.py).
"""

from __future__ import annotations

from pathlib import Path

from preskool_dr.core.storage.checksum import (
    BackgroundDigest,
    FileIdentity,
    GzipChecker,
    VerifyResult,
)


class StreamCheck:
    """MD5 plus, for a gzip backup, the GzipChecker (`check_dump`: also pg_dump's shape and
    the meta-command scan) of one stream, fed in order. `reset()` starts again from byte 0
    (a download that has to rewrite its file); `close()` ends the digest's thread."""

    def __init__(self, *, check_gzip: bool = True, check_dump: bool = False) -> None:
        self._check_gzip = check_gzip
        self._check_dump = check_dump and check_gzip
        self.identity: FileIdentity | None = None  # the file the bytes ended up in
        self._start()

    def _start(self) -> None:
        self._digest = BackgroundDigest()
        self._checker = GzipChecker(scan_text=self._check_dump) if self._check_gzip else None
        self.size = 0

    def reset(self) -> None:
        self._digest.close()
        self._start()

    def feed(self, data: bytes) -> None:
        self._digest.update(data)
        self.size += len(data)
        if self._checker is not None:
            self._checker.feed(data)

    def close(self) -> None:
        self._digest.close()

    def finish(self, identity: FileIdentity) -> None:
        """The stream is complete and is the file with `identity` (taken after its rename)."""
        self.identity = identity

    def result(self, path: Path) -> VerifyResult:
        """The findings for `path` as verify_file would give them, without a sidecar
        (expected_md5 None: the caller compares against the sidecar it trusts)."""
        actual = self._digest.hexdigest()
        checker = self._checker
        gzip_error = checker.finish() if checker is not None else None
        return VerifyResult(
            path=path,
            size=self.size,
            expected_md5=None,
            actual_md5=actual,
            gzip_ok=gzip_error is None,
            gzip_error=gzip_error,
            gzip_checked=self._check_gzip,
            dump_checked=self._check_dump,
            dump_error=checker.dump_error(path, gzip_error) if checker is not None else None,
            identity=self.identity,
        )
