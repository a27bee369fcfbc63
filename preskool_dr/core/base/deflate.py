"""The deflate library every gzip read and write here goes through: zlib-ng, a faster
implementation of zlib with zlib's own API and format (what it writes any gunzip reads,
and it reads any gzip). On the bench's backup (docs/PERFORMANCE.md's data) it inflates
~1.4x and deflates at level 6 ~2.7x as fast as the system zlib, and writes ~8 % less.
Python's gzip module (for pg_basebackup's tar.gz, read once) keeps the standard zlib."""

from __future__ import annotations

from typing import cast

from zlib_ng import zlib_ng as zlib

Decompress = zlib._Decompress
GZIP_WBITS = 16 + zlib.MAX_WBITS  # gzip header and trailer, no zlib/raw guessing
error = cast(type[Exception], zlib.error)  # the stubs call it an instance


def decompressor() -> Decompress:
    """An inflater for gzip (one member at a time, as zlib reads them)."""
    return zlib.decompressobj(GZIP_WBITS)


def copy_state(inflater: Decompress) -> Decompress:
    """A private copy of an inflater's state (the stubs of zlib-ng leave `copy` out)."""
    copied: Decompress = inflater.copy()  # type: ignore[attr-defined]
    return copied


def compress(data: bytes, level: int) -> bytes:
    """`data` as one whole gzip member."""
    return zlib.compress(data, level, GZIP_WBITS)
