"""Reading archived files in chunks, and writing a verified temp copy beside its final name:
what wal-push and wal-fetch both do before installing a file."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from preskool_dr.core.storage import checksum


def file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(checksum.CHUNK):
            yield chunk


def file_md5(path: Path) -> str:
    digest = checksum.md5_hasher()
    for chunk in file_chunks(path):
        digest.update(chunk)
    return digest.hexdigest()


def write_temp(chunks: Iterable[bytes], directory: Path, name: str) -> tuple[Path, str, int]:
    """Write `chunks` to a hidden temp file in `directory` (fsync'd); (path, md5, size)."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    tmp = Path(tmp_name)
    digest = checksum.md5_hasher()
    size = 0
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                out.write(chunk)
                digest.update(chunk)
                size += len(chunk)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp, digest.hexdigest(), size
