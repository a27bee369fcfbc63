"""Encrypted WAL. With age recipients configured, wal-push archives `<name>.age` instead of
`<name>`: the segment is encrypted while it is copied out of pg_wal, so its clear bytes are
never written anywhere else. Beside it:

- `<name>.age.md5`: md5sum line over the *encrypted* bytes (integrity, checkable without
  a key, as for the logical backups);
- `<name>.age.sha256`: sha256sum line of the clear segment `<name>`. age encrypts with a
  fresh key each time, so a second push of the same segment (after a crash between
  archiving and PostgreSQL noting it) gives other ciphertext: this digest lets wal-push
  tell "the same segment again" (success) from "another cluster's segment under this name"
  (refused) without a key. It also checks a by-hand decryption (`sha256sum --check`).

In S3: `wal/<name>.age`, its MD5 and clear SHA-256 in the object metadata (`md5`,
`clear-sha256`). wal-fetch decrypts with the identity (PRESKOOL_DR_AGE_IDENTITY) straight
into the temp file beside PostgreSQL's %p, after checking the encrypted bytes' MD5.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from preskool_dr.core.base import files
from preskool_dr.core.base.age import AGE_SUFFIX, DecryptionError, Encryptor, decrypt_to
from preskool_dr.core.base.errors import DrError, VerificationError
from preskool_dr.core.storage import checksum

DIGEST_SUFFIX = ".sha256"
CLEAR_DIGEST_METADATA = "clear-sha256"
_SHA256_RE = re.compile(r"[0-9a-f]{64}")


def stored_name(name: str) -> str:
    """The archive's file name for WAL file `name` when encrypted."""
    return name + AGE_SUFFIX


def digest_path(final: Path) -> Path:
    return final.with_name(final.name + DIGEST_SUFFIX)


def clear_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(checksum.CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def encrypt_to_temp(
    source: Path, directory: Path, final_name: str, recipients: Sequence[Any]
) -> tuple[Path, str, str]:
    """Encrypt `source` into a hidden temp file in `directory` (fsync'd): (path, md5 of the
    encrypted bytes, sha256 of the clear ones). Nothing clear is written."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final_name}.", suffix=".tmp", dir=directory)
    tmp = Path(tmp_name)
    md5 = checksum.md5_hasher()
    sha = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out:

            def sink(data: bytes) -> None:
                out.write(data)
                md5.update(data)

            encryptor = Encryptor(recipients, sink)
            try:
                with source.open("rb") as handle:
                    while chunk := handle.read(checksum.CHUNK):
                        sha.update(chunk)
                        encryptor.write(chunk)
                encryptor.close()
            except BaseException:
                encryptor.abort()
                raise
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp, md5.hexdigest(), sha.hexdigest()


def read_digest(final: Path) -> str | None:
    """The clear SHA-256 recorded beside `final`, or None when missing or damaged."""
    try:
        text = digest_path(final).read_text("ascii", "replace")
    except OSError:
        return None
    digest, _, _ = text.partition(" ")
    return digest if _SHA256_RE.fullmatch(digest) else None


def claim_digest(final: Path, name: str, sha256: str, mode: int) -> None:
    """Record the clear digest of the segment about to be installed as `final`, unless one is
    there. One naming other bytes while `final` is not archived yet belongs to another push of
    a different segment under this name, half way: refused, never replaced."""
    line = f"{sha256}  {name}\n".encode()
    try:
        if files.atomic_write(digest_path(final), line, mode, overwrite=False):
            return
    except OSError as exc:
        raise DrError(f"cannot write {digest_path(final)}: {exc.strerror or exc}") from None
    recorded = read_digest(final)
    if recorded == sha256 or final.exists():
        return  # ours from a killed attempt, or the archived file decides
    if recorded is None:  # damaged, and nothing archived depends on it
        files.atomic_write(digest_path(final), line, mode)
        return
    raise DrError(
        f"{digest_path(final)} records another segment (sha256 {recorded}) than the server's "
        f"{name}, whose copy is not archived yet: another server is archiving a different "
        f"{name} into {final.parent} right now, or stopped half way; refusing to overwrite "
        "it. Each cluster needs its own BACKUP_DIR"
    )


def already_encrypted(sha256: str, final: Path, mode: int) -> str:
    """The MD5 of the archived `final` when it holds the same clear segment (its md5 sidecar
    repaired when missing or wrong); DrError when it holds another one, or cannot tell."""
    recorded = read_digest(final)
    if recorded is None:
        raise DrError(
            f"{final} is archived but {digest_path(final).name} is missing or damaged, so "
            "the segment cannot be compared without a key: refusing to overwrite it; decrypt "
            f"it by hand (age -d -i KEY) and compare with the server's file"
        )
    if recorded != sha256:
        raise DrError(
            f"{final} is already archived with a different segment (sha256 {recorded}, the "
            f"server's file has {sha256}): refusing to overwrite it; is another cluster "
            f"archiving into {final.parent}? Each cluster needs its own BACKUP_DIR"
        )
    md5 = checksum.md5_hasher()
    with final.open("rb") as handle:
        while chunk := handle.read(checksum.CHUNK):
            md5.update(chunk)
    archived = md5.hexdigest()
    try:
        if checksum.read_sidecar(checksum.sidecar_path(final), final.name).md5 == archived:
            return archived
    except VerificationError:
        pass
    checksum.write_sidecar(final, archived, mode=mode)
    return archived


class _ChunkReader:
    """A `read(size)` over an iterator of chunks, hashing what it hands out."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks: Iterator[bytes] = iter(chunks)
        self._buffer = b""
        self.md5 = checksum.md5_hasher()

    def read(self, size: int = -1) -> bytes:
        while not self._buffer:
            chunk = next(self._chunks, None)
            if chunk is None:
                return b""
            self._buffer = chunk
        if size < 0 or size >= len(self._buffer):
            out, self._buffer = self._buffer, b""
        else:
            out, self._buffer = self._buffer[:size], self._buffer[size:]
        self.md5.update(out)
        return out

    def drain(self) -> None:
        while self.read(checksum.CHUNK):
            pass


def decrypt_to_temp(
    chunks: Iterable[bytes], dest: Path, expected_md5: str, source: str, identities: Sequence[Any]
) -> Path:
    """Decrypt the encrypted `chunks` into a temp file beside `dest`, checking their MD5
    first-hand: the temp path (the caller installs it). VerificationError when the encrypted
    bytes fail their MD5; DecryptionError when the key is wrong."""
    reader = _ChunkReader(chunks)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    except OSError as exc:
        raise DrError(f"cannot write {dest}: {exc.strerror or exc}") from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                decrypt_to(reader, identities, out.write, source)
            except DecryptionError as exc:
                if exc.wrong_key:
                    raise
                reader.drain()
                if reader.md5.hexdigest() == expected_md5:
                    raise
            reader.drain()
            out.flush()
            os.fsync(out.fileno())
        md5 = reader.md5.hexdigest()
        if md5 != expected_md5:
            raise VerificationError(
                f"{source} fails its checksum (md5 {md5}, expected {expected_md5}): the archived "
                "segment is damaged; recovery cannot continue past it"
            )
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise DrError(f"cannot write {dest}: {exc.strerror or exc}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp
