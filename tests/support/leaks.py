"""The marker secrets the suite plants (the database password, the AWS secret key) and the
checks that none of them is ever printed or written."""

from __future__ import annotations

import contextlib
import gzip
import zlib
from pathlib import Path

PASSWORD = "pw-MARKER-7f3a9c"  # a marker: tests grep written files for it
AWS_SECRET = "aws-secret-MARKER-42"  # a marker: tests grep outputs for it


def assert_no_secrets(*texts: str, folder: Path | None = None) -> None:
    for text in texts:
        assert PASSWORD not in text
        assert AWS_SECRET not in text
    for path in folder.rglob("*") if folder else ():
        if path.is_file():
            data = path.read_bytes()
            if path.name.endswith(".gz"):
                data = gzip.decompress(data)
            assert PASSWORD.encode() not in data, path
            assert AWS_SECRET.encode() not in data, path


def assert_no_secret_files(folder: Path) -> None:
    """Like `assert_no_secrets(folder=...)`, but damaged .gz files (made by a case) are read
    raw."""
    for path in folder.rglob("*") if folder.is_dir() else ():
        if not path.is_file():
            continue
        data = path.read_bytes()
        if path.name.endswith(".gz"):
            with contextlib.suppress(OSError, EOFError, zlib.error):
                data = gzip.decompress(data)
        assert PASSWORD.encode() not in data, path
        assert AWS_SECRET.encode() not in data, path
